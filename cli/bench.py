"""``raftkv bench``: a load generator for any etcd v3 API endpoints (raftkv or real etcd).

In the spirit of etcd's ``tools/benchmark``, with the same option names where it has them:

* ``put``: Put of a ``--val-size`` value on a key from a ``--key-space``;
* ``range``: Range of one key, linearizable (``--consistency l``) or serializable (``s``);
* ``txn``: compare-and-set: Range a key for its mod_revision, then
  ``Txn(compare: MOD(key) == rev, success: put)``; one operation is both calls;
* ``watch``: ``--watchers`` watch streams on one prefix while writers put unique keys under it at
  ``--rate``; the write carries its send time, so each delivered event gives a write-to-delivery
  latency; the report counts delivered against expected events (writes x watchers);
* ``lease``: LeaseKeepAlive round trips, one stream per in-flight request.

A server without the service a workload needs (UNIMPLEMENTED) is reported as such, with exit
code 3, not as a crash.

Load: ``--conns`` TCP connections (gRPC channels with a local subchannel pool, so they really
are separate), spread round-robin over ``--endpoints``; ``--clients`` stubs spread over the
connections; ``--concurrency`` requests in flight, each a coroutine looping over the clients.
``--processes`` splits all of these over worker processes (spawned before any gRPC is used), so
one Python process is not the bottleneck; their histograms are merged. Stop after ``--total``
operations or ``--duration`` seconds; ``--rate`` caps operations per second (0: unlimited).

The report: throughput, a latency histogram, p50/p90/p99/max, errors by gRPC status code, and
the CPU the load generator itself used (its processes' ``getrusage`` over the measured window,
and the whole process tree's), so a run where the generator was the bottleneck is visible.

``raftkv bench compare`` (also ``python bench/compare.py``) runs the same workloads against a
fresh three-member etcd and a fresh three-member raftkv on this machine and prints the ratios.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import datetime as dt
import json
import math
import multiprocessing as mp
import os
import platform
import queue
import random
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from multiprocessing.sharedctypes import Synchronized, SynchronizedArray
from pathlib import Path
from typing import Any

import click
import grpc

from raftkv.pb.etcdserverpb import rpc_pb2, rpc_pb2_grpc

__all__ = [
    "BenchConfig",
    "Histogram",
    "bench_group",
    "compare_main",
    "format_report",
    "run_bench",
]

WORKLOADS = ("put", "range", "txn", "watch", "lease")
EXIT_UNIMPLEMENTED = 3
_MAX_MSG = 2**31 - 1
_TS_BYTES = 8  # watch values start with the writer's monotonic clock, in ns (big-endian)


# -- histogram ------------------------------------------------------------------------------------


class Histogram:
    """Log-linear latency histogram in microseconds, mergeable across processes.

    Exact below 128 us; above, 64 sub-buckets per power of two (under 1.6% relative error).
    """

    __slots__ = ("counts", "max_us", "min_us", "n", "sum_us")

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.n = 0
        self.sum_us = 0
        self.min_us = 0
        self.max_us = 0

    @staticmethod
    def index(us: int) -> int:
        if us < 128:
            return us
        shift = us.bit_length() - 7
        return 128 + (shift - 1) * 64 + ((us >> shift) - 64)

    @staticmethod
    def upper(idx: int) -> int:
        """The largest value (us) that falls in bucket ``idx``."""
        if idx < 128:
            return idx
        shift = (idx - 128) // 64 + 1
        mantissa = (idx - 128) % 64 + 64
        return ((mantissa + 1) << shift) - 1

    def record(self, us: int) -> None:
        us = max(us, 0)
        i = self.index(us)
        self.counts[i] = self.counts.get(i, 0) + 1
        if self.n == 0 or us < self.min_us:
            self.min_us = us
        self.max_us = max(us, self.max_us)
        self.n += 1
        self.sum_us += us

    def merge(self, other: Histogram) -> None:
        for i, c in other.counts.items():
            self.counts[i] = self.counts.get(i, 0) + c
        if other.n:
            self.min_us = other.min_us if self.n == 0 else min(self.min_us, other.min_us)
            self.max_us = max(self.max_us, other.max_us)
        self.n += other.n
        self.sum_us += other.sum_us

    def percentile(self, q: float) -> int:
        """The value (us) at or below which a fraction ``q`` of the samples fall."""
        if self.n == 0:
            return 0
        rank = max(1, math.ceil(q * self.n))
        seen = 0
        for i in sorted(self.counts):
            seen += self.counts[i]
            if seen >= rank:
                return min(self.upper(i), self.max_us)
        return self.max_us

    def mean_us(self) -> float:
        return self.sum_us / self.n if self.n else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "counts": {str(i): c for i, c in self.counts.items()},
            "n": self.n,
            "sum_us": self.sum_us,
            "min_us": self.min_us,
            "max_us": self.max_us,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Histogram:
        h = cls()
        h.counts = {int(i): int(c) for i, c in d["counts"].items()}
        h.n, h.sum_us = int(d["n"]), int(d["sum_us"])
        h.min_us, h.max_us = int(d["min_us"]), int(d["max_us"])
        return h

    def linear_buckets(self, n: int = 10) -> list[tuple[float, int]]:
        """etcd-style: ``n`` equal-width buckets from min to max, as (upper ms, count)."""
        if self.n == 0:
            return []
        lo, hi = self.min_us, self.max_us
        width = max(1.0, (hi - lo) / n)
        out = [0] * n
        for i, c in self.counts.items():
            v = min(self.upper(i), hi)
            out[min(n - 1, max(0, int((v - lo) / width)))] += c
        return [((lo + width * (k + 1)) / 1000.0, out[k]) for k in range(n)]


# -- configuration --------------------------------------------------------------------------------


@dataclass(frozen=True)
class BenchConfig:
    workload: str
    endpoints: tuple[str, ...] = ("127.0.0.1:2379",)
    clients: int = 1
    conns: int = 1
    concurrency: int = 1
    key_size: int = 8
    val_size: int = 256
    key_space: int = 10_000
    sequential_keys: bool = False
    total: int = 0
    duration: float = 0.0
    rate: float = 0.0
    processes: int = 1
    consistency: str = "l"
    watchers: int = 100
    prefix: str = ""
    prefill: bool = False
    timeout: float = 10.0
    drain_timeout: float = 5.0
    progress: bool = True
    label: str = ""

    def check(self) -> None:
        if self.workload not in WORKLOADS:
            raise click.UsageError(f"unknown workload {self.workload!r}")
        if not self.endpoints:
            raise click.UsageError("--endpoints is empty")
        for name in ("clients", "conns", "concurrency", "key_space", "processes"):
            if getattr(self, name) < 1:
                raise click.UsageError(f"--{name.replace('_', '-')} must be at least 1")
        if self.total <= 0 and self.duration <= 0:
            raise click.UsageError("give --total or --duration")
        if self.consistency not in ("l", "s"):
            raise click.UsageError("--consistency must be l or s")
        if self.workload == "watch" and self.watchers < 1:
            raise click.UsageError("--watchers must be at least 1")


def _share(total: int, parts: int, i: int) -> int:
    return total // parts + (1 if i < total % parts else 0)


def _prefix_end(prefix: bytes) -> bytes:
    b = bytearray(prefix)
    while b:
        if b[-1] < 0xFF:
            b[-1] += 1
            return bytes(b)
        b.pop()
    return b"\0"


def make_key(cfg: BenchConfig, i: int) -> bytes:
    digits = max(len(str(cfg.key_space - 1)), cfg.key_size - len(cfg.prefix))
    return (cfg.prefix + str(i).zfill(digits)).encode()


def _cpu_self() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _cpu_tree() -> float:
    a = resource.getrusage(resource.RUSAGE_SELF)
    b = resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime


# -- the worker process ---------------------------------------------------------------------------


class Unimplemented(Exception):
    """The server does not implement the service the workload needs."""


@dataclass
class _Shared:
    ready: Synchronized[int]
    go: Any  # multiprocessing.Event
    stop: Any  # multiprocessing.Event
    start_at: Synchronized[float]
    progress: SynchronizedArray[int]  # per worker: ok, errors
    writes_ok: SynchronizedArray[int]  # watch: per worker
    writers_done: Synchronized[int]


@dataclass
class _WorkerState:
    hist: Histogram = field(default_factory=Histogram)
    write_hist: Histogram = field(default_factory=Histogram)
    ok: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    left: int = -1  # ops not yet started; -1: no --total
    deadline: float = 0.0  # monotonic; 0: none
    last_end: float = 0.0
    stopping: bool = False
    extra: dict[str, int] = field(default_factory=dict)

    def error(self, exc: grpc.aio.AioRpcError) -> None:
        name = exc.code().name
        self.errors[name] = self.errors.get(name, 0) + 1

    def take(self) -> bool:
        """Claim one more operation, or False when the run is over."""
        if self.stopping:
            return False
        if self.deadline and time.monotonic() >= self.deadline:
            return False
        if self.left >= 0:
            if self.left == 0:
                return False
            self.left -= 1
        return True


class _Limiter:
    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self.next = 0.0

    async def wait(self) -> None:
        if not self.interval:
            return
        now = time.monotonic()
        slot = max(self.next, now)
        self.next = slot + self.interval
        if slot > now:
            await asyncio.sleep(slot - now)


def _channel(endpoint: str) -> grpc.aio.Channel:
    target = endpoint.removeprefix("http://")
    return grpc.aio.insecure_channel(
        target,
        options=[
            ("grpc.use_local_subchannel_pool", 1),  # a channel per connection, really
            ("grpc.max_receive_message_length", _MAX_MSG),
            ("grpc.max_send_message_length", _MAX_MSG),
        ],
    )


def _worker_entry(cfg_json: str, index: int, shared: _Shared, out: Any) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops the run
    raw = json.loads(cfg_json)
    cfg = BenchConfig(**{**raw, "endpoints": tuple(raw["endpoints"])})
    try:
        result = asyncio.run(_worker(cfg, index, shared))
    except Unimplemented as exc:
        out.put({"worker": index, "unimplemented": str(exc)})
    except Exception as exc:
        out.put({"worker": index, "fatal": f"{type(exc).__name__}: {exc}"})
    else:
        out.put(result)


async def _worker(cfg: BenchConfig, index: int, shared: _Shared) -> dict[str, Any]:
    nproc = cfg.processes
    n_conns = max(1, _share(cfg.conns, nproc, index))
    n_clients = max(1, _share(cfg.clients, nproc, index))
    n_conc = _share(cfg.concurrency, nproc, index)
    conn_base = sum(_share(cfg.conns, nproc, j) for j in range(index))
    channels = [
        _channel(cfg.endpoints[(conn_base + i) % len(cfg.endpoints)]) for i in range(n_conns)
    ]
    st = _WorkerState()
    try:
        for ch in channels:
            try:
                await asyncio.wait_for(ch.channel_ready(), cfg.timeout)
            except TimeoutError:
                raise RuntimeError(
                    f"cannot connect to {cfg.endpoints} in {cfg.timeout} s"
                ) from None
        chans = [channels[i % n_conns] for i in range(n_clients)]
        rng = random.Random(os.getpid() ^ int(time.time_ns()))
        run = _WORKLOAD_RUNNERS[cfg.workload]
        return await run(cfg, index, shared, st, chans, n_conc, rng)
    finally:
        for ch in channels:
            await ch.close()


async def _start(cfg: BenchConfig, index: int, shared: _Shared, st: _WorkerState) -> float:
    """Report ready, wait for the parent's go, set the limits; returns the start time."""
    with shared.ready.get_lock():
        shared.ready.value += 1
    while not shared.go.is_set():
        if shared.stop.is_set():
            st.stopping = True
            break
        await asyncio.sleep(0.005)
    start = shared.start_at.value
    if start > time.monotonic():
        await asyncio.sleep(start - time.monotonic())
    if cfg.total > 0:
        st.left = _share(cfg.total, cfg.processes, index)
    if cfg.duration > 0:
        st.deadline = start + cfg.duration
    return start


