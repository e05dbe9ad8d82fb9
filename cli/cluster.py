"""``raftkv cluster up`` and ``raftkv cluster status``: a local cluster for development.

``cluster up`` is a small process supervisor, in the spirit of etcd's Procfile under goreman:
it runs one ``raftkv node`` process per member on 127.0.0.1, prefixes each member's log lines
with its name, waits until the members agree on a leader, prints the endpoints and an etcdctl
example, and on Ctrl-C (SIGINT or SIGTERM) stops every member with SIGTERM, escalating to
SIGKILL after a timeout. The layout (names, ports, token) is written to ``<data-dir>/cluster.json``,
so running it again with the same directory restarts the same cluster with its data.

``cluster status`` asks the members over gRPC (Cluster.MemberList and Maintenance.Status) and
prints one row per member.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import json
import os
import signal
import socket
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import click
import grpc
from raftkv_cli.localcluster import (
    RAFTKV_NODE,
    MemberSpec,
    agreed_leader,
    fetch_status,
    member_argv,
    spawn_async,
)

from raftkv.pb.etcdserverpb import rpc_pb2, rpc_pb2_grpc

CLUSTER_TOKEN = "etcd-cluster-1"  # as in etcd's Procfile
LAYOUT_FILE = "cluster.json"
DEFAULT_DATA_DIR = "raftkv-cluster"
# etcd's Procfile: infra1 on 2379/2380, infra2 on 22379/22380, infra3 on 32379/32380. Members
# beyond the third continue the pattern (42379, 52379, 62379).
PROCFILE_OFFSETS = (0, 20_000, 30_000, 40_000, 50_000, 60_000)
PROCFILE_CLIENT_PORT = 2379
DEFAULT_ENDPOINTS = "127.0.0.1:2379,127.0.0.1:22379,127.0.0.1:32379"
_COLOURS = ("36", "33", "35", "32", "34", "31")  # cyan, yellow, magenta, green, blue, red
_LINE_LIMIT = 1 << 20


# -- HTTP beside gRPC (issue 20): each member also serves etcd's JSON gateway, /health and
# /metrics on a port of its own (docs/http.md). Kept apart from the rest of this module.


def http_ports(members: Sequence[MemberSpec], base_port: int | None) -> list[MemberSpec]:
    """``members`` with HTTP ports: client port + 2 in the Procfile layout (2381, 22381, ...;
    2381 is where etcd deployments commonly put metrics), else after every gRPC and peer port
    (member i: base + 2n + i)."""
    n = len(members)
    return [
        dataclasses.replace(
            m, http_port=m.client_port + 2 if base_port is None else base_port + 2 * n + i
        )
        for i, m in enumerate(members)
    ]


class ClusterError(click.ClickException):
    """A clear, expected failure: printed as ``Error: ...`` with exit code 1."""


def plan_members(nodes: int, base_port: int | None) -> list[MemberSpec]:
    """Names and ports of a local cluster.

    Without ``base_port``, etcd's Procfile layout (up to six members). With it, ports are
    contiguous: member i (from 0) serves clients on ``base_port + 2i`` and peers on the next.
    """
    if nodes < 1:
        raise ClusterError("--nodes must be at least 1")
    if base_port is None:
        if nodes > len(PROCFILE_OFFSETS):
            raise ClusterError(
                f"the default port layout (2379, 22379, 32379, ...) has room for "
                f"{len(PROCFILE_OFFSETS)} members; pass --base-port to lay out {nodes}"
            )
        return [
            MemberSpec(f"infra{i + 1}", PROCFILE_CLIENT_PORT + off, PROCFILE_CLIENT_PORT + off + 1)
            for i, off in enumerate(PROCFILE_OFFSETS[:nodes])
        ]
    if base_port < 1 or base_port + 3 * nodes - 1 > 65535:
        raise ClusterError(
            f"--base-port {base_port} with {nodes} members needs ports "
            f"{base_port}..{base_port + 3 * nodes - 1}, outside 1..65535"
        )
    return [
        MemberSpec(f"infra{i + 1}", base_port + 2 * i, base_port + 2 * i + 1) for i in range(nodes)
    ]


def _layout_json(members: Sequence[MemberSpec], token: str) -> str:
    return json.dumps(
        {
            "token": token,
            "members": [
                {
                    "name": m.name,
                    "host": m.host,
                    "client_port": m.client_port,
                    "peer_port": m.peer_port,
                    "http_port": m.http_port,
                }
                for m in members
            ],
        },
        indent=2,
    )


def load_layout(data_dir: Path) -> tuple[list[MemberSpec], str] | None:
    path = data_dir / LAYOUT_FILE
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        members = [
            MemberSpec(
                str(m["name"]),
                int(m["client_port"]),
                int(m["peer_port"]),
                str(m["host"]),
                int(m.get("http_port", 0)),  # 0: a layout stored before members served HTTP
            )
            for m in raw["members"]
        ]
        token = str(raw["token"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ClusterError(
            f"{path} is unreadable ({exc}); remove it to lay the cluster out anew"
        ) from exc
    if not members:
        raise ClusterError(f"{path} names no members")
    return members, token


def resolve_layout(
    data_dir: Path, nodes: int | None, base_port: int | None
) -> tuple[list[MemberSpec], str, bool]:
    """(members, token, restarting): the stored layout if ``data_dir`` holds one, else a new one.

    A stored cluster keeps its names and peer ports (member ids derive from them), so options that
    would change them are refused rather than silently ignored.
    """
    stored = load_layout(data_dir)
    if stored is None:
        planned = plan_members(3 if nodes is None else nodes, base_port)
        return http_ports(planned, base_port), CLUSTER_TOKEN, False
    members, token = stored
    wanted = plan_members(len(members) if nodes is None else nodes, base_port)
    if nodes is not None and nodes != len(members):
        raise ClusterError(
            f"{data_dir} holds a {len(members)}-member cluster; run with --nodes {len(members)} "
            f"(or without --nodes) to restart it, or choose another --data-dir for a new cluster"
        )
    if base_port is not None and [(m.client_port, m.peer_port) for m in wanted] != [
        (m.client_port, m.peer_port) for m in members
    ]:
        raise ClusterError(
            f"{data_dir} holds a cluster on client ports "
            f"{', '.join(str(m.client_port) for m in members)}; restart it without --base-port "
            f"(or with the same one), or choose another --data-dir for a new cluster"
        )
    return members, token, True


def check_ports_free(members: Sequence[MemberSpec]) -> None:
    """Fail with a clear message if any port is taken (rather than a node dying on bind)."""
    busy: list[str] = []
    for m in members:
        for kind, port in (("client", m.client_port), ("peer", m.peer_port), ("http", m.http_port)):
            if not port:
                continue
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                # gRPC binds with SO_REUSEADDR too, so a port in TIME_WAIT is not busy.
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    s.bind((m.host, port))
                except OSError as exc:
                    why = "already in use" if exc.errno == errno.EADDRINUSE else exc.strerror
                    busy.append(f"{m.host}:{port} ({m.name}'s {kind} port): {why}")
    if busy:
        raise ClusterError(
            "cannot start the cluster, ports are not free:\n  "
            + "\n  ".join(busy)
            + "\nIs another raftkv cluster or etcd running? Stop it, or pick other ports with "
            "--base-port (and another --data-dir)."
        )


# -- cluster up -----------------------------------------------------------------------------------


class _Output:
    def __init__(self, width: int, colour: bool) -> None:
        self._width = width
        self._colour = colour
        self._closed = False

    def prefix(self, index: int, name: str) -> str:
        label = f"{name:<{self._width}} | "
        if self._colour:
            return f"\x1b[{_COLOURS[index % len(_COLOURS)]}m{label}\x1b[0m"
        return label

    def line(self, text: str) -> None:
        if self._closed:
            return
        try:
            sys.stdout.write(text + "\n")
            sys.stdout.flush()
        except (BrokenPipeError, ValueError):  # the reader went away (| head): keep supervising
            self._closed = True

    def say(self, text: str) -> None:
        label = "raftkv: "
        if self._colour:
            label = f"\x1b[1m{label}\x1b[0m"
        self.line(label + text)


@dataclass
class _Child:
    index: int
    spec: MemberSpec
    proc: asyncio.subprocess.Process
    pump: asyncio.Task[None] | None = None


class Supervisor:
    def __init__(
        self,
        members: Sequence[MemberSpec],
        data_dir: Path,
        token: str,
        *,
        node_args: Sequence[str],
        ready_timeout_s: float,
        stop_timeout_s: float,
        out: _Output,
    ) -> None:
        self.members = list(members)
        self.data_dir = data_dir
        self.token = token
        self.node_args = list(node_args)
        self.ready_timeout_s = ready_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.out = out
        self.children: list[_Child] = []
        self._stop = asyncio.Event()
        self._force = asyncio.Event()
        self._exited = asyncio.Event()

    def _on_signal(self) -> None:
        if self._stop.is_set():
            self._force.set()  # a second Ctrl-C: no more waiting
        self._stop.set()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._on_signal)
        try:
            await self._spawn_all()
            ok = await self._wait_ready()
            if ok:
                await self._serve()
            return 0 if ok else 1
        finally:
            await self._stop_all()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    async def _spawn_all(self) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        for index, spec in enumerate(self.members):
            (self.data_dir / spec.name).mkdir(parents=True, exist_ok=True)
            argv = member_argv(
                RAFTKV_NODE,
                spec,
                self.members,
                data_root=self.data_dir,
                token=self.token,
                extra=self.node_args,
            )
            # A session of its own: a Ctrl-C in the terminal reaches only the supervisor, which
            # then stops the members itself, all in one orderly way.
            proc = await spawn_async(argv, env=env, line_limit=_LINE_LIMIT)
            child = _Child(index, spec, proc)
            child.pump = asyncio.create_task(self._pump(child))
            self.children.append(child)
            self.out.say(f"started {spec.name} (pid {proc.pid})")

    async def _pump(self, child: _Child) -> None:
        stream = child.proc.stdout
        assert stream is not None
        prefix = self.out.prefix(child.index, child.spec.name)
        while True:
            try:
                raw = await stream.readline()
            except ValueError:  # longer than the limit; asyncio has dropped it
                raw = b"[a log line longer than 1 MiB was dropped]"
            if not raw:
                break
            self.out.line(prefix + raw.decode(errors="replace").rstrip("\r\n"))
        code = await child.proc.wait()
        if not self._stop.is_set():
            self.out.say(f"{child.spec.name} exited ({_describe_exit(code)})")
        if all(c.proc.returncode is not None for c in self.children):
            self._exited.set()

    async def _wait_ready(self) -> bool:
        start = time.monotonic()
        deadline = start + self.ready_timeout_s
        channels = [grpc.aio.insecure_channel(m.endpoint) for m in self.members]
        last_report = ""
        last_time = 0.0
        try:
            while True:
                if self._stop.is_set():
                    self.out.say("interrupted before the cluster was ready")
                    return False
                dead = [c for c in self.children if c.proc.returncode is not None]
                if dead:
                    names = ", ".join(
                        f"{c.spec.name} ({_describe_exit(c.proc.returncode)})" for c in dead
                    )
                    self.out.say(f"cannot start the cluster: {names} exited; see its log above")
                    return False
                statuses = await asyncio.gather(*(fetch_status(ch, 1.0) for ch in channels))
                up = [s for s in statuses if s is not None]
                leaders = {s.leader for s in up if s.leader}
                leader = agreed_leader(statuses)
                if leader is not None:
                    self._print_ready(leader, statuses)
                    return True
                now = time.monotonic()
                if now >= deadline:
                    self.out.say(
                        f"no leader after {self.ready_timeout_s:.0f} s "
                        f"({len(up)}/{len(self.members)} members answering); stopping"
                    )
                    return False
                report = f"{len(up)}/{len(self.members)} members answering, " + (
                    "no leader yet" if not leaders else "electing a leader"
                )
                if report != last_report or now - last_time >= 5:
                    self.out.say(f"waiting for a leader: {report} ({now - start:.1f} s)")
                    last_report, last_time = report, now
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), 0.2)
        finally:
            for ch in channels:
                await ch.close()

    def _print_ready(self, leader: int, statuses: Sequence[rpc_pb2.StatusResponse | None]) -> None:
        leader_name = "?"
        term = 0
        for spec, st in zip(self.members, statuses, strict=True):
            if st is not None and st.header.member_id == leader:
                leader_name = spec.name
                term = st.raftTerm
        width = max(len(m.name) for m in self.members)
        lines = [
            f"cluster ready: {len(self.members)} members, leader {leader_name} "
            f"({leader:x}), term {term}",
        ]
        for m in self.members:
            http = f"  http {m.http_url}" if m.http_port else ""
            lines.append(
                f"  {m.name:<{width}}  client {m.client_url}  peer {m.peer_url}{http}  "
                f"data {self.data_dir / m.name}"
            )
        endpoints = ",".join(m.endpoint for m in self.members)
        lines += [
            f"endpoints: {endpoints}",
            "try:",
            f"  etcdctl --endpoints={endpoints} put foo bar",
            f"  etcdctl --endpoints={endpoints} get foo",
            f"  raftkv cluster status --endpoints={endpoints}",
        ]
        if self.members[0].http_port:  # HTTP clients (docs/http.md)
            first = self.members[0].http_url
            lines += [
                f'  curl -s {first}/v3/kv/range -d \'{{"key":"Zm9v"}}\'',
                f"  curl -s {first}/health; curl -s {first}/metrics",
            ]
        lines += ["Press Ctrl-C to stop the cluster."]
        for text in lines:
            self.out.say(text)

    async def _serve(self) -> None:
        stop = asyncio.create_task(self._stop.wait())
        exited = asyncio.create_task(self._exited.wait())
        await asyncio.wait({stop, exited}, return_when=asyncio.FIRST_COMPLETED)
        for task in (stop, exited):
            task.cancel()
        if self._exited.is_set() and not self._stop.is_set():
            self.out.say("every member has exited")

    async def _stop_all(self) -> None:
        self._stop.set()
        alive = [c for c in self.children if c.proc.returncode is None]
        if alive:
            self.out.say(f"stopping {', '.join(c.spec.name for c in alive)} (SIGTERM)")
        for group in await self._stop_groups(alive):
            await self._terminate(group)
        for child in self.children:
            if child.proc.returncode is None:
                self.out.say(f"{child.spec.name} did not stop in time: sending SIGKILL")
                with contextlib.suppress(ProcessLookupError):
                    child.proc.kill()
        for child in self.children:
            await child.proc.wait()
            if child.pump is not None:
                await child.pump
        if self.children:
            codes = ", ".join(
                f"{c.spec.name} {_describe_exit(c.proc.returncode)}" for c in self.children
            )
            self.out.say(f"all members stopped ({codes})")

    # -- an orderly stop: the leader hands over once, then nobody else has to ------------------

    async def _leader_among(self, children: Sequence[_Child]) -> _Child | None:
        channels = [grpc.aio.insecure_channel(c.spec.endpoint) for c in children]
        try:
            statuses = await asyncio.gather(*(fetch_status(ch, 1.0) for ch in channels))
        finally:
            for ch in channels:
                await ch.close()
        by_id = {st.header.member_id: c for c, st in zip(children, statuses, strict=True) if st}
        leaders = {st.leader for st in statuses if st is not None and st.leader}
        return by_id.get(leaders.pop()) if len(leaders) == 1 else None

    async def _stop_groups(self, alive: list[_Child]) -> list[list[_Child]]:
        """The leader alone first (it hands leadership over, once); then, once the new leader
        is known, everyone but it; then the new leader, which has no peer left to hand over
        to. Without a known leader, everyone at once."""
        if self._force.is_set() or len(alive) < 2:
            return [alive]
        leader = await self._leader_among(alive)
        if leader is None:
            return [alive]
        await self._terminate([leader])
        rest = [c for c in alive if c is not leader and c.proc.returncode is None]
        successor = await self._leader_among(rest) if len(rest) > 1 else None
        if successor is None:
            return [rest]
        return [[c for c in rest if c is not successor], [successor]]

    async def _terminate(self, group: Sequence[_Child]) -> None:
        """SIGTERM ``group`` and wait for it, at most the stop timeout (or a second Ctrl-C)."""
        group = [c for c in group if c.proc.returncode is None]
        if not group or self._force.is_set():
            return
        for child in group:
            with contextlib.suppress(ProcessLookupError):
                child.proc.send_signal(signal.SIGTERM)
        stopped = asyncio.create_task(_wait_all(c.proc for c in group))
        force = asyncio.create_task(self._force.wait())
        await asyncio.wait(
            {stopped, force}, timeout=self.stop_timeout_s, return_when=asyncio.FIRST_COMPLETED
        )
        force.cancel()


async def _wait_all(procs: Iterable[asyncio.subprocess.Process]) -> None:
    for proc in procs:
        await proc.wait()


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "running"
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
        return f"killed by signal {-code}"
    return f"exit code {code}"


def cluster_up(
    *,
    nodes: int | None,
    data_dir: Path,
    base_port: int | None,
    node_args: Sequence[str],
    ready_timeout_s: float,
    stop_timeout_s: float,
) -> int:
    members, token, restarting = resolve_layout(data_dir, nodes, base_port)
    check_ports_free(members)
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / LAYOUT_FILE).write_text(_layout_json(members, token) + "\n", encoding="utf-8")
    colour = sys.stdout.isatty() and "NO_COLOR" not in os.environ
    out = _Output(max(len("raftkv"), *(len(m.name) for m in members)), colour)
    verb = "restarting" if restarting else "starting"
    out.say(f"{verb} a {len(members)}-member cluster in {data_dir}")
    supervisor = Supervisor(
        members,
        data_dir,
        token,
        node_args=node_args,
        ready_timeout_s=ready_timeout_s,
        stop_timeout_s=stop_timeout_s,
        out=out,
    )
    return asyncio.run(supervisor.run())


# -- cluster status -------------------------------------------------------------------------------


def _human_bytes(n: int) -> str:
    """Like etcdctl's table (go-humanize, SI units): 20 kB, 1.2 MB."""
    size = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" or size >= 10 else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")


