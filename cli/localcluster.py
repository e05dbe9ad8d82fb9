"""Members of a local cluster on loopback, started the same way by everyone who needs one.

``raftkv cluster up``, the integration tests, ``bench/compare.py`` and ``bench/failover.py`` all
start raftkv members (and the benchmarks etcd members) with these pieces:

* ``MemberSpec``: a member's name and its client and peer ports;
* ``free_ports``: ports below the ephemeral range, free a moment ago;
* ``member_argv``: the command line of a member, with etcd's flag names (``raftkv node`` takes the
  same ones, so one function serves both);
* ``spawn`` / ``spawn_async``: the member in a session of its own, with a parent-death signal
  (``with_parent_death_signal``);
* ``member_status``, ``fetch_status``, ``agreed_leader``, ``wait_ready``: readiness through
  ``Maintenance.Status``;
* ``stop``: SIGTERM, then SIGKILL after a timeout.

``jepsen/`` keeps its own launcher on purpose: it drives raftkv as a black box and may not import
``raftkv_cli``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc

from raftkv.pb.etcdserverpb import rpc_pb2, rpc_pb2_grpc

__all__ = [
    "ETCD",
    "HOST",
    "RAFTKV_NODE",
    "LaunchError",
    "MemberSpec",
    "agreed_leader",
    "fetch_status",
    "free_ports",
    "local_members",
    "member_argv",
    "member_status",
    "spawn",
    "spawn_async",
    "stop",
    "wait_ready",
    "with_parent_death_signal",
]

HOST = "127.0.0.1"
RAFTKV_NODE: tuple[str, ...] = (sys.executable, "-m", "raftkv_cli", "node")
ETCD = shutil.which("etcd") or "/usr/bin/etcd"
_LOWEST_PORT = 10_000  # below: well-known services and other people's development servers
_EPHEMERAL_DEFAULT = 32_768  # Linux's default ip_local_port_range starts here


class LaunchError(RuntimeError):
    """A member could not be started or the cluster did not become ready."""


@dataclass(frozen=True, slots=True)
class MemberSpec:
    name: str
    client_port: int
    peer_port: int
    host: str = HOST
    http_port: int = 0
    """HTTP (JSON gateway, /health, /metrics; docs/http.md), 0 for none: raftkv members only."""

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.client_port}"

    @property
    def client_url(self) -> str:
        return f"http://{self.endpoint}"

    @property
    def peer_url(self) -> str:
        return f"http://{self.host}:{self.peer_port}"

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.http_port}" if self.http_port else ""


# -- ports ----------------------------------------------------------------------------------------


def ephemeral_port_start() -> int:
    """The lowest port the kernel gives to outgoing connections (Linux: ip_local_port_range)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return _EPHEMERAL_DEFAULT


def _bindable(port: int, host: str) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_ports(count: int, *, consecutive: bool = False, host: str = HOST) -> list[int]:
    """``count`` distinct ports on ``host`` that were free a moment ago, below the ephemeral range.

    Below it, because between this check and a member binding the port, any outgoing connection
    (a client's, or another member's to its peers) may be given an ephemeral port; a port it
    cannot hand out stays free. The scan starts at a random point so that parallel runs (tests,
    benchmarks, other engineers on the same machine) rarely probe the same ports. With
    ``consecutive``, the ports are ``p, p+1, ...`` (for ``raftkv cluster up --base-port``).
    """
    top = max(ephemeral_port_start(), _LOWEST_PORT + 1_000)
    span = top - _LOWEST_PORT
    start = random.Random(os.getpid() ^ time.time_ns()).randrange(span)
    found: list[int] = []
    for step in range(span):
        port = _LOWEST_PORT + (start + step) % span
        if consecutive and found and port != found[-1] + 1:
            found = []  # wrapped around: a run must not span the wrap
        if _bindable(port, host):
            found.append(port)
            if len(found) == count:
                return found
        elif consecutive:
            found = []
    raise LaunchError(f"no {count} free ports on {host} between {_LOWEST_PORT} and {top}")


def local_members(names: Sequence[str], host: str = HOST) -> list[MemberSpec]:
    """One member per name, each on a client and a peer port from ``free_ports``."""
    ports = free_ports(2 * len(names), host=host)
    return [MemberSpec(name, ports[2 * i], ports[2 * i + 1], host) for i, name in enumerate(names)]


# -- command line and processes -------------------------------------------------------------------


def member_argv(
    program: Sequence[str],
    member: MemberSpec,
    members: Sequence[MemberSpec],
    *,
    data_root: Path,
    token: str,
    extra: Sequence[str] = (),
) -> list[str]:
    """The command line of ``member``: ``program`` (``RAFTKV_NODE`` or ``[ETCD]``) and etcd's
    flags, which ``raftkv node`` shares. Its data lives in ``data_root / member.name``."""
    initial_cluster = ",".join(f"{m.name}={m.peer_url}" for m in members)
    return [
        *program,
        "--name", member.name,
        "--data-dir", str(data_root / member.name),
        "--listen-client-urls", member.client_url,
        "--advertise-client-urls", member.client_url,
        "--listen-peer-urls", member.peer_url,
        "--initial-advertise-peer-urls", member.peer_url,
        "--initial-cluster", initial_cluster,
        "--initial-cluster-token", token,
        # Also right on a restart: the member's log already holds the cluster's history.
        "--initial-cluster-state", "new",
        *(["--listen-client-http-urls", member.http_url] if member.http_port else []),
        *extra,
    ]  # fmt: skip