async def _ticker(index: int, shared: _Shared, st: _WorkerState) -> None:
    while True:
        shared.progress[2 * index] = st.ok
        shared.progress[2 * index + 1] = sum(st.errors.values())
        if shared.stop.is_set():
            st.stopping = True
        await asyncio.sleep(0.1)


def _result(
    index: int, st: _WorkerState, start: float, cpu0: float, **extra: Any
) -> dict[str, Any]:
    return {
        "worker": index,
        "ok": st.ok,
        "errors": st.errors,
        "hist": st.hist.to_json(),
        "write_hist": st.write_hist.to_json() if st.write_hist.n else None,
        "start": start,
        "end": st.last_end or time.monotonic(),
        "cpu_s": _cpu_self() - cpu0,
        "extra": {**st.extra, **extra},
    }


async def _closed_loop(
    cfg: BenchConfig,
    st: _WorkerState,
    n_conc: int,
    op: Callable[[int, int], Awaitable[None]],
) -> None:
    """``n_conc`` coroutines, each calling ``op(coroutine index, key index)`` until done."""
    limiter = _Limiter(cfg.rate / cfg.processes if cfg.rate > 0 else 0.0)
    seq = [0]

    async def one(c: int) -> None:
        rng = random.Random(c * 7919 + os.getpid())
        while st.take():
            await limiter.wait()
            if cfg.sequential_keys:
                k = seq[0] % cfg.key_space
                seq[0] += 1
            else:
                k = rng.randrange(cfg.key_space)
            t0 = time.perf_counter_ns()
            try:
                await op(c, k)
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                    raise Unimplemented(exc.details() or "UNIMPLEMENTED") from None
                st.error(exc)
                await asyncio.sleep(0.01)  # no hot loop against a failing server
                continue
            t1 = time.perf_counter_ns()
            st.hist.record((t1 - t0) // 1000)
            st.ok += 1
            st.last_end = time.monotonic()

    await asyncio.gather(*(one(c) for c in range(n_conc)))


async def _prefill(
    cfg: BenchConfig, index: int, chans: Sequence[grpc.aio.Channel], value: bytes
) -> None:
    """Write every key of the key space once (this worker's share), before the clock starts."""
    stubs = [rpc_pb2_grpc.KVStub(ch) for ch in chans]
    keys = list(range(index, cfg.key_space, cfg.processes))

    async def one(c: int) -> None:
        for k in keys[c::64]:
            await stubs[c % len(stubs)].Put(
                rpc_pb2.PutRequest(key=make_key(cfg, k), value=value), timeout=cfg.timeout
            )

    await asyncio.gather(*(one(c) for c in range(64)))


async def _run_kv(
    cfg: BenchConfig,
    index: int,
    shared: _Shared,
    st: _WorkerState,
    chans: Sequence[grpc.aio.Channel],
    n_conc: int,
    rng: random.Random,
) -> dict[str, Any]:
    stubs = [rpc_pb2_grpc.KVStub(ch) for ch in chans]
    value = rng.randbytes(cfg.val_size)
    timeout = cfg.timeout
    ns = len(stubs)
    if cfg.prefill and cfg.workload in ("range", "txn"):
        await _prefill(cfg, index, chans, value)
    keys = [make_key(cfg, k) for k in range(cfg.key_space)]
    serializable = cfg.consistency == "s"
    cas_ok = [0]

    async def put(c: int, k: int) -> None:
        await stubs[c % ns].Put(rpc_pb2.PutRequest(key=keys[k], value=value), timeout=timeout)

    async def range_(c: int, k: int) -> None:
        await stubs[c % ns].Range(
            rpc_pb2.RangeRequest(key=keys[k], serializable=serializable), timeout=timeout
        )

    async def txn(c: int, k: int) -> None:
        stub = stubs[c % ns]
        key = keys[k]
        got = await stub.Range(
            rpc_pb2.RangeRequest(key=key, serializable=serializable), timeout=timeout
        )
        rev = got.kvs[0].mod_revision if got.kvs else 0
        resp = await stub.Txn(
            rpc_pb2.TxnRequest(
                compare=[
                    rpc_pb2.Compare(
                        key=key,
                        target=rpc_pb2.Compare.MOD,
                        result=rpc_pb2.Compare.EQUAL,
                        mod_revision=rev,
                    )
                ],
                success=[rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=key, value=value))],
            ),
            timeout=timeout,
        )
        if resp.succeeded:
            cas_ok[0] += 1

    op = {"put": put, "range": range_, "txn": txn}[cfg.workload]
    start = await _start(cfg, index, shared, st)
    cpu0 = _cpu_self()
    tick = asyncio.create_task(_ticker(index, shared, st))
    try:
        await _closed_loop(cfg, st, n_conc, op)
    finally:
        tick.cancel()
    extra: dict[str, Any] = {}
    if cfg.workload == "txn":
        extra = {"cas_succeeded": cas_ok[0], "cas_conflicts": st.ok - cas_ok[0]}
    return _result(index, st, start, cpu0, **extra)


