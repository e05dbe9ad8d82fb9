"""Node processes and the network they live on.

Two network modes:

- ``netns`` (root): a private *hub* namespace holds a bridge and the clients (the harness moves
  itself into it with setns); every node gets its own namespace joined to the bridge by a veth
  pair, with address 10.88.0.<i>. Partitions are iptables DROP rules in the INPUT chain of the
  receiving node's namespace, per source address. (One shared namespace with 127.0.0.x addresses
  does not work: an unbound connect to 127.0.0.x picks source 127.0.0.1, so per-pair rules could
  not tell the nodes apart.)
- ``loopback`` (no root): nodes on 127.0.0.1 with ports below 32768. Partitions then go through a
  blackholing TCP proxy in front of every node's peer port (see :mod:`jepsen.net`).

Deleting the namespaces removes every veth, address and rule at once.
"""

from __future__ import annotations

import ctypes
import logging
import os
import random
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from jepsen.client import Client, ClientError
from jepsen.proxy import PeerProxies

log = logging.getLogger(__name__)

__all__ = ["Cluster", "Node", "cleanup_stale_namespaces"]

_NS_PREFIX = "rkvj-"
_SUBNET = "10.88.0"
_CLONE_NEWNET = 0x40000000


def _run(*cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, check=check, capture_output=True, text=True, timeout=20)