async def fetch_members(
    channel: grpc.aio.Channel, timeout_s: float
) -> rpc_pb2.MemberListResponse | None:
    try:
        stub = rpc_pb2_grpc.ClusterStub(channel)
        return await stub.MemberList(rpc_pb2.MemberListRequest(), timeout=timeout_s)
    except grpc.aio.AioRpcError:
        return None


def _endpoint_of(url: str) -> str:
    return url.split("://", 1)[-1].rstrip("/")


async def _gather_status(
    endpoints: Sequence[str], timeout_s: float
) -> tuple[rpc_pb2.MemberListResponse | None, dict[str, rpc_pb2.StatusResponse | None]]:
    channels: dict[str, grpc.aio.Channel] = {}

    def channel(endpoint: str) -> grpc.aio.Channel:
        if endpoint not in channels:
            channels[endpoint] = grpc.aio.insecure_channel(endpoint)
        return channels[endpoint]

    try:
        statuses: dict[str, rpc_pb2.StatusResponse | None] = {}
        results = await asyncio.gather(*(fetch_status(channel(e), timeout_s) for e in endpoints))
        statuses.update(zip(endpoints, results, strict=True))
        members = None
        for endpoint in endpoints:
            if statuses[endpoint] is not None:
                members = await fetch_members(channel(endpoint), timeout_s)
                if members is not None:
                    break
        if members is not None:  # members reachable on URLs the caller did not name
            extra = [
                _endpoint_of(u)
                for m in members.members
                for u in m.clientURLs
                if _endpoint_of(u) not in statuses
            ]
            results = await asyncio.gather(*(fetch_status(channel(e), timeout_s) for e in extra))
            statuses.update(zip(extra, results, strict=True))
        return members, statuses
    finally:
        for ch in channels.values():
            await ch.close()


