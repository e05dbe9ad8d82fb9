"""Real ``raftkv node`` processes on loopback, driven with the real ``etcdctl`` and gRPC.

``LocalCluster`` starts one process per member on free 127.0.0.1 ports with short timings
(heartbeat 50 ms, election timeout 500 ms), each with its own data directory and log file
(``<root>/<name>.log``, appended across restarts). Helpers kill, stop and restart members, ask
them for ``Maintenance.Status``, wait for a leader, and run ``etcdctl``. Every process is killed
at teardown; the temporary directories (kept by pytest for the last few runs) hold the logs.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest

from raftkv.pb.etcdserverpb import rpc_pb2, rpc_pb2_grpc

ETCDCTL = shutil.which("etcdctl") or "/usr/bin/etcdctl"


def free_ports(n: int) -> list[int]:
    """``n`` distinct loopback ports that were free a moment ago."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def free_port_range(n: int) -> int:
    """A base port such that ``base .. base+n-1`` are all free (for ``--base-port``)."""
    for base in range(21000 + (os.getpid() % 200) * 40, 40000, 40):
        socks = []
        try:
            for port in range(base, base + n):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                socks.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free port range")


@dataclass
class Node:
    name: str
    client_port: int
    peer_port: int
    data_dir: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    member_id: int = 0
    channel: grpc.Channel | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    @property
    def client_url(self) -> str:
        return f"http://{self.endpoint}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@dataclass
class LocalCluster:
    root: Path
    size: int = 3
    heartbeat_ms: int = 50
    election_ms: int = 500
    extra_args: Sequence[str] = ()
    nodes: dict[str, Node] = field(default_factory=dict)

    def __post_init__(self) -> None:
        ports = free_ports(2 * self.size)
        for i in range(self.size):
            name = f"infra{i + 1}"
            self.nodes[name] = Node(
                name,
                ports[2 * i],
                ports[2 * i + 1],
                self.root / name,
                self.root / f"{name}.log",
            )

    # -- processes --------------------------------------------------------------------------

    def command(self, node: Node) -> list[str]:
        initial = ",".join(f"{n.name}={n.peer_url}" for n in self.nodes.values())
        return [
            sys.executable, "-m", "raftkv_cli", "node",
            "--name", node.name,
            "--data-dir", str(node.data_dir),
            "--listen-client-urls", node.client_url,
            "--advertise-client-urls", node.client_url,
            "--listen-peer-urls", node.peer_url,
            "--initial-advertise-peer-urls", node.peer_url,
            "--initial-cluster", initial,
            "--initial-cluster-token", "it-cluster",
            "--initial-cluster-state", "new",
            "--heartbeat-interval", str(self.heartbeat_ms),
            "--election-timeout", str(self.election_ms),
            *self.extra_args,
        ]  # fmt: skip

    def start(self, *names: str) -> None:
        for name in names or tuple(self.nodes):
            node = self.nodes[name]
            assert not node.running, f"{name} is already running"
            with node.log_path.open("ab") as log:
                log.write(f"---- start {time.strftime('%H:%M:%S')} ----\n".encode())
                log.flush()
                node.proc = subprocess.Popen(
                    self.command(node),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )

    def signal(self, name: str, sig: int) -> None:
        node = self.nodes[name]
        assert node.proc is not None
        node.proc.send_signal(sig)

    def kill(self, name: str) -> None:
        """SIGKILL, and reap."""
        node = self.nodes[name]
        assert node.proc is not None
        node.proc.kill()
        node.proc.wait(10)

    def stop(self, name: str, timeout: float = 15.0) -> int:
        """SIGTERM (a graceful stop); returns the exit code."""
        node = self.nodes[name]
        assert node.proc is not None
        node.proc.send_signal(signal.SIGTERM)
        try:
            return node.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            node.proc.kill()
            node.proc.wait(10)
            raise AssertionError(
                f"{name} did not stop within {timeout} s\n{self.describe()}"
            ) from None

    def stop_all(self) -> None:
        running = [n for n in self.nodes.values() if n.running]
        for node in running:
            assert node.proc is not None
            node.proc.send_signal(signal.SIGTERM)
        for node in running:
            assert node.proc is not None
            try:
                node.proc.wait(15)
            except subprocess.TimeoutExpired:
                node.proc.kill()
                node.proc.wait(10)
                raise AssertionError(f"{node.name} ignored SIGTERM\n{self.describe()}") from None

    def close(self) -> None:
        for node in self.nodes.values():
            if node.proc is not None and node.proc.poll() is None:
                node.proc.kill()
            if node.proc is not None:
                node.proc.wait(10)
            if node.channel is not None:
                node.channel.close()
                node.channel = None

    # -- gRPC -------------------------------------------------------------------------------

    def channel(self, name: str) -> grpc.Channel:
        node = self.nodes[name]
        if node.channel is None:
            node.channel = grpc.insecure_channel(
                node.endpoint, options=[("grpc.max_send_message_length", 8 << 20)]
            )
        return node.channel

    def kv(self, name: str) -> rpc_pb2_grpc.KVStub:
        return rpc_pb2_grpc.KVStub(self.channel(name))

    def maintenance(self, name: str) -> rpc_pb2_grpc.MaintenanceStub:
        return rpc_pb2_grpc.MaintenanceStub(self.channel(name))

    def status(self, name: str, timeout: float = 1.0) -> rpc_pb2.StatusResponse | None:
        if not self.nodes[name].running:
            return None
        try:
            st = self.maintenance(name).Status(rpc_pb2.StatusRequest(), timeout=timeout)
        except grpc.RpcError:
            return None
        self.nodes[name].member_id = st.header.member_id
        return st

    def name_of(self, member_id: int) -> str:
        for node in self.nodes.values():
            if node.member_id == member_id:
                return node.name
        raise KeyError(f"{member_id:x}")

    def leader(self, among: Sequence[str] | None = None) -> str | None:
        """The leader all running members of ``among`` agree on and know the id of, else None."""
        names = [n for n in (among or self.nodes) if self.nodes[n].running]
        statuses = [self.status(n, timeout=0.5) for n in names]
        if not statuses or any(s is None for s in statuses):
            return None
        leaders = {s.leader for s in statuses if s is not None}
        if len(leaders) != 1 or 0 in leaders:
            return None
        try:
            return self.name_of(leaders.pop())
        except KeyError:
            return None

    def wait_leader(
        self, timeout: float = 15.0, among: Sequence[str] | None = None, not_: str | None = None
    ) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            name = self.leader(among)
            if name is not None and name != not_:
                return name
            dead = [n.name for n in self.nodes.values() if n.proc is not None and not n.running]
            dead = [d for d in dead if among is None or d in among]
            assert not dead, f"{dead} exited\n{self.describe()}"
            time.sleep(0.02)
        raise AssertionError(f"no leader within {timeout} s\n{self.describe()}")

    def wait_applied(self, name: str, index: int, timeout: float = 30.0) -> float:
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            st = self.status(name)
            if st is not None and st.raftAppliedIndex >= index:
                return time.monotonic() - start
            time.sleep(0.05)
        raise AssertionError(
            f"{name} did not apply index {index} within {timeout} s (status {self.status(name)})"
            f"\n{self.describe()}"
        )

    # -- etcdctl ------------------------------------------------------------------------------

    @property
    def endpoints(self) -> str:
        return ",".join(n.endpoint for n in self.nodes.values())

    def etcdctl(
        self,
        *args: str,
        endpoints: str | None = None,
        stdin: str | bytes | None = None,
        check: bool = True,
        timeout: float = 30.0,
    ) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ, ETCDCTL_API="3")
        data = stdin.encode() if isinstance(stdin, str) else stdin
        proc = subprocess.run(
            [ETCDCTL, f"--endpoints={endpoints or self.endpoints}", *args],
            input=data,
            capture_output=True,
            env=env,
            timeout=timeout,
            check=False,
        )
        result = subprocess.CompletedProcess(
            proc.args,
            proc.returncode,
            proc.stdout.decode(errors="replace"),
            proc.stderr.decode(errors="replace"),
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"etcdctl {' '.join(args)} failed ({result.returncode}):\n"
                f"stdout: {result.stdout}\nstderr: {result.stderr}\n{self.describe()}"
            )
        return result

    def etcdctl_json(
        self, *args: str, endpoints: str | None = None, stdin: str | bytes | None = None
    ) -> Any:
        return json.loads(
            self.etcdctl("-w", "json", *args, endpoints=endpoints, stdin=stdin).stdout
        )

    # -- diagnostics ----------------------------------------------------------------------------

    def log_tail(self, name: str, lines: int = 30) -> str:
        try:
            text = self.nodes[name].log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def describe(self) -> str:
        parts = []
        for node in self.nodes.values():
            state = "running" if node.running else f"exit {node.proc and node.proc.returncode}"
            parts.append(f"==== {node.name} ({state}) {node.log_path} ====")
            parts.append(self.log_tail(node.name))
        return "\n".join(parts)


