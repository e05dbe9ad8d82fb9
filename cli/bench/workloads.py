"""The five workloads, as each worker process runs them over its share of the connections.

Each is ``run(cfg, index, shared, st, chans, n_conc, rng) -> worker report``: set up (streams,
leases, a prefilled key space) before the common start, then measure one operation per call of
``closed_loop``. Looked up by name in ``WORKLOAD_RUNNERS``.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import grpc
from raftkv_cli.bench.config import BenchConfig, make_key, prefix_end, share
from raftkv_cli.bench.histogram import Histogram
from raftkv_cli.bench.worker import (
    SharedState,
    Unimplemented,
    WorkerState,
    closed_loop,
    cpu_seconds_self,
    publish_progress,
    wait_for_start,
    worker_result,
)

from raftkv.pb.etcdserverpb import rpc_pb2, rpc_pb2_grpc

__all__ = ["WORKLOAD_RUNNERS", "Operation", "WorkloadRunner"]

TIMESTAMP_BYTES = 8  # watch values start with the writer's monotonic clock, in ns (big-endian)

Operation = Callable[[int, int], Awaitable[None]]
"""One measured operation: ``op(coroutine index, key index)``."""

WorkloadRunner = Callable[
    [BenchConfig, int, SharedState, WorkerState, Sequence[grpc.aio.Channel], int, random.Random],
    Awaitable[dict[str, Any]],
]


async def _measure(
    cfg: BenchConfig, index: int, shared: SharedState, st: WorkerState, n_conc: int, op: Operation
) -> tuple[float, float]:
    """Wait for the common start, then run ``op`` in a closed loop; returns (start, CPU then)."""
    start = await wait_for_start(cfg, index, shared, st)
    cpu0 = cpu_seconds_self()
    tick = asyncio.create_task(publish_progress(index, shared, st))
    try:
        await closed_loop(cfg, st, n_conc, op)
    finally:
        tick.cancel()
    return start, cpu0


# -- put, range, txn ------------------------------------------------------------------------------


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


class _KeyValueOperations:
    """put, range and txn (compare-and-set) on the key space, spread over the stubs."""

    def __init__(self, cfg: BenchConfig, chans: Sequence[grpc.aio.Channel], value: bytes) -> None:
        self.stubs = [rpc_pb2_grpc.KVStub(ch) for ch in chans]
        self.value = value
        self.timeout = cfg.timeout
        self.keys = [make_key(cfg, k) for k in range(cfg.key_space)]
        self.serializable = cfg.consistency == "s"
        self.cas_succeeded = 0

    async def put(self, c: int, k: int) -> None:
        request = rpc_pb2.PutRequest(key=self.keys[k], value=self.value)
        await self.stubs[c % len(self.stubs)].Put(request, timeout=self.timeout)

    async def range(self, c: int, k: int) -> None:
        request = rpc_pb2.RangeRequest(key=self.keys[k], serializable=self.serializable)
        await self.stubs[c % len(self.stubs)].Range(request, timeout=self.timeout)

    async def txn(self, c: int, k: int) -> None:
        """Read the key's mod_revision, then put only if it is still that (one operation)."""
        stub, key = self.stubs[c % len(self.stubs)], self.keys[k]
        got = await stub.Range(
            rpc_pb2.RangeRequest(key=key, serializable=self.serializable), timeout=self.timeout
        )
        rev = got.kvs[0].mod_revision if got.kvs else 0
        unchanged = rpc_pb2.Compare(
            key=key, target=rpc_pb2.Compare.MOD, result=rpc_pb2.Compare.EQUAL, mod_revision=rev
        )
        put = rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=key, value=self.value))
        resp = await stub.Txn(
            rpc_pb2.TxnRequest(compare=[unchanged], success=[put]), timeout=self.timeout
        )
        if resp.succeeded:
            self.cas_succeeded += 1


async def run_key_value(
    cfg: BenchConfig,
    index: int,
    shared: SharedState,
    st: WorkerState,
    chans: Sequence[grpc.aio.Channel],
    n_conc: int,
    rng: random.Random,
) -> dict[str, Any]:
    value = rng.randbytes(cfg.val_size)
    if cfg.prefill and cfg.workload in ("range", "txn"):
        await _prefill(cfg, index, chans, value)
    ops = _KeyValueOperations(cfg, chans, value)
    op: Operation = {"put": ops.put, "range": ops.range, "txn": ops.txn}[cfg.workload]
    start, cpu0 = await _measure(cfg, index, shared, st, n_conc, op)
    extra: dict[str, Any] = {}
    if cfg.workload == "txn":
        extra = {"cas_succeeded": ops.cas_succeeded, "cas_conflicts": st.ok - ops.cas_succeeded}
    return worker_result(index, st, start, cpu0, **extra)


# -- lease ----------------------------------------------------------------------------------------


async def run_lease(
    cfg: BenchConfig,
    index: int,
    shared: SharedState,
    st: WorkerState,
    chans: Sequence[grpc.aio.Channel],
    n_conc: int,
    rng: random.Random,
) -> dict[str, Any]:
    """One lease and one keep-alive stream per coroutine; an operation is one round trip."""
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

        start, cpu0 = await _measure(cfg, index, shared, st, n_conc, keepalive)
        return worker_result(index, st, start, cpu0, leases=len(ids))
    finally:
        for call in calls:
            call.cancel()
        for c, lease_id in enumerate(ids):
            with contextlib.suppress(grpc.aio.AioRpcError):
                await stubs[c % ns].LeaseRevoke(rpc_pb2.LeaseRevokeRequest(ID=lease_id), timeout=2)


# -- watch ----------------------------------------------------------------------------------------