def _setns(path: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        if libc.setns(fd, _CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({path}): {os.strerror(err)}")
    finally:
        os.close(fd)


def cleanup_stale_namespaces() -> None:
    """Delete namespaces left by harness processes that no longer exist."""
    out = _run("ip", "netns", "list", check=False).stdout
    for line in out.splitlines():
        name = line.split()[0] if line.split() else ""
        if not name.startswith(_NS_PREFIX):
            continue
        try:
            pid = int(name[len(_NS_PREFIX) :].split("-")[0])
        except ValueError:
            continue
        if pid != os.getpid() and not Path(f"/proc/{pid}").exists():
            _run("ip", "netns", "del", name, check=False)


def _free_port_base(count: int) -> int:
    """A base port below 32768 with ``count`` consecutive free ports."""
    for _ in range(200):
        base = random.randrange(20000, 32000 - count)
        ok = True
        for p in range(base, base + count):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", p))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise RuntimeError("no free port range below 32768")


@dataclass
class Node:
    name: str
    ip: str
    client_port: int
    peer_port: int  # the port the node listens on
    advertised_peer_port: int  # the port others dial (a proxy port in loopback mode)
    data_dir: Path
    log_path: Path
    netns: str | None = None
    proc: subprocess.Popen[bytes] | None = None
    paused: bool = False

    @property
    def endpoint(self) -> str:
        return f"{self.ip}:{self.client_port}"

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@dataclass
class Cluster:
    """N node processes of ``db`` (``raftkv`` or ``etcd``)."""

    db: str
    n: int
    workdir: Path
    use_netns: bool
    heartbeat_ms: int = 50
    election_ms: int = 500
    node_args: tuple[str, ...] = ()
    """Extra command-line arguments for every node process (e.g. an unsafe test mode)."""
    nodes: list[Node] = field(default_factory=list)
    hub: str | None = None
    _orig_ns_fd: int | None = None
    member_names: dict[int, str] = field(default_factory=dict)
    proxies: PeerProxies | None = None

    # --- setup ----------------------------------------------------------------------------------

    def setup(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.use_netns:
            self._setup_netns()
        else:
            base = _free_port_base(3 * self.n)
            for i in range(self.n):
                name = f"n{i + 1}"
                self.nodes.append(
                    Node(
                        name,
                        "127.0.0.1",
                        base + i,
                        base + self.n + i,
                        base + 2 * self.n + i,
                        self.workdir / name,
                        self.workdir / f"{name}.log",
                    )
                )

    def enable_proxies(self) -> None:
        """Loopback mode: put a blackholing proxy in front of every peer port."""
        if self.use_netns or self.proxies is not None:
            return
        self.proxies = PeerProxies(
            lambda: {n.proc.pid: n.name for n in self.nodes if n.proc is not None and n.alive}
        )
        for node in self.nodes:
            self.proxies.add(node.name, node.advertised_peer_port, node.peer_port)

    def _setup_netns(self) -> None:
        cleanup_stale_namespaces()
        pid = os.getpid()
        self.hub = f"{_NS_PREFIX}{pid}-hub"
        _run("ip", "netns", "add", self.hub)
        hx = ("ip", "netns", "exec", self.hub)
        _run(*hx, "ip", "link", "set", "lo", "up")
        _run(*hx, "ip", "link", "add", "br0", "type", "bridge")
        _run(*hx, "ip", "addr", "add", f"{_SUBNET}.254/24", "dev", "br0")
        _run(*hx, "ip", "link", "set", "br0", "up")
        for i in range(self.n):
            name = f"n{i + 1}"
            ns = f"{_NS_PREFIX}{pid}-{name}"
            ip = f"{_SUBNET}.{i + 1}"
            _run("ip", "netns", "add", ns)
            nx = ("ip", "netns", "exec", ns)
            _run(*hx, "ip", "link", "add", f"v{name}", "type", "veth", "peer", "eth0", "netns", ns)
            _run(*hx, "ip", "link", "set", f"v{name}", "master", "br0")
            _run(*hx, "ip", "link", "set", f"v{name}", "up")
            _run(*nx, "ip", "link", "set", "lo", "up")
            _run(*nx, "ip", "addr", "add", f"{ip}/24", "dev", "eth0")
            _run(*nx, "ip", "link", "set", "eth0", "up")
            self.nodes.append(
                Node(
                    name,
                    ip,
                    2379,
                    2380,
                    2380,
                    self.workdir / name,
                    self.workdir / f"{name}.log",
                    netns=ns,
                )
            )
        # Clients live in the hub: move this process there before any client thread exists.
        self._orig_ns_fd = os.open("/proc/self/ns/net", os.O_RDONLY)
        _setns(f"/run/netns/{self.hub}")

    def teardown(self) -> None:
        """Kill every node and remove every namespace. Safe to call twice."""
        if self.proxies is not None:
            self.proxies.close()
        for node in self.nodes:
            if node.proc is not None and node.proc.poll() is None:
                try:
                    node.proc.send_signal(signal.SIGKILL)
                    node.proc.wait(timeout=5)
                except (OSError, subprocess.TimeoutExpired):
                    pass
        if self._orig_ns_fd is not None:
            try:
                libc = ctypes.CDLL(None, use_errno=True)
                libc.setns(self._orig_ns_fd, _CLONE_NEWNET)
                os.close(self._orig_ns_fd)
            except OSError:
                pass
            self._orig_ns_fd = None
        if self.use_netns:
            for node in self.nodes:
                if node.netns:
                    _run("ip", "netns", "del", node.netns, check=False)
            if self.hub:
                _run("ip", "netns", "del", self.hub, check=False)
                self.hub = None

    # --- processes ------------------------------------------------------------------------------

    def _initial_cluster(self) -> str:
        return ",".join(f"{n.name}=http://{n.ip}:{n.advertised_peer_port}" for n in self.nodes)

    def command(self, node: Node) -> list[str]:
        common = [
            "--name",
            node.name,
            "--data-dir",
            str(node.data_dir),
            "--listen-client-urls",
            f"http://{node.ip}:{node.client_port}",
            "--advertise-client-urls",
            f"http://{node.ip}:{node.client_port}",
            "--listen-peer-urls",
            f"http://{node.ip}:{node.peer_port}",
            "--initial-advertise-peer-urls",
            f"http://{node.ip}:{node.advertised_peer_port}",
            "--initial-cluster",
            self._initial_cluster(),
            "--initial-cluster-state",
            "new",
            "--heartbeat-interval",
            str(self.heartbeat_ms),
            "--election-timeout",
            str(self.election_ms),
            *self.node_args,
        ]
        if self.db == "etcd":
            exe = shutil.which("etcd") or "/usr/bin/etcd"
            cmd = [exe, *common]
        else:
            import sys

            cmd = [sys.executable, "-m", "raftkv_cli", "node", *common]
        if node.netns:
            cmd = ["ip", "netns", "exec", node.netns, *cmd]
        return cmd

    def start(self, node: Node) -> None:
        node.data_dir.parent.mkdir(parents=True, exist_ok=True)
        logf = open(node.log_path, "ab")  # noqa: SIM115 - owned by the child
        env = dict(os.environ)
        env.setdefault("ETCD_UNSUPPORTED_ARCH", "")
        if not env["ETCD_UNSUPPORTED_ARCH"]:
            del env["ETCD_UNSUPPORTED_ARCH"]
        node.proc = subprocess.Popen(
            self.command(node),
            stdout=logf,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C reaches the harness only; it cleans up
            env=env,
        )
        logf.close()
        node.paused = False

    def start_all(self) -> None:
        for node in self.nodes:
            self.start(node)

    def kill(self, node: Node) -> None:
        if node.proc is not None and node.proc.poll() is None:
            node.proc.send_signal(signal.SIGKILL)
            node.proc.wait(timeout=10)
        node.paused = False

    def pause(self, node: Node) -> None:
        if node.alive:
            node.proc.send_signal(signal.SIGSTOP)  # type: ignore[union-attr]
            node.paused = True

    def resume(self, node: Node) -> None:
        if node.alive:
            node.proc.send_signal(signal.SIGCONT)  # type: ignore[union-attr]
        node.paused = False

    # --- observation ----------------------------------------------------------------------------

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        """Wait until every node answers and a leader is known."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for node in self.nodes:
                if node.proc is not None and node.proc.poll() is not None:
                    raise RuntimeError(
                        f"{node.name} exited with {node.proc.returncode}; see {node.log_path}"
                    )
            if self.leader(timeout_s=1.0) is not None and all(self._answers(n) for n in self.nodes):
                return
            time.sleep(0.2)
        raise TimeoutError(f"cluster not ready after {timeout_s}s; logs in {self.workdir}")

    def _answers(self, node: Node) -> bool:
        try:
            with Client(node.endpoint, timeout_s=1.0) as c:
                mid, _leader, _term = c.status(timeout_s=1.0)
                self.member_names[mid] = node.name
                return True
        except ClientError:
            return False

    def leader(self, timeout_s: float = 0.5) -> Node | None:
        """The node a majority-reachable member reports as leader (None if unknown)."""
        votes: dict[int, int] = {}
        for node in self.nodes:
            if not node.alive or node.paused:
                continue
            try:
                with Client(node.endpoint) as c:
                    mid, lead, _term = c.status(timeout_s=timeout_s)
            except ClientError:
                continue
            self.member_names[mid] = node.name
            if lead:
                votes[lead] = votes.get(lead, 0) + 1
        if not votes:
            return None
        lead = max(votes, key=lambda k: votes[k])
        name = self.member_names.get(lead)
        return next((n for n in self.nodes if n.name == name), None)