async def _run_lease(
    cfg: BenchConfig,
    index: int,
    shared: _Shared,
    st: _WorkerState,
    chans: Sequence[grpc.aio.Channel],
    n_conc: int,
    rng: random.Random,
) -> dict[str, Any]:
    stubs = [rpc_pb2_grpc.LeaseStub(ch) for ch in chans]
    ns = len(stubs)
    ids: list[int] = []
    calls: list[Any] = []
    try:
        for c in range(n_conc):
            try:
                grant = await stubs[c % ns].LeaseGrant(
                    rpc_pb2.LeaseGrantRequest(TTL=60), timeout=cfg.timeout
                )
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                    raise Unimplemented(f"LeaseGrant: {exc.details()}") from None
                raise
            ids.append(grant.ID)
            calls.append(stubs[c % ns].LeaseKeepAlive())

        async def keepalive(c: int, _k: int) -> None:
            call = calls[c]
            await call.write(rpc_pb2.LeaseKeepAliveRequest(ID=ids[c]))
            resp = await asyncio.wait_for(call.read(), cfg.timeout)
            if resp is grpc.aio.EOF:
                raise RuntimeError("the server closed the keep-alive stream")

        start = await _start(cfg, index, shared, st)
        cpu0 = _cpu_self()
        tick = asyncio.create_task(_ticker(index, shared, st))
        try:
            await _closed_loop(cfg, st, n_conc, keepalive)
        finally:
            tick.cancel()
        return _result(index, st, start, cpu0, leases=len(ids))
    finally:
        for call in calls:
            call.cancel()
        for c, lease_id in enumerate(ids):
            with contextlib.suppress(grpc.aio.AioRpcError):
                await stubs[c % ns].LeaseRevoke(rpc_pb2.LeaseRevokeRequest(ID=lease_id), timeout=2)