def format_status(
    members: rpc_pb2.MemberListResponse | None,
    statuses: dict[str, rpc_pb2.StatusResponse | None],
) -> list[str]:
    by_id: dict[int, tuple[str, rpc_pb2.StatusResponse]] = {}
    for endpoint, st in statuses.items():
        if st is not None and st.header.member_id not in by_id:
            by_id[st.header.member_id] = (endpoint, st)
    rows: list[tuple[str, ...]] = []
    header = (
        *("NAME", "ID", "CLIENT URL", "LEADER"),
        *("RAFT TERM", "RAFT INDEX", "APPLIED INDEX", "DB SIZE"),
    )
    member_list: list[tuple[int, str, str]] = []
    if members is not None:
        for m in members.members:
            url = m.clientURLs[0] if m.clientURLs else ""
            if not url and m.ID in by_id:
                url = f"http://{by_id[m.ID][0]}"
            member_list.append((m.ID, m.name, url))
    else:
        member_list = [(mid, "?", f"http://{ep}") for mid, (ep, _) in by_id.items()]
    views = {st.leader for _, st in by_id.values() if st.leader}
    for mid, name, url in member_list:
        found = by_id.get(mid)
        if found is None:
            rows.append((name, f"{mid:x}", url, "", "unreachable", "", "", ""))
            continue
        st = found[1]
        rows.append(
            (
                name,
                f"{mid:x}",
                url,
                "*" if mid in views else "",
                str(st.raftTerm),
                str(st.raftIndex),
                str(st.raftAppliedIndex),
                _human_bytes(st.dbSize),
            )
        )
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]
    names = {mid: name for mid, name, _ in member_list}
    if not views:
        lines.append("leader: none (no member answering knows a leader)")
    elif len(views) == 1:
        leader = next(iter(views))
        terms = sorted({st.raftTerm for _, st in by_id.values()})
        lines.append(f"leader: {names.get(leader, '?')} ({leader:x}), raft term {terms[-1]}")
    else:
        seen = ", ".join(f"{names.get(v, '?')} ({v:x})" for v in sorted(views))
        lines.append(f"leader: members disagree ({seen}); an election may be under way")
    return lines