# Exec'd in the forked child before the member: sets the parent-death signal, gives up if the
# parent is already gone, then execs the member (same pid).
_PARENT_DEATH_SHIM = """\
import ctypes, os, signal, sys
ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
if os.getppid() != int(sys.argv[1]):
    sys.exit("the process that started this member has already exited")
os.execvp(sys.argv[2], sys.argv[2:])
"""


def with_parent_death_signal(argv: Sequence[str]) -> list[str]:
    """Linux: ``argv`` prefixed so that the member gets SIGTERM if whoever started it dies
    without stopping it.

    Not a ``preexec_fn``: that runs Python in the forked child of a process that may have other
    threads (gRPC's, a test's writers), where it can deadlock or crash (it did: SIGSEGV). A
    separate small interpreter (``-I -S``: quick to start, deaf to PYTHON* variables, which the
    member still gets) sets the signal and execs the member instead.

    SIGTERM, not SIGKILL: raftkv and etcd both stop cleanly on it. The kernel sends it when the
    *thread* that started the member exits, so spawn members from a long-lived thread (the main
    thread, or the event loop's).
    """
    if not sys.platform.startswith("linux"):
        return list(argv)
    return [sys.executable, "-I", "-S", "-c", _PARENT_DEATH_SHIM, str(os.getpid()), *argv]


def spawn(
    argv: Sequence[str], *, log_path: Path, env: Mapping[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start a member with its output appended to ``log_path``.

    In a session of its own, so a Ctrl-C in the terminal reaches only the caller, which then
    stops its members in an orderly way (``stop``).
    """
    with log_path.open("ab") as log:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            with_parent_death_signal(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )


async def spawn_async(
    argv: Sequence[str], *, env: Mapping[str, str] | None = None, line_limit: int = 1 << 20
) -> asyncio.subprocess.Process:
    """As ``spawn``, with the output (stdout and stderr) on a pipe for the caller to read."""
    return await asyncio.create_subprocess_exec(
        *with_parent_death_signal(argv),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=env,
        start_new_session=True,
        limit=line_limit,
    )


def stop(procs: Iterable[subprocess.Popen[bytes]], timeout_s: float = 10.0) -> list[int]:
    """SIGTERM every live process, wait up to ``timeout_s`` in all, then SIGKILL the rest.

    Returns the pids that had to be killed (a member that ignores SIGTERM is worth knowing of).
    """
    live = [p for p in procs if p.poll() is None]
    for p in live:
        with contextlib.suppress(ProcessLookupError):
            p.terminate()
    deadline = time.monotonic() + timeout_s
    killed: list[int] = []
    for p in live:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            killed.append(p.pid)
            p.kill()
            p.wait()
    return killed


# -- readiness ------------------------------------------------------------------------------------


def member_status(endpoint: str, timeout_s: float = 1.0) -> rpc_pb2.StatusResponse | None:
    """``Maintenance.Status`` of the member at ``endpoint``, or None if it does not answer."""
    with grpc.insecure_channel(endpoint) as channel:
        try:
            stub = rpc_pb2_grpc.MaintenanceStub(channel)
            return stub.Status(rpc_pb2.StatusRequest(), timeout=timeout_s)
        except grpc.RpcError:
            return None


async def fetch_status(
    channel: grpc.aio.Channel, timeout_s: float
) -> rpc_pb2.StatusResponse | None:
    """``Maintenance.Status`` over an open channel, or None if the member does not answer."""
    try:
        stub = rpc_pb2_grpc.MaintenanceStub(channel)
        return await stub.Status(rpc_pb2.StatusRequest(), timeout=timeout_s)
    except grpc.aio.AioRpcError:
        return None


def agreed_leader(statuses: Iterable[rpc_pb2.StatusResponse | None]) -> int | None:
    """The leader's member id if every member answered and all name the same leader, else None."""
    leaders = {s.leader if s is not None else 0 for s in statuses}
    if len(leaders) != 1 or 0 in leaders:
        return None
    return leaders.pop()


def wait_ready(
    members: Sequence[MemberSpec],
    procs: Sequence[subprocess.Popen[bytes]],
    *,
    timeout_s: float = 60.0,
    describe: Callable[[MemberSpec], str] = lambda m: m.name,
) -> int:
    """Wait until every member answers and they agree on a leader; returns the leader's id.

    Raises ``LaunchError`` as soon as a member exits, or after ``timeout_s``; ``describe`` names
    a member in the message (say, with the path of its log).
    """
    deadline = time.monotonic() + timeout_s
    while True:
        for member, proc in zip(members, procs, strict=True):
            if proc.poll() is not None:
                raise LaunchError(f"{describe(member)} exited ({proc.returncode})")
        leader = agreed_leader(member_status(m.endpoint) for m in members)
        if leader is not None:
            return leader
        if time.monotonic() >= deadline:
            raise LaunchError(f"no leader among {len(members)} members in {timeout_s:.0f} s")
        time.sleep(0.1)