async def _run_watch(
    cfg: BenchConfig,
    index: int,
    shared: _Shared,
    st: _WorkerState,
    chans: Sequence[grpc.aio.Channel],
    n_conc: int,
    rng: random.Random,
) -> dict[str, Any]:
    prefix = (cfg.prefix or "watch-bench/") + f"{cfg.label}/"
    pfx = prefix.encode()
    kv = [rpc_pb2_grpc.KVStub(ch) for ch in chans]
    ws = [rpc_pb2_grpc.WatchStub(ch) for ch in chans]
    n_watch = _share(cfg.watchers, cfg.processes, index)
    delivered = [0] * n_watch
    disorder = [0]
    calls = []
    for w in range(n_watch):
        call = ws[w % len(ws)].Watch()
        try:
            await call.write(
                rpc_pb2.WatchRequest(
                    create_request=rpc_pb2.WatchCreateRequest(key=pfx, range_end=_prefix_end(pfx))
                )
            )
            first = await asyncio.wait_for(call.read(), cfg.timeout)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                raise Unimplemented(f"Watch: {exc.details()}") from None
            raise
        if not isinstance(first, rpc_pb2.WatchResponse) or not first.created:
            raise RuntimeError(f"watch not created: {first}")
        calls.append(call)

    hist = st.hist

    async def reader(w: int, call: Any) -> None:
        last_rev = 0
        while True:
            resp = await call.read()
            if resp is grpc.aio.EOF:
                return
            now = time.monotonic_ns()
            for ev in resp.events:
                rev = ev.kv.mod_revision
                if rev <= last_rev:
                    disorder[0] += 1
                last_rev = rev
                sent = int.from_bytes(ev.kv.value[:_TS_BYTES], "big")
                hist.record((now - sent) // 1000)
                delivered[w] += 1

    readers = [asyncio.create_task(reader(w, c)) for w, c in enumerate(calls)]
    pad = rng.randbytes(max(0, cfg.val_size - _TS_BYTES))
    seq = [0]
    writes = _WorkerState(deadline=0.0)
    start = await _start(cfg, index, shared, st)
    writes.left, writes.deadline, writes.stopping = st.left, st.deadline, st.stopping
    cpu0 = _cpu_self()

    async def put(c: int, _k: int) -> None:
        seq[0] += 1
        key = pfx + b"%d-%d" % (index, seq[0])
        value = time.monotonic_ns().to_bytes(_TS_BYTES, "big") + pad
        await kv[c % len(kv)].Put(rpc_pb2.PutRequest(key=key, value=value), timeout=cfg.timeout)

    async def tick() -> None:
        while True:
            shared.progress[2 * index] = sum(delivered)
            shared.progress[2 * index + 1] = sum(writes.errors.values())
            if shared.stop.is_set():
                writes.stopping = st.stopping = True
            await asyncio.sleep(0.1)

    ticker = asyncio.create_task(tick())
    try:
        await _closed_loop(cfg, writes, n_conc, put)
        shared.writes_ok[index] = writes.ok
        with shared.writers_done.get_lock():
            shared.writers_done.value += 1
        # Drain: until every watcher here has every write of every worker, or no progress.
        last, last_change = -1, time.monotonic()
        while True:
            done = shared.writers_done.value >= cfg.processes
            expected = sum(shared.writes_ok[:]) if done else -1
            got = sum(delivered)
            if done and all(d >= expected for d in delivered):
                break
            if got != last:
                last, last_change = got, time.monotonic()
            elif time.monotonic() - last_change > cfg.drain_timeout or shared.stop.is_set():
                break
            await asyncio.sleep(0.02)
        end = time.monotonic()
    finally:
        ticker.cancel()
        for r in readers:
            r.cancel()
        for call in calls:
            call.cancel()
    st.ok = sum(delivered)
    st.errors = writes.errors
    st.write_hist = writes.hist
    st.last_end = end
    return _result(
        index,
        st,
        start,
        cpu0,
        watchers=n_watch,
        writes_ok=writes.ok,
        delivered=sum(delivered),
        delivered_min=min(delivered, default=0),
        out_of_order=disorder[0],
        write_end=writes.last_end,
    )


_WORKLOAD_RUNNERS: dict[str, Callable[..., Awaitable[dict[str, Any]]]] = {
    "put": _run_kv,
    "range": _run_kv,
    "txn": _run_kv,
    "lease": _run_lease,
    "watch": _run_watch,
}


# -- the parent: start workers, show progress, merge ----------------------------------------------


def _progress_line(cfg: BenchConfig, elapsed: float, ok: int, errs: int) -> str:
    what = "events" if cfg.workload == "watch" else "ok"
    rate = ok / elapsed if elapsed > 0 else 0.0
    bar = ""
    if cfg.total > 0 and cfg.workload != "watch":
        frac = min(1.0, (ok + errs) / cfg.total)
        bar = "[" + "#" * int(frac * 20) + "-" * (20 - int(frac * 20)) + f"] {frac:4.0%} "
    elif cfg.duration > 0:
        frac = min(1.0, elapsed / cfg.duration)
        bar = "[" + "#" * int(frac * 20) + "-" * (20 - int(frac * 20)) + f"] {frac:4.0%} "
    name = f"{cfg.label} " if cfg.label else ""
    return (
        f"{name}{cfg.workload} {bar}{elapsed:6.1f}s {ok:>9,} {what} {rate:>9,.0f}/s {errs:,} errors"
    )


@contextlib.contextmanager
def _bare_main() -> Iterator[None]:
    """Spawned workers import only this module, not the parent's ``__main__``.

    multiprocessing's spawn re-runs the parent's main script (the ``raftkv`` console script,
    so the whole CLI, storage included) in every worker unless ``__main__`` has neither a
    ``__spec__`` nor a ``__file__``. Hiding both while the workers start keeps their start-up
    short and independent of the rest of the installation.
    """
    main = sys.modules["__main__"]
    saved: dict[str, Any] = {
        k: main.__dict__[k] for k in ("__spec__", "__file__") if k in main.__dict__
    }
    main.__dict__.pop("__file__", None)
    main.__dict__["__spec__"] = None
    try:
        yield
    finally:
        main.__dict__.pop("__spec__", None)
        main.__dict__.update(saved)


def run_bench(cfg: BenchConfig) -> dict[str, Any]:
    """Run one workload; returns the report (see ``format_report``). Never raises on
    UNIMPLEMENTED: the report's ``status`` is then ``"unimplemented"``."""
    cfg.check()
    nproc = min(cfg.processes, max(1, cfg.concurrency))
    if cfg.workload == "watch":
        nproc = min(cfg.processes, max(1, cfg.watchers))
    if not cfg.label and cfg.workload == "watch":
        cfg = replace(cfg, label=f"{os.getpid()}-{time.time_ns() % 10**9}")
    cfg = replace(cfg, processes=nproc)
    ctx = mp.get_context("spawn")
    shared = _Shared(
        ready=ctx.Value("i", 0),
        go=ctx.Event(),
        stop=ctx.Event(),
        start_at=ctx.Value("d", 0.0),
        progress=ctx.Array("q", 2 * nproc, lock=False),
        writes_ok=ctx.Array("q", nproc, lock=False),
        writers_done=ctx.Value("i", 0),
    )
    out = ctx.Queue()
    cfg_json = json.dumps(asdict(cfg))
    cpu_tree0 = _cpu_tree()
    procs = [
        ctx.Process(target=_worker_entry, args=(cfg_json, i, shared, out), daemon=True)
        for i in range(nproc)
    ]
    with _bare_main():
        for p in procs:
            p.start()
    results: list[dict[str, Any]] = []
    tty = sys.stderr.isatty()
    interrupted = False
    try:
        # Wait until every worker is connected (and its watchers created), or one failed.
        while shared.ready.value < nproc:
            with contextlib.suppress(queue.Empty):
                results.append(out.get(timeout=0.05))
            if any("fatal" in r or "unimplemented" in r for r in results):
                break
            if any(not p.is_alive() for p in procs):  # no worker ends before the start
                with contextlib.suppress(queue.Empty):
                    results.append(out.get(timeout=0.5))
                break
        shared.start_at.value = time.monotonic() + 0.02
        shared.go.set()
        start = shared.start_at.value
        last_print = 0.0
        while len(results) < nproc:
            try:
                results.append(out.get(timeout=0.1))
            except queue.Empty:
                if all(not p.is_alive() for p in procs):
                    with contextlib.suppress(queue.Empty):
                        while True:
                            results.append(out.get(timeout=0.5))
                    break
            if any("fatal" in r or "unimplemented" in r for r in results):
                shared.stop.set()
            now = time.monotonic()
            if cfg.progress and now - last_print >= (0.5 if tty else 5.0) and now > start:
                last_print = now
                prog = list(shared.progress[:])
                line = _progress_line(cfg, now - start, sum(prog[0::2]), sum(prog[1::2]))
                click.echo(("\r" + line + "\033[K") if tty else line, err=True, nl=not tty)
    except KeyboardInterrupt:
        interrupted = True
        shared.stop.set()
        deadline = time.monotonic() + 10
        while len(results) < nproc and time.monotonic() < deadline:
            with contextlib.suppress(queue.Empty, KeyboardInterrupt):
                results.append(out.get(timeout=0.2))
    finally:
        if cfg.progress and tty:
            click.echo("", err=True)
        for p in procs:
            p.join(timeout=5)
            if p.is_alive():
                p.kill()
                p.join()
    cpu_tree = _cpu_tree() - cpu_tree0
    reported = {r["worker"] for r in results}
    lost = [f"{i} (exit code {p.exitcode})" for i, p in enumerate(procs) if i not in reported]
    return _merge(cfg, results, nproc, cpu_tree, interrupted, lost)


def _merge(
    cfg: BenchConfig,
    results: list[dict[str, Any]],
    nproc: int,
    cpu_tree: float,
    interrupted: bool,
    lost: Sequence[str] = (),
) -> dict[str, Any]:
    report: dict[str, Any] = {
        "workload": cfg.workload,
        "config": {k: v for k, v in asdict(cfg).items() if k != "progress"},
        "status": "ok",
    }
    unimpl = [r["unimplemented"] for r in results if "unimplemented" in r]
    fatal = [r["fatal"] for r in results if "fatal" in r]
    if unimpl:
        report.update(status="unimplemented", error=unimpl[0])
        return report
    if fatal or len(results) < nproc:
        report.update(
            status="failed", error=fatal[0] if fatal else f"no report from worker {', '.join(lost)}"
        )
        return report
    hist, write_hist = Histogram(), Histogram()
    errors: dict[str, int] = {}
    extra: dict[str, int] = {}
    for r in results:
        hist.merge(Histogram.from_json(r["hist"]))
        if r.get("write_hist"):
            write_hist.merge(Histogram.from_json(r["write_hist"]))
        for code, n in r["errors"].items():
            errors[code] = errors.get(code, 0) + n
        for k, v in r["extra"].items():
            if k == "write_end":
                continue
            extra[k] = min(extra.get(k, v), v) if k == "delivered_min" else extra.get(k, 0) + v
    start = min(r["start"] for r in results)
    end = max(r["end"] for r in results)
    wall = max(1e-9, end - start)
    ok = sum(r["ok"] for r in results)
    cpu = sum(r["cpu_s"] for r in results)
    report.update(
        ok=ok,
        errors=errors,
        duration_s=round(wall, 4),
        throughput=round(ok / wall, 1),
        latency_ms=_latency(hist),
        histogram_ms=[[round(u, 3), c] for u, c in hist.linear_buckets()],
        hist=hist.to_json(),
        generator={
            "processes": nproc,
            "cpu_s": round(cpu, 3),
            "cpu_pct": round(100 * cpu / wall, 1),
            "cpu_tree_s": round(cpu_tree, 3),
            "cores": os.cpu_count() or 1,
        },
        interrupted=interrupted,
    )
    if cfg.workload == "watch":
        write_wall = max(1e-9, max(r["extra"]["write_end"] for r in results) - start)
        expected = extra["writes_ok"] * cfg.watchers
        extra["expected"] = expected
        extra["missing"] = max(0, expected - extra["delivered"])
        report["writes"] = {
            "ok": extra["writes_ok"],
            "throughput": round(extra["writes_ok"] / write_wall, 1),
            "latency_ms": _latency(write_hist),
        }
    if extra:
        report["extra"] = extra
    return report


def _latency(h: Histogram) -> dict[str, float]:
    ms = 1000.0
    return {
        "min": h.min_us / ms,
        "mean": round(h.mean_us() / ms, 3),
        "p50": h.percentile(0.50) / ms,
        "p90": h.percentile(0.90) / ms,
        "p99": h.percentile(0.99) / ms,
        "p999": h.percentile(0.999) / ms,
        "max": h.max_us / ms,
    }


def format_report(r: dict[str, Any]) -> str:
    c = r["config"]
    lines = [f"Workload: {r['workload']}  endpoints: {','.join(c['endpoints'])}"]
    if r["status"] == "unimplemented":
        lines.append(f"  the server does not implement it: UNIMPLEMENTED ({r['error']})")
        return "\n".join(lines)
    if r["status"] != "ok":
        lines.append(f"  failed: {r['error']}")
        return "\n".join(lines)
    lat, gen = r["latency_ms"], r["generator"]
    what = "events delivered" if r["workload"] == "watch" else "requests ok"
    lines += [
        f"  {c['concurrency']} in flight, {c['conns']} conns, {c['clients']} clients, "
        f"{gen['processes']} processes"
        + (f", rate {c['rate']:g}/s" if c["rate"] else "")
        + (f", {c['watchers']} watchers" if r["workload"] == "watch" else "")
        + (f", consistency {c['consistency']}" if r["workload"] in ("range", "txn") else ""),
        "",
        "Summary:",
        f"  Total:\t{r['duration_s']:.4f} s" + ("  (interrupted)" if r["interrupted"] else ""),
        f"  {what}:\t{r['ok']}",
        f"  Throughput:\t{r['throughput']:,.1f} /s",
        f"  Slowest:\t{lat['max']:.3f} ms",
        f"  Fastest:\t{lat['min']:.3f} ms",
        f"  Average:\t{lat['mean']:.3f} ms",
        "",
        "Response time histogram (ms):",
    ]
    hist = r["histogram_ms"]
    top = max((cnt for _, cnt in hist), default=0)
    for upper, cnt in hist:
        bar = "∎" * (round(40 * cnt / top) if top else 0)
        lines.append(f"  {upper:10.3f} [{cnt}]\t|{bar}")
    lines += ["", "Latency distribution:"]
    for key, label in (("p50", "50%"), ("p90", "90%"), ("p99", "99%"), ("p999", "99.9%")):
        lines.append(f"  {label} in {lat[key]:.3f} ms")
    lines.append(f"  max   {lat['max']:.3f} ms")
    if r["errors"]:
        lines += ["", "Errors:"] + [f"  {k}: {v}" for k, v in sorted(r["errors"].items())]
    else:
        lines += ["", "Errors: none"]
    if r["workload"] == "watch":
        x, w = r["extra"], r["writes"]
        lines += [
            "",
            f"Watch: {x['writes_ok']} writes ({w['throughput']:,.1f}/s, p50 "
            f"{w['latency_ms']['p50']:.3f} ms, p99 {w['latency_ms']['p99']:.3f} ms) x "
            f"{c['watchers']} watchers = {x['expected']} events expected, {x['delivered']} "
            f"delivered, {x['missing']} missing, {x['out_of_order']} out of order",
        ]
    if r["workload"] == "txn":
        x = r["extra"]
        lines += ["", f"CAS: {x['cas_succeeded']} succeeded, {x['cas_conflicts']} conflicts"]
    lines += [
        "",
        f"Load generator: {gen['cpu_s']:.2f} CPU s over {r['duration_s']:.2f} s = "
        f"{gen['cpu_pct']:.0f}% of one core ({gen['cores']} cores here); "
        f"process tree incl. start-up {gen['cpu_tree_s']:.2f} CPU s",
    ]
    if gen["cpu_pct"] > 80 * gen["processes"]:
        lines.append(
            "  warning: the generator's processes were nearly saturated; the numbers may be "
            "its limit (try more --processes)"
        )
    return "\n".join(lines)


# -- the command line -----------------------------------------------------------------------------


def _emit(report: dict[str, Any], write_out: str) -> None:
    if write_out == "json":
        click.echo(json.dumps({k: v for k, v in report.items() if k != "hist"}, indent=2))
    else:
        click.echo(format_report(report))
    if report["status"] == "unimplemented":
        sys.exit(EXIT_UNIMPLEMENTED)
    if report["status"] != "ok":
        sys.exit(1)


def _common_options(f: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option(
            "--endpoints",
            default="127.0.0.1:2379",
            show_default=True,
            help="Comma-separated host:port list; connections go round-robin over them.",
        ),
        click.option("--clients", default=1, show_default=True, help="gRPC client stubs."),
        click.option("--conns", default=1, show_default=True, help="TCP connections (channels)."),
        click.option(
            "--concurrency", default=1, show_default=True, help="Requests in flight, in total."
        ),
        click.option("--key-size", default=8, show_default=True, help="Key size in bytes."),
        click.option("--val-size", default=256, show_default=True, help="Value size in bytes."),
        click.option("--key-space", default=10_000, show_default=True, help="Distinct keys."),
        click.option("--sequential-keys", is_flag=True, help="Keys in order, not at random."),
        click.option("--prefix", default="", help="Key prefix."),
        click.option(
            "--total", default=0, help="Operations to run (default 10000 without --duration)."
        ),
        click.option("--duration", default=0.0, help="Seconds to run (instead of --total)."),
        click.option("--rate", default=0.0, help="Operations per second, 0: unlimited."),
        click.option("--processes", default=1, show_default=True, help="Load generator processes."),
        click.option(
            "--timeout", default=10.0, show_default=True, help="Per-request deadline (s)."
        ),
        click.option(
            "-w",
            "--write-out",
            type=click.Choice(["simple", "json"]),
            default="simple",
            show_default=True,
        ),
        click.option("--quiet", is_flag=True, help="No progress line on stderr."),
    ]
    for opt in reversed(options):
        f = opt(f)
    return f


def _config(workload: str, params: dict[str, Any]) -> BenchConfig:
    total, duration = int(params.pop("total")), float(params.pop("duration"))
    if total <= 0 and duration <= 0:
        total = 10_000
    write_out = params.pop("write_out")
    quiet = params.pop("quiet")
    del write_out
    endpoints = tuple(e.strip() for e in str(params.pop("endpoints")).split(",") if e.strip())
    return BenchConfig(
        workload=workload,
        endpoints=endpoints,
        total=total,
        duration=duration,
        progress=not quiet,
        **params,
    )


def _workload_command(workload: str, help_text: str, extra: Sequence[Any] = ()) -> click.Command:
    def callback(**params: Any) -> None:
        write_out = params["write_out"]
        cfg = _config(workload, dict(params))
        cfg.check()
        _emit(run_bench(cfg), write_out)

    cmd: Callable[..., Any] = _common_options(callback)
    for opt in reversed(list(extra)):
        cmd = opt(cmd)
    return click.command(workload, help=help_text)(cmd)


bench_group = click.Group(
    "bench",
    help="Load generator for etcd v3 API endpoints (raftkv or etcd); see also `bench compare`.",
)
_CONSISTENCY = click.option(
    "--consistency",
    type=click.Choice(["l", "s"]),
    default="l",
    show_default=True,
    help="l: linearizable, s: serializable.",
)
_PREFILL = click.option("--prefill", is_flag=True, help="Write every key once before the run.")
bench_group.add_command(_workload_command("put", "Put a value on random keys."))
bench_group.add_command(
    _workload_command("range", "Range one random key.", [_CONSISTENCY, _PREFILL])
)
bench_group.add_command(
    _workload_command(
        "txn",
        "Compare-and-set: read a key's mod_revision, then Txn(MOD == rev ? put).",
        [_CONSISTENCY, _PREFILL],
    )
)
bench_group.add_command(
    _workload_command(
        "watch",
        "Watch fan-out: --watchers streams on a prefix; writers put at --rate; measures "
        "write-to-delivery latency and counts delivered events.",
        [
            click.option("--watchers", default=100, show_default=True),
            click.option(
                "--drain-timeout",
                default=5.0,
                show_default=True,
                help="Stop waiting for missing events after this long without progress.",
            ),
        ],
    )
)
bench_group.add_command(
    _workload_command("lease", "LeaseKeepAlive round trips, one stream per in-flight request.")
)


# -- bench compare: etcd and raftkv side by side --------------------------------------------------

ETCD = shutil.which("etcd") or "/usr/bin/etcd"
ETCDCTL = shutil.which("etcdctl") or "/usr/bin/etcdctl"


@dataclass(frozen=True)
class CompareCase:
    name: str
    workload: str
    concurrency: int
    processes: int = 2
    conns: int = 6
    consistency: str = "l"
    rate: float = 0.0
    watchers: int = 100
    prefill: bool = False
    leader_only: bool = False
    duration_scale: float = 1.0
    target: str = ""  # the target, checked by _verdict


COMPARE_CASES = (
    CompareCase("put c=1", "put", 1, processes=1, conns=1, leader_only=True, target="p50<=2x"),
    CompareCase("put c=16", "put", 16),
    CompareCase("put c=256", "put", 256, target="tput>=0.5x"),
    CompareCase("range l c=256", "range", 256, prefill=True, target="tput>=0.5x"),
    CompareCase("range s c=256", "range", 256, consistency="s", target="tput>=0.5x"),
    CompareCase("txn CAS c=64", "txn", 64, target="tput>=0.5x"),
    CompareCase("watch 100x1000/s", "watch", 64, rate=1000, target="all+p99<=2x"),
    CompareCase("watch 100x100/s", "watch", 16, rate=100, target="all+p99<=2x"),
    CompareCase("lease keepalive c=64", "lease", 64),
)


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def low_free_ports(n: int, start: int | None = None) -> list[int]:
    """``n`` free loopback ports below 32768 (the ephemeral range collides with clients)."""
    base = start if start is not None else 20_000 + (os.getpid() % 300) * 40
    ports: list[int] = []
    port = base
    while len(ports) < n:
        if port >= 32_768:
            port = 10_000
        if _port_free(port):
            ports.append(port)
        port += 1
    return ports


@dataclass
class Member:
    name: str
    client_port: int
    peer_port: int
    proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"


class LocalCluster:
    """Three members of etcd or raftkv on loopback, default flags, own data and log files."""

    def __init__(self, kind: str, root: Path, ports: Sequence[int]) -> None:
        self.kind, self.root = kind, root
        short = "e" if kind == "etcd" else "r"
        self.members = [
            Member(f"{short}{i + 1}", ports[2 * i], ports[2 * i + 1])
            for i in range(len(ports) // 2)
        ]

    @property
    def endpoints(self) -> list[str]:
        return [m.endpoint for m in self.members]

    def start(self) -> None:
        initial = ",".join(f"{m.name}=http://127.0.0.1:{m.peer_port}" for m in self.members)
        for m in self.members:
            exe = [ETCD] if self.kind == "etcd" else [sys.executable, "-m", "raftkv_cli", "node"]
            args = [
                *exe,
                "--name", m.name,
                "--data-dir", str(self.root / m.name),
                "--listen-client-urls", f"http://{m.endpoint}",
                "--advertise-client-urls", f"http://{m.endpoint}",
                "--listen-peer-urls", f"http://127.0.0.1:{m.peer_port}",
                "--initial-advertise-peer-urls", f"http://127.0.0.1:{m.peer_port}",
                "--initial-cluster", initial,
                "--initial-cluster-state", "new",
                "--initial-cluster-token", f"bench-{self.kind}",
            ]  # fmt: skip
            log = open(self.root / f"{m.name}.log", "ab")  # noqa: SIM115 (owned by the child)
            m.proc = subprocess.Popen(
                args,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C reaches us; we stop the members
                preexec_fn=_die_with_parent,
            )
            log.close()

    def status(self, endpoint: str) -> rpc_pb2.StatusResponse | None:
        with grpc.insecure_channel(endpoint) as ch:
            try:
                return rpc_pb2_grpc.MaintenanceStub(ch).Status(rpc_pb2.StatusRequest(), timeout=1)
            except grpc.RpcError:
                return None

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for m in self.members:
                if m.proc is not None and m.proc.poll() is not None:
                    raise click.ClickException(
                        f"{self.kind} member {m.name} exited ({m.proc.returncode}); "
                        f"see {self.root / (m.name + '.log')}"
                    )
            sts = [self.status(e) for e in self.endpoints]
            if all(s is not None and s.leader for s in sts):
                with grpc.insecure_channel(self.endpoints[0]) as ch:
                    try:
                        rpc_pb2_grpc.KVStub(ch).Put(
                            rpc_pb2.PutRequest(key=b"bench-ready", value=b"1"), timeout=5
                        )
                        return
                    except grpc.RpcError:
                        pass
            time.sleep(0.2)
        raise click.ClickException(f"{self.kind} cluster not ready in {timeout_s} s")

    def leader_endpoint(self) -> str:
        for m in self.members:
            st = self.status(m.endpoint)
            if st is not None and st.leader == st.header.member_id:
                return m.endpoint
        return self.endpoints[0]

    def cpu_seconds(self) -> float:
        """User + system CPU seconds the members have used so far, all threads, together."""
        return sum(process_cpu_seconds(m.proc.pid) for m in self.members if m.proc is not None)

    def rss_mib(self) -> list[float]:
        out = []
        for m in self.members:
            try:
                text = Path(f"/proc/{m.proc.pid if m.proc else 0}/status").read_text()
                kib = next(int(ln.split()[1]) for ln in text.splitlines() if ln.startswith("VmRSS"))
                out.append(round(kib / 1024, 1))
            except (OSError, StopIteration):
                out.append(0.0)
        return out

    def stop(self) -> None:
        live = [m.proc for m in self.members if m.proc is not None and m.proc.poll() is None]
        for p in live:
            with contextlib.suppress(ProcessLookupError):
                p.terminate()
        deadline = time.monotonic() + 10
        for p in live:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (all its threads), from /proc; 0.0 once it is
    gone."""
    try:
        # Fields after the command name, which may itself contain spaces and parentheses:
        # state is field 3, utime 14 and stime 15 (proc(5)).
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = int(fields[11]) + int(fields[12])
    except (OSError, IndexError, ValueError):
        return 0.0
    return ticks / os.sysconf("SC_CLK_TCK")


_CHECK_PERF_SECONDS = 60
"""How long ``etcdctl check perf`` writes, at every load."""

_CHECK_PERF_THROUGHPUT = re.compile(r"Throughput (?:is|too low:) (\d+) writes/s")


def check_perf_writes_per_s(summary: Sequence[str]) -> int | None:
    """The writes/s that ``etcdctl check perf`` reported, pass or fail; None if it did not."""
    for line in summary:
        m = _CHECK_PERF_THROUGHPUT.search(line)
        if m:
            return int(m.group(1))
    return None


def server_cpu(cpu_s: float, wall_s: float, ops: float | None) -> dict[str, float | None]:
    """The members' CPU over a run: % of one core, and milliseconds (all members together) per
    operation."""
    return {
        "server_cpu_pct": round(100 * cpu_s / wall_s, 1) if wall_s > 0 else None,
        "server_cpu_ms_per_op": round(1000 * cpu_s / ops, 3) if ops else None,
    }


def check_perf(endpoints: Sequence[str], load: str) -> dict[str, Any]:
    """``etcdctl check perf --load=<load>``: pass/fail and its summary lines."""
    cmd = [ETCDCTL, f"--endpoints={','.join(endpoints)}", "check", "perf", f"--load={load}"]
    env = {**os.environ, "ETCDCTL_API": "3"}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)
    except subprocess.TimeoutExpired:
        return {"load": load, "passed": False, "summary": ["timed out after 240 s"]}
    text = (proc.stdout + proc.stderr).replace("\r", "\n")
    summary = [
        ln.strip() for ln in text.splitlines() if ln.strip().startswith(("PASS", "FAIL", "Error"))
    ]
    passed = proc.returncode == 0 and not any(s.startswith("FAIL") for s in summary)
    return {"load": load, "passed": passed, "exit_code": proc.returncode, "summary": summary}


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or not b:
        return None
    return round(a / b, 3)


def _metrics(r: dict[str, Any]) -> dict[str, Any]:
    if r["status"] != "ok":
        return {"status": r["status"], "error": r.get("error", "")}
    m: dict[str, Any] = {
        "status": "ok",
        "throughput": r["throughput"],
        "p50_ms": r["latency_ms"]["p50"],
        "p99_ms": r["latency_ms"]["p99"],
        "errors": sum(r["errors"].values()),
        "generator_cpu_pct": r["generator"]["cpu_pct"],
    }
    if r["workload"] == "watch":
        m["missing"] = r["extra"]["missing"]
        m["writes_per_s"] = r["writes"]["throughput"]
    return m


def _verdict(case: CompareCase, e: dict[str, Any], k: dict[str, Any]) -> str:
    if not case.target:
        return ""
    if k.get("status") != "ok":
        return f"miss ({k.get('status')})"
    if e.get("status") != "ok":
        return "n/a (etcd failed)"
    tput, p50, p99 = (
        _ratio(k["throughput"], e["throughput"]),
        _ratio(k["p50_ms"], e["p50_ms"]),
        _ratio(k["p99_ms"], e["p99_ms"]),
    )
    if case.target == "tput>=0.5x":
        ok = tput is not None and tput >= 0.5
    elif case.target == "p50<=2x":
        ok = p50 is not None and p50 <= 2
    else:
        want = 0.9 * case.rate
        if min(e.get("writes_per_s", 0), k.get("writes_per_s", 0)) < want:
            return "inconclusive: writes/s below the rate (the generator or server saturated)"
        ok = k.get("missing") == 0 and p99 is not None and p99 <= 2
    return f"{'met' if ok else 'MISSED'} ({case.target})"


def _fmt(v: float | None, digits: int = 2) -> str:
    return "—" if v is None else f"{v:,.{digits}f}"


def _cpu_cell(m: dict[str, Any]) -> str:
    pct, per_op = m.get("server_cpu_pct"), m.get("server_cpu_ms_per_op")
    return f"{_fmt(pct, 0)}% ({_fmt(per_op, 3)} ms/op)"


def compare_markdown(res: dict[str, Any]) -> str:
    rows = [
        f"Measured {res['date']} on {res['machine']}, command: `{res['command']}`",
        "",
        "| workload | etcd ops/s | raftkv ops/s | ratio | etcd p50 ms | raftkv p50 ms | ratio "
        "| etcd p99 ms | raftkv p99 ms | ratio | target |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for row in res["rows"]:
        e, k = row["etcd"], row["raftkv"]

        def cell(m: dict[str, Any], key: str) -> str:
            if m.get("status") != "ok":
                return str(m.get("status"))
            return _fmt(m.get(key), 0 if key == "throughput" else 2)

        rows.append(
            f"| {row['name']} | {cell(e, 'throughput')} | {cell(k, 'throughput')} | "
            f"{_fmt(row['ratio_throughput'])} | {cell(e, 'p50_ms')} | {cell(k, 'p50_ms')} | "
            f"{_fmt(row['ratio_p50'])} | {cell(e, 'p99_ms')} | {cell(k, 'p99_ms')} | "
            f"{_fmt(row['ratio_p99'])} | {row['verdict']} |"
        )
    watch_rows = [row for row in res["rows"] if row["workload"] == "watch"]
    if watch_rows:
        rows += ["", "Watch rows: ops/s is events delivered per second; missing events:"]
    for row in watch_rows:
        rows.append(
            f"{row['name']}: etcd {row['etcd'].get('missing', '—')}, "
            f"raftkv {row['raftkv'].get('missing', '—')}; writes/s etcd "
            f"{row['etcd'].get('writes_per_s', '—')}, raftkv "
            f"{row['raftkv'].get('writes_per_s', '—')}"
        )
    rows += ["", "Load generator CPU (% of one core, all its processes) per run:"]
    for row in res["rows"]:
        rows.append(
            f"{row['name']}: etcd {row['etcd'].get('generator_cpu_pct', '—')}%, "
            f"raftkv {row['raftkv'].get('generator_cpu_pct', '—')}%"
        )
    if res.get("check_perf"):
        rows += ["", "| etcdctl check perf | etcd | raftkv |", "|---|---|---|"]
        for load, per in res["check_perf"].items():

            def pf(x: dict[str, Any]) -> str:
                bad = [ln for ln in x["summary"] if not ln.startswith("PASS") and ln != "FAIL"]
                return "PASS" if x["passed"] else "; ".join(bad[:3])[:200] or "FAIL"

            rows.append(f"| --load={load} | {pf(per['etcd'])} | {pf(per['raftkv'])} |")
    cpu_lines = [
        f"{row['name']}: etcd {_cpu_cell(row['etcd'])}, raftkv {_cpu_cell(row['raftkv'])}"
        for row in res["rows"]
        if "server_cpu_pct" in row["etcd"] or "server_cpu_pct" in row["raftkv"]
    ]
    cpu_lines += [
        f"check perf --load={load}: etcd {_cpu_cell(per['etcd'])}, "
        f"raftkv {_cpu_cell(per['raftkv'])}"
        for load, per in res.get("check_perf", {}).items()
        if "server_cpu_pct" in per["etcd"] or "server_cpu_pct" in per["raftkv"]
    ]
    if cpu_lines:
        rows += [
            "",
            "Members' CPU per run (all three together, whole run; % of one core, ms per "
            "operation):",
            *cpu_lines,
        ]
    rss = res.get("rss_mib", {})
    if rss:
        rows += [
            "",
            f"RSS after the runs (MiB per member): etcd {rss.get('etcd')}, raftkv "
            f"{rss.get('raftkv')}",
        ]
    return "\n".join(rows) + "\n"


def compare_run(
    duration: float,
    out_dir: Path,
    check_loads: Sequence[str],
    only: Sequence[str],
    keep: bool,
    command: str,
) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="raftkv-compare-"))
    ports = low_free_ports(12)
    clusters = {
        "etcd": LocalCluster("etcd", root, ports[:6]),
        "raftkv": LocalCluster("raftkv", root, ports[6:]),
    }
    failed = True

    def on_term(_sig: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, on_term)
    res: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.node()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, grpcio {grpc.__version__}",
        "command": command,
        "rows": [],
        "check_perf": {},
    }
    try:
        for name, c in clusters.items():
            click.echo(f"starting {name} on {', '.join(c.endpoints)} (data in {root})", err=True)
            c.start()
        for c in clusters.values():
            c.wait_ready()
        cases = [c for c in COMPARE_CASES if not only or any(o in c.name for o in only)]
        for i, case in enumerate(cases):
            row: dict[str, Any] = {"name": case.name, "workload": case.workload}
            order = ["etcd", "raftkv"] if i % 2 == 0 else ["raftkv", "etcd"]
            for kind in order:
                cl = clusters[kind]
                eps = [cl.leader_endpoint()] if case.leader_only else cl.endpoints
                cfg = BenchConfig(
                    workload=case.workload,
                    endpoints=tuple(eps),
                    clients=case.conns,
                    conns=case.conns,
                    concurrency=case.concurrency,
                    processes=case.processes,
                    consistency=case.consistency,
                    rate=case.rate,
                    watchers=case.watchers,
                    prefill=case.prefill,
                    duration=duration * case.duration_scale,
                    label=f"{kind}-{i}",
                )
                cpu0, wall0 = cl.cpu_seconds(), time.monotonic()
                report = run_bench(cfg)
                row[kind] = _metrics(report)
                # The whole run, connection set-up and any prefill included.
                row[kind].update(
                    server_cpu(cl.cpu_seconds() - cpu0, time.monotonic() - wall0, report.get("ok"))
                )
                row[f"{kind}_report"] = {k: v for k, v in report.items() if k != "hist"}
                click.echo(f"  {case.name} on {kind}: {_summary(row[kind])}", err=True)
            e, k = row["etcd"], row["raftkv"]
            row["ratio_throughput"] = _ratio(k.get("throughput"), e.get("throughput"))
            row["ratio_p50"] = _ratio(k.get("p50_ms"), e.get("p50_ms"))
            row["ratio_p99"] = _ratio(k.get("p99_ms"), e.get("p99_ms"))
            row["verdict"] = _verdict(case, e, k)
            res["rows"].append(row)
        for load in check_loads:
            per = {}
            for kind, cl in clusters.items():
                click.echo(f"etcdctl check perf --load={load} against {kind} ...", err=True)
                cpu0, wall0 = cl.cpu_seconds(), time.monotonic()
                per[kind] = check_perf(cl.endpoints, load)
                rate = check_perf_writes_per_s(per[kind]["summary"])
                per[kind].update(
                    server_cpu(
                        cl.cpu_seconds() - cpu0,
                        time.monotonic() - wall0,
                        rate * _CHECK_PERF_SECONDS if rate else None,
                    )
                )
                click.echo(f"  {'PASS' if per[kind]['passed'] else 'FAIL'}", err=True)
            res["check_perf"][load] = per
        res["rss_mib"] = {kind: cl.rss_mib() for kind, cl in clusters.items()}
        failed = False
    finally:
        for c in clusters.values():
            c.stop()
        signal.signal(signal.SIGTERM, old)
        if keep or failed:
            click.echo(f"logs and data kept in {root}", err=True)
        else:
            shutil.rmtree(root, ignore_errors=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    (out_dir / f"compare-{stamp}.json").write_text(json.dumps(res, indent=2) + "\n")
    md = compare_markdown(res)
    (out_dir / f"compare-{stamp}.md").write_text(md)
    res["files"] = [str(out_dir / f"compare-{stamp}.json"), str(out_dir / f"compare-{stamp}.md")]
    return res


def _summary(m: dict[str, Any]) -> str:
    if m["status"] != "ok":
        return f"{m['status']}: {m.get('error', '')}"
    s = f"{m['throughput']:,.0f}/s p50 {m['p50_ms']:.2f} ms p99 {m['p99_ms']:.2f} ms"
    if "missing" in m:
        s += f", {m['missing']} missing"
    return s + f", generator {m['generator_cpu_pct']:.0f}% CPU"


@bench_group.command("compare")
@click.option("--duration", default=10.0, show_default=True, help="Seconds per workload run.")
@click.option(
    "--out",
    "out_dir",
    default="bench/results",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Where the JSON and markdown results go.",
)
@click.option(
    "--check-perf",
    "check_loads",
    default="s,m",
    show_default=True,
    help="etcdctl check perf loads to run against each ('' for none).",
)
@click.option("--only", default="", help="Comma-separated substrings of workload names to run.")
@click.option("--keep", is_flag=True, help="Keep the data directories and logs.")
def compare_command(
    duration: float, out_dir: Path, check_loads: str, only: str, keep: bool
) -> None:
    """Start a 3-member etcd and a 3-member raftkv here, run the same workloads against both,
    print the raftkv/etcd ratios and write them to --out (JSON and markdown)."""
    for exe in (ETCD, ETCDCTL):
        if not Path(exe).exists():
            raise click.ClickException(f"{exe} not found: install Debian's etcd-server/etcd-client")
    args = sys.argv[sys.argv.index("compare") + 1 :] if "compare" in sys.argv else sys.argv[1:]
    command = "raftkv bench compare " + " ".join(args)
    res = compare_run(
        duration,
        out_dir,
        [x for x in check_loads.split(",") if x],
        [x for x in only.split(",") if x],
        keep,
        command.strip(),
    )
    click.echo(compare_markdown(res))
    click.echo("written: " + ", ".join(res["files"]), err=True)


def compare_main() -> None:
    """Entry point of ``python bench/compare.py``."""
    compare_command(prog_name="bench/compare.py")