class _WatchFanOut:
    """One worker's watchers on a prefix and its writers under it.

    Three kinds of coroutine: ``watcher`` (one per stream) timestamps each delivered event,
    ``write`` is the closed loop's operation, and ``collect`` waits, after the writes, until every
    watcher has every write of every worker (or progress stops).
    """

    def __init__(
        self, cfg: BenchConfig, index: int, chans: Sequence[grpc.aio.Channel], rng: random.Random
    ) -> None:
        self.cfg, self.index = cfg, index
        self.prefix = ((cfg.prefix or "watch-bench/") + f"{cfg.label}/").encode()
        self.kv = [rpc_pb2_grpc.KVStub(ch) for ch in chans]
        self.watch_stubs = [rpc_pb2_grpc.WatchStub(ch) for ch in chans]
        self.delivered = [0] * share(cfg.watchers, cfg.processes, index)
        self.out_of_order = 0
        self.calls: list[Any] = []
        self.writes = WorkerState()
        self.pad = rng.randbytes(max(0, cfg.val_size - TIMESTAMP_BYTES))
        self.seq = 0

    async def open_streams(self) -> None:
        create = rpc_pb2.WatchCreateRequest(key=self.prefix, range_end=prefix_end(self.prefix))
        for w in range(len(self.delivered)):
            call = self.watch_stubs[w % len(self.watch_stubs)].Watch()
            self.calls.append(call)
            try:
                await call.write(rpc_pb2.WatchRequest(create_request=create))
                first = await asyncio.wait_for(call.read(), self.cfg.timeout)
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                    raise Unimplemented(f"Watch: {exc.details()}") from None
                raise
            if not isinstance(first, rpc_pb2.WatchResponse) or not first.created:
                raise RuntimeError(f"watch not created: {first}")

    def close_streams(self) -> None:
        for call in self.calls:
            call.cancel()

    async def watcher(self, w: int, hist: Histogram) -> None:
        last_rev = 0
        while True:
            resp = await self.calls[w].read()
            if resp is grpc.aio.EOF:
                return
            now = time.monotonic_ns()
            for ev in resp.events:
                rev = ev.kv.mod_revision
                if rev <= last_rev:
                    self.out_of_order += 1
                last_rev = rev
                sent = int.from_bytes(ev.kv.value[:TIMESTAMP_BYTES], "big")
                hist.record((now - sent) // 1000)
                self.delivered[w] += 1

    async def write(self, c: int, _k: int) -> None:
        self.seq += 1
        key = self.prefix + b"%d-%d" % (self.index, self.seq)
        value = time.monotonic_ns().to_bytes(TIMESTAMP_BYTES, "big") + self.pad
        stub = self.kv[c % len(self.kv)]
        await stub.Put(rpc_pb2.PutRequest(key=key, value=value), timeout=self.cfg.timeout)

    async def publish_progress(self, shared: SharedState, st: WorkerState) -> None:
        """As ``worker.publish_progress``, counting delivered events and failed writes."""
        while True:
            shared.progress[2 * self.index] = sum(self.delivered)
            shared.progress[2 * self.index + 1] = sum(self.writes.errors.values())
            if shared.stop.is_set():
                self.writes.stopping = st.stopping = True
            await asyncio.sleep(0.1)

    async def collect(self, shared: SharedState) -> float:
        """Announce this worker's writes, then wait for the events; returns the end time."""
        shared.writes_ok[self.index] = self.writes.ok
        with shared.writers_done.get_lock():
            shared.writers_done.value += 1
        last, last_change = -1, time.monotonic()
        while True:
            done = shared.writers_done.value >= self.cfg.processes
            expected = sum(shared.writes_ok[:]) if done else -1
            got = sum(self.delivered)
            if done and all(d >= expected for d in self.delivered):
                break
            if got != last:
                last, last_change = got, time.monotonic()
            elif time.monotonic() - last_change > self.cfg.drain_timeout or shared.stop.is_set():
                break
            await asyncio.sleep(0.02)
        return time.monotonic()


async def run_watch(
    cfg: BenchConfig,
    index: int,
    shared: SharedState,
    st: WorkerState,
    chans: Sequence[grpc.aio.Channel],
    n_conc: int,
    rng: random.Random,
) -> dict[str, Any]:
    """``st`` measures write-to-delivery per event; the writes are measured separately."""
    fan = _WatchFanOut(cfg, index, chans, rng)
    writes = fan.writes
    tasks: list[asyncio.Task[None]] = []  # the watchers, then the progress ticker
    try:
        await fan.open_streams()
        tasks += [asyncio.create_task(fan.watcher(w, st.hist)) for w in range(len(fan.calls))]
        start = await wait_for_start(cfg, index, shared, st)
        writes.left, writes.deadline, writes.stopping = st.left, st.deadline, st.stopping
        cpu0 = cpu_seconds_self()
        tasks.append(asyncio.create_task(fan.publish_progress(shared, st)))
        await closed_loop(cfg, writes, n_conc, fan.write)
        end = await fan.collect(shared)
    finally:
        for task in tasks:
            task.cancel()
        fan.close_streams()
    st.ok, st.errors, st.last_end = sum(fan.delivered), writes.errors, end
    st.write_hist = writes.hist
    return worker_result(
        index,
        st,
        start,
        cpu0,
        watchers=len(fan.delivered),
        writes_ok=writes.ok,
        delivered=sum(fan.delivered),
        delivered_min=min(fan.delivered, default=0),
        out_of_order=fan.out_of_order,
        write_end=writes.last_end,
    )


WORKLOAD_RUNNERS: dict[str, WorkloadRunner] = {
    "put": run_key_value,
    "range": run_key_value,
    "txn": run_key_value,
    "lease": run_lease,
    "watch": run_watch,
}