def cluster_status(endpoints: Sequence[str], timeout_s: float) -> int:
    members, statuses = asyncio.run(_gather_status(endpoints, timeout_s))
    if all(st is None for st in statuses.values()):
        raise ClusterError(
            f"no member answered at {', '.join(endpoints)}; is the cluster running "
            f"(raftkv cluster up)?"
        )
    for line in format_status(members, statuses):
        click.echo(line)
    return 0


# -- click commands -----------------------------------------------------------------------------


@click.group("cluster")
def cluster_group() -> None:
    """Run and inspect a local cluster for development."""


@cluster_group.command("up")
@click.option(
    "--nodes",
    type=click.IntRange(1, 32),
    default=None,
    help="Number of members [default: 3, or as stored in --data-dir].",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_DATA_DIR,
    show_default=True,
    help="Directory of the cluster: one sub-directory per member.",
)
@click.option(
    "--base-port",
    type=int,
    default=None,
    help="Lay ports out contiguously from this port (member i of n: client base+2i, peer "
    "base+2i+1, HTTP base+2n+i) instead of etcd's Procfile layout (2379/2380/2381, "
    "22379/22380/22381, 32379/32380/32381, ...).",
)
@click.option("--heartbeat-interval", type=int, default=None, help="Passed to every member (ms).")
@click.option("--election-timeout", type=int, default=None, help="Passed to every member (ms).")
@click.option("--snapshot-count", type=int, default=None, help="Passed to every member.")
@click.option("--log-level", default=None, help="Passed to every member.")
@click.option(
    "--ready-timeout",
    type=float,
    default=60.0,
    show_default=True,
    help="Seconds to wait for a leader before giving up.",
)
@click.option(
    "--stop-timeout",
    type=float,
    default=10.0,
    show_default=True,
    help="Seconds to wait for members to stop after SIGTERM before SIGKILL.",
)
def up_command(
    nodes: int | None,
    data_dir: Path,
    base_port: int | None,
    heartbeat_interval: int | None,
    election_timeout: int | None,
    snapshot_count: int | None,
    log_level: str | None,
    ready_timeout: float,
    stop_timeout: float,
) -> None:
    """Start a local cluster on 127.0.0.1 (3 members by default, ports as in etcd's Procfile).

    Each member's log lines are shown prefixed by its name. Ctrl-C stops every member. Running
    it again with the same --data-dir restarts the same cluster with its data.
    """
    node_args: list[str] = []
    for flag, value in (
        ("--heartbeat-interval", heartbeat_interval),
        ("--election-timeout", election_timeout),
        ("--snapshot-count", snapshot_count),
        ("--log-level", log_level),
    ):
        if value is not None:
            node_args += [flag, str(value)]
    code = cluster_up(
        nodes=nodes,
        data_dir=data_dir,
        base_port=base_port,
        node_args=node_args,
        ready_timeout_s=ready_timeout,
        stop_timeout_s=stop_timeout,
    )
    sys.exit(code)


@cluster_group.command("status")
@click.option(
    "--endpoints",
    default=DEFAULT_ENDPOINTS,
    show_default=True,
    envvar="ETCDCTL_ENDPOINTS",
    help="Comma-separated client endpoints (host:port) to ask.",
)
@click.option("--timeout", type=float, default=3.0, show_default=True, help="Seconds per call.")
def status_command(endpoints: str, timeout: float) -> None:
    """Show the members, the leader, the raft term and indexes, and each database's size."""
    names = [_endpoint_of(e.strip()) for e in endpoints.split(",") if e.strip()]
    if not names:
        raise click.UsageError("--endpoints names no endpoint")
    sys.exit(cluster_status(names, timeout))
