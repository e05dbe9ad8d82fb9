"""The plumbing every workload runs on inside a worker process.

The parent and its workers share a few counters and events (``SharedState``): each worker
reports ready, waits for the parent's go and common start time, publishes its progress every
0.1 s, and stops early when the parent says so. A workload is an operation that
``closed_loop`` calls from ``--concurrency`` coroutines, optionally paced by a ``RateLimiter``.
"""

from __future__ import annotations

import asyncio
import os
import random
import resource
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from multiprocessing.sharedctypes import Synchronized, SynchronizedArray
from typing import Any

import grpc
from raftkv_cli.bench.config import BenchConfig, share
from raftkv_cli.bench.histogram import Histogram

__all__ = [
    "RateLimiter",
    "SharedState",
    "Unimplemented",
    "WorkerState",
    "closed_loop",
    "cpu_seconds_self",
    "cpu_seconds_tree",
    "open_channel",
    "publish_progress",
    "wait_for_start",
    "worker_result",
]

_MAX_MSG = 2**31 - 1


class Unimplemented(Exception):
    """The server does not implement the service the workload needs."""


@dataclass
class SharedState:
    """Counters and events shared by the parent and all its workers."""

    ready: Synchronized[int]
    go: Any  # multiprocessing.Event
    stop: Any  # multiprocessing.Event
    start_at: Synchronized[float]
    progress: SynchronizedArray[int]  # per worker: ok, errors
    writes_ok: SynchronizedArray[int]  # watch: per worker
    writers_done: Synchronized[int]


@dataclass
class WorkerState:
    """One worker's measurements and its share of the run's limits."""

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


class RateLimiter:
    """Spaces operations evenly at ``rate`` per second (0: no limit), shared by coroutines."""

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


def cpu_seconds_self() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def cpu_seconds_tree() -> float:
    """This process's CPU and its reaped children's (the workers, once joined)."""
    a = resource.getrusage(resource.RUSAGE_SELF)
    b = resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime


def open_channel(endpoint: str) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(
        endpoint.removeprefix("http://"),
        options=[
            ("grpc.use_local_subchannel_pool", 1),  # a channel per connection, really
            ("grpc.max_receive_message_length", _MAX_MSG),
            ("grpc.max_send_message_length", _MAX_MSG),
        ],
    )


async def wait_for_start(
    cfg: BenchConfig, index: int, shared: SharedState, st: WorkerState
) -> float:
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
        st.left = share(cfg.total, cfg.processes, index)
    if cfg.duration > 0:
        st.deadline = start + cfg.duration
    return start


async def publish_progress(index: int, shared: SharedState, st: WorkerState) -> None:
    """Every 0.1 s until cancelled: publish the counts, and notice the parent's stop."""
    while True:
        shared.progress[2 * index] = st.ok
        shared.progress[2 * index + 1] = sum(st.errors.values())
        if shared.stop.is_set():
            st.stopping = True
        await asyncio.sleep(0.1)


def worker_result(
    index: int, st: WorkerState, start: float, cpu0: float, **extra: Any
) -> dict[str, Any]:
    """The report a worker sends to the parent (JSON-able), which ``merge_results`` reads."""
    return {
        "worker": index,
        "ok": st.ok,
        "errors": st.errors,
        "hist": st.hist.to_json(),
        "write_hist": st.write_hist.to_json() if st.write_hist.n else None,
        "start": start,
        "end": st.last_end or time.monotonic(),
        "cpu_s": cpu_seconds_self() - cpu0,
        "extra": {**st.extra, **extra},
    }


async def closed_loop(
    cfg: BenchConfig,
    st: WorkerState,
    n_conc: int,
    op: Callable[[int, int], Awaitable[None]],
) -> None:
    """``n_conc`` coroutines, each calling ``op(coroutine index, key index)`` until done."""
    limiter = RateLimiter(cfg.rate / cfg.processes if cfg.rate > 0 else 0.0)
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