def start_cluster(
    root: Path,
    *,
    size: int = 3,
    heartbeat_ms: int = 50,
    election_ms: int = 500,
    extra_args: Sequence[str] = (),
) -> LocalCluster:
    cluster = LocalCluster(root, size, heartbeat_ms, election_ms, extra_args)
    try:
        cluster.start()
        cluster.wait_leader(timeout=30)
    except BaseException:
        cluster.close()
        raise
    return cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A 3-member cluster shared by a module's tests (they must leave it running)."""
    c = start_cluster(tmp_path_factory.mktemp("cluster"))
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
def plan_cluster(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., LocalCluster]]:
    """A factory of clusters laid out (names, ports, data directories) but not started: the
    test prepares their data directories (a restored backup), then calls ``start()`` and
    ``wait_leader()``."""
    made: list[LocalCluster] = []

    def plan(**kw: Any) -> LocalCluster:
        c = LocalCluster(tmp_path_factory.mktemp("cluster"), **kw)
        made.append(c)
        return c

    try:
        yield plan
    finally:
        for c in made:
            c.close()


@pytest.fixture
def make_cluster(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., LocalCluster]]:
    """A factory of fresh clusters a test may kill and restart at will."""
    made: list[LocalCluster] = []

    def make(**kw: Any) -> LocalCluster:
        c = start_cluster(tmp_path_factory.mktemp("cluster"), **kw)
        made.append(c)
        return c

    try:
        yield make
    finally:
        for c in made:
            c.close()
