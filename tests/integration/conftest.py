"""Real ``raftkv node`` processes on loopback, driven with the real ``etcdctl`` and gRPC.

``LocalCluster`` starts one process per member on free 127.0.0.1 ports (below the ephemeral range,
with the launcher ``raftkv cluster up`` uses: ``raftkv_cli.localcluster``) with short timings
(heartbeat 50 ms, election timeout 500 ms), each with its own data directory and log file
(``<root>/<name>.log``, appended across restarts). Helpers kill, stop and restart members, ask
them for ``Maintenance.Status``, wait for a leader, and run ``etcdctl``. Every process is killed
at teardown (and dies with pytest if pytest is killed); the temporary directories (kept by pytest
for the last few runs) hold the logs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from raftkv_cli.localcluster import (
    RAFTKV_NODE,
    MemberSpec,
    agreed_leader,
    local_members,
    member_argv,
    spawn,
    stop,
)

from raftkv.pb.etcdserverpb import rpc_pb2, rpc_pb2_grpc

ETCDCTL = shutil.which("etcdctl") or "/usr/bin/etcdctl"


@dataclass
class Node:
    spec: MemberSpec
    data_dir: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    member_id: int = 0
    channel: grpc.Channel | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def endpoint(self) -> str:
        return self.spec.endpoint

    @property
    def client_url(self) -> str:
        return self.spec.client_url

    @property
    def peer_url(self) -> str:
        return self.spec.peer_url

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
        for spec in local_members([f"infra{i + 1}" for i in range(self.size)]):
            self.nodes[spec.name] = Node(
                spec, self.root / spec.name, self.root / f"{spec.name}.log"
            )

    # -- processes --------------------------------------------------------------------------

    def command(self, node: Node) -> list[str]:
        return member_argv(
            RAFTKV_NODE,
            node.spec,
            [n.spec for n in self.nodes.values()],
            data_root=self.root,
            token="it-cluster",
            extra=[
                "--heartbeat-interval", str(self.heartbeat_ms),
                "--election-timeout", str(self.election_ms),
                *self.extra_args,
            ],
        )  # fmt: skip

    def start(self, *names: str) -> None:
        for name in names or tuple(self.nodes):
            node = self.nodes[name]
            assert not node.running, f"{name} is already running"
            with node.log_path.open("ab") as log:
                log.write(f"---- start {time.strftime('%H:%M:%S')} ----\n".encode())
            node.proc = spawn(self.command(node), log_path=node.log_path)

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
        if stop([node.proc], timeout):
            raise AssertionError(f"{name} did not stop within {timeout} s\n{self.describe()}")
        return node.proc.wait()

    def stop_all(self) -> None:
        running = [n for n in self.nodes.values() if n.running]
        killed = stop([n.proc for n in running if n.proc is not None], 15.0)
        if killed:
            names = [n.name for n in running if n.proc is not None and n.proc.pid in killed]
            raise AssertionError(f"{names} ignored SIGTERM\n{self.describe()}")

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
        leader = agreed_leader([self.status(n, timeout=0.5) for n in names])
        if leader is None:
            return None
        try:
            return self.name_of(leader)
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
