"""NodeDriver: the asyncio adapter that runs one member's driver core.

Every decision lives in ``raftkv.driver.DriverCore`` (which the simulator runs too); this class
only carries its actions out and feeds it events. Only the event-loop thread touches the core.
Disk work runs on two dedicated threads, one per LMDB environment, so each environment's write
transactions stay on one thread and fsync never blocks the loop: the log thread persists
Readies, takes snapshots, and applies small batches of quick entries when the apply thread is
idle; the apply thread applies everything else. An apply-thread batch waits for the log
thread's last apply batch, so batches still apply one at a time, in order.

Deadlines are this adapter's: a request's timer tells the core (``expire``) when it passes, and
the core says how the request failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import random
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeAlias

from raftkv.driver import (
    Action,
    AppliedTo,
    Apply,
    CoreConfig,
    DriverCore,
    Fail,
    FlushReadsSoon,
    Forward,
    LeaderChanged,
    Persist,
    RecordAttributes,
    Refusal,
    Resolve,
    Send,
    TakeSnapshot,
    Worker,
)
from raftkv.driver.lessor import LeaseIds
from raftkv.kv.codec import Command, encode_command
from raftkv.kv.errors import KVError
from raftkv.kv.mvcc import MVCCStore
from raftkv.kv.state_machine import ApplyResult, KVStateMachine
from raftkv.kv.types import LeaseAnswer, LeaseKeepAliveResult, LeaseRemaining, Request, Response
from raftkv.raft.config import RaftConfig
from raftkv.raft.messages import Message
from raftkv.raft.rawnode import RawNode
from raftkv.raft.storage import DurableLog
from raftkv.raft.types import ConfState, Entry, HardState, Role, Snapshot, SnapshotMeta
from raftkv.server.api import Member, NodeStatus
from raftkv.server.driver_metrics import DriverMetrics, Histogram
from raftkv.server.errors import (
    BadLeaderTransfereeError,
    LeaderChangedError,
    NotLeaderError,
    RequestTimeoutError,
    ServerStoppedError,
)
from raftkv.server.member_attributes import MemberAttributes
from raftkv.server.peer.snapshot_receiver import ReceivedSnapshots
from raftkv.server.worker import SerialWorker

logger = logging.getLogger(__name__)

_READ_RETRY_S = 0.5
_LEASE_REVOKES_PER_S = 1000
"""etcd's leaseRevokeRate."""


class Transport(Protocol):
    def send(self, messages: Sequence[Message]) -> None: ...

    def forward(self, to: int, forward_id: int, command: bytes) -> bool: ...


@dataclass(frozen=True, slots=True)
class DriverConfig:
    member_id: int
    cluster_id: int
    tick_interval_ms: int = 100
    election_ticks: int = 10
    heartbeat_ticks: int = 1
    snapshot_count: int = 10_000
    snapshot_catchup_entries: int = 5_000
    max_inflight_msgs: int = 512
    max_size_per_msg_bytes: int = 1 << 20
    unsafe_local_reads: bool = False
    """UNSAFE, for testing the fault-injection harness only: serve "linearizable" reads from
    local state without ReadIndex, so a partitioned or deposed member answers stale data."""

    def core_config(self) -> CoreConfig:
        return CoreConfig(
            member_id=self.member_id,
            snapshot_count=self.snapshot_count,
            snapshot_catchup_entries=self.snapshot_catchup_entries,
            read_retry_ticks=self._ticks(_READ_RETRY_S),
            unsafe_local_reads=self.unsafe_local_reads,
            lease_ticks_per_second=self._ticks(1.0),
            lease_extend_ticks=self.election_ticks,
            lease_revokes_per_tick=max(1, _LEASE_REVOKES_PER_S * self.tick_interval_ms // 1000),
        )

    def _ticks(self, seconds: float) -> int:
        return max(1, round(seconds * 1000 / self.tick_interval_ms))

    @property
    def min_lease_ttl_s(self) -> int:
        """etcd's minTTL: 1.5 election timeouts (counted in whole ticks), rounded up."""
        return -(-(3 * self.election_ticks // 2) * self.tick_interval_ms // 1000)


_Outcome: TypeAlias = "Response | LeaseAnswer | KVError | None"


class NodeDriver:
    """Implements :class:`raftkv.server.api.NodeApi` for one member."""

    def __init__(
        self,
        config: DriverConfig,
        raft_log: DurableLog,
        state_machine: KVStateMachine,
        members: Sequence[Member],
        *,
        db_path: Path,
        members_path: Path | None = None,
        received_snapshots: ReceivedSnapshots | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self._log = raft_log
        self._sm = state_machine
        self._attributes = MemberAttributes(members, members_path)
        self._db_path = db_path
        self._received_snapshots = received_snapshots
        """Where the peer transport leaves the images of snapshots received from the leader."""
        applied = state_machine.applied_index()
        raft_config = RaftConfig(
            node_id=config.member_id,
            election_ticks=config.election_ticks,
            heartbeat_ticks=config.heartbeat_ticks,
            max_inflight_msgs=config.max_inflight_msgs,
            max_size_per_msg_bytes=config.max_size_per_msg_bytes,
            applied=applied,
        )
        node = RawNode(raft_config, raft_log, rng or random.Random())
        self._core = DriverCore(
            config.core_config(),
            node,
            raft_log,
            applied=applied,
            leases=state_machine.leases(),
            logger=logger,
        )
        self._lease_ids = LeaseIds(config.member_id, int(time.time() * 1000))
        self._transport: Transport | None = None
        self._disk = SerialWorker("raftkv-disk")
        self._apply_thread = SerialWorker("raftkv-apply")
        self._last_disk_apply: threading.Event | None = None
        """Set when the newest apply batch handed to the disk thread has finished."""
        self._waiters: dict[int, asyncio.Future[_Outcome]] = {}
        self._waiter_ids = itertools.count(1)
        self._request_ids = request_ids(config.member_id, time.time())
        self._wake = asyncio.Event()
        self._leader_changed = asyncio.Event()
        self._stopped = False
        self._tasks: list[asyncio.Task[None]] = []
        self._apply_listeners: list[Callable[[], None]] = []
        self.failed = asyncio.Event()
        """Set when an internal loop or a disk job died; the member must stop."""
        self.metrics = DriverMetrics()
        """Numbers for /metrics, updated per batch or event (raftkv.server.driver_metrics)."""

    # -- wiring and lifecycle ------------------------------------------------------------------

    def attach_transport(self, transport: Transport) -> None:
        self._transport = transport

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._fatal_on_error(self._ready_loop()), name="raftkv-ready"),
            loop.create_task(self._fatal_on_error(self._tick_loop()), name="raftkv-tick"),
            loop.create_task(self._publish_attributes(), name="raftkv-attributes"),
        ]

    async def _fatal_on_error(self, loop_body: Coroutine[object, object, None]) -> None:
        """A loop that dies would leave a member that answers clients but never makes progress:
        stop the whole member instead (fail-stop), loudly."""
        try:
            await loop_body
        except asyncio.CancelledError:
            raise
        except BaseException:
            self._fatal("internal error")
            raise

    def _fatal(self, what: str, error: BaseException | None = None) -> None:
        logger.critical("member %x: %s; stopping", self.member_id, what, exc_info=error or True)
        self.failed.set()

    async def stop(self, *, transfer_leadership: bool = True) -> None:
        if self._stopped:
            return
        if transfer_leadership and self._core.role is Role.LEADER:
            await self._transfer_before_stop()
        self._stopped = True
        self._wake.set()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for action in self._core.stop():
            if isinstance(action, Persist):  # the commit index held back
                save = functools.partial(self._log.save, sync=True)
                await self._disk.submit(save, action.hard_state, (), None)
            else:
                self._execute((action,))
        self._disk.shutdown(wait=True)
        self._apply_thread.shutdown(wait=True)

    async def _transfer_before_stop(self) -> None:
        status = self._core.node.status()
        followers = [(p.match, n) for n, p in status.progress if n != self.member_id]
        if not followers:
            return
        _, target = max(followers)
        logger.info("handing leadership to %x before stopping", target)
        try:
            await self.move_leader(target, timeout_s=self._election_timeout_s())
        except KVError as exc:
            logger.warning("leadership transfer before stop failed: %s", exc)

    def _election_timeout_s(self) -> float:
        return self.config.election_ticks * self.config.tick_interval_ms / 1000

    # -- carrying out the core's actions -------------------------------------------------------

    def _execute(self, actions: Sequence[Action]) -> None:
        for action in actions:
            match action:
                case Send(messages):
                    if self._transport is not None:
                        self._transport.send(messages)
                case Apply():
                    self._apply(action)
                case Resolve(waiter, result):
                    future = self._waiters.pop(waiter, None)
                    if future is not None and not future.done():
                        future.set_result(result)
                case Fail(waiter, error):
                    future = self._waiters.pop(waiter, None)
                    if future is not None and not future.done():
                        future.set_exception(error)
                case Persist():
                    persisted = self._disk.submit(self._persist, action)
                    persisted.add_done_callback(self._on_persisted)
                case Forward(to, forward_id, command):
                    transport = self._transport
                    if transport is None or not transport.forward(to, forward_id, command):
                        self._execute(self._core.forwards_rejected((forward_id,), None))
                case TakeSnapshot(index, conf_state, keep):
                    taken = self._disk.submit(self._take_snapshot, index, conf_state, keep)
                    taken.add_done_callback(self._on_snapshot_taken)
                case RecordAttributes(data):
                    self._attributes.record(data)
                case LeaderChanged(leader=leader):
                    self.metrics.saw_leader(leader)
                    self._leader_changed.set()
                case AppliedTo():
                    for listener in tuple(self._apply_listeners):
                        listener()
                case FlushReadsSoon():
                    asyncio.get_running_loop().call_soon(self._flush_reads)

    def _apply(self, action: Apply) -> None:
        if action.worker is Worker.DISK:
            done = threading.Event()
            self._last_disk_apply = done
            future = self._disk.submit(
                _apply_then_set, self._sm, action.entries, done, self.metrics.backend_commit
            )
        else:
            future = self._apply_thread.submit(
                _wait_then_apply,
                self._sm,
                action.entries,
                self._last_disk_apply,
                self.metrics.backend_commit,
            )
        # Batches finish, and these callbacks run, in the order given.
        future.add_done_callback(functools.partial(self._on_applied, action))

    def _on_applied(self, action: Apply, future: asyncio.Future[list[ApplyResult]]) -> None:
        if future.cancelled() or self._stopped:
            return
        error = future.exception()
        if error is not None:
            first, last = action.entries[0].index, action.entries[-1].index
            self._fatal(f"applying entries {first}-{last} failed", error)
            return
        self._execute(self._core.applied_batch(action.batch, future.result()))
        if self._core.held_by_applies:  # else the Ready loop has nothing new to do
            self._wake.set()

    def _persist(self, action: Persist) -> tuple[int, list[tuple[int, int]] | None]:
        """On the disk thread. Returns the applied index and the lease table of a restored
        snapshot image (0 and None if none was restored)."""
        snapshot, restored = action.snapshot, 0
        leases: list[tuple[int, int]] | None = None
        if snapshot is not None:
            # The state machine first: a crash in between must never leave a log that starts
            # after what the state machine has applied. The transport left the image in a file
            # named by the snapshot's index and term.
            received = self._received_snapshots
            if received is not None and (image := received.open(snapshot.meta)) is not None:
                with image as f:
                    self._sm.restore(iter(lambda: f.read(1 << 20), b""))
                received.remove(snapshot.meta)
                restored = self._sm.applied_index()
                leases = self._sm.leases()
            else:
                meta = snapshot.meta
                logger.warning("no image received for snapshot %d/%d", meta.index, meta.term)
            snapshot = Snapshot(snapshot.meta, b"")
        started = time.perf_counter()
        self._log.save(action.hard_state, action.entries, snapshot, sync=True)
        self.metrics.wal_fsync.observe(time.perf_counter() - started)
        return restored, leases

    def _on_persisted(
        self, future: asyncio.Future[tuple[int, list[tuple[int, int]] | None]]
    ) -> None:
        if future.cancelled() or self._stopped:
            return
        error = future.exception()
        if error is not None:
            self._fatal("persisting the Raft log failed", error)
            return
        self._execute(self._core.persisted(*future.result()))
        self._wake.set()

    def _take_snapshot(self, index: int, conf: ConfState, keep: int) -> None:
        started = time.monotonic()
        self._log.create_snapshot(index, conf, b"")
        if index - keep > self._log.first_index():
            self._log.compact(index - keep)
        elapsed_ms = (time.monotonic() - started) * 1000
        logger.info("member %x: snapshot at index %d (%.0f ms)", self.member_id, index, elapsed_ms)

    def _on_snapshot_taken(self, future: asyncio.Future[None]) -> None:
        if not future.cancelled() and future.exception() is not None and not self._stopped:
            self._fatal("taking a snapshot of the Raft log failed", future.exception())

    def _flush_reads(self) -> None:
        if not self._stopped:
            self._core.issue_reads()
            self._wake.set()

    # -- inputs from the transport -------------------------------------------------------------

    def deliver(self, messages: Sequence[Message]) -> None:
        self._core.step(messages)
        self._wake.set()

    def report_unreachable(self, member_id: int) -> None:
        self.metrics.peer_unreachable(member_id)
        self._core.node.report_unreachable(member_id)

    def report_snapshot(self, member_id: int, ok: bool) -> None:
        self._core.node.report_snapshot(member_id, ok)
        self._wake.set()

    def snapshot_chunks(self) -> Iterator[bytes]:
        return self._sm.snapshot_chunks()

    def handle_forwards(self, commands: list[bytes]) -> Refusal | None:
        """Leader side of a follower's forwarded writes. Returns None when they were appended
        (the follower learns the rest from the log), or why nothing was proposed."""
        refusal = self._core.handle_forwards(commands)
        self._wake.set()
        return refusal

    def forwards_lost(self, forward_ids: Sequence[int]) -> None:
        """The transport's report of forwards whose link broke: they may have been proposed."""
        self._execute(self._core.forwards_lost(forward_ids))

    def forwards_rejected(self, forward_ids: Sequence[int], refusal: Refusal | None) -> None:
        """The transport's report of forwards that were certainly not proposed."""
        self._execute(self._core.forwards_rejected(forward_ids, refusal))
        self._wake.set()

    # -- NodeApi ---------------------------------------------------------------------------------

    @property
    def member_id(self) -> int:
        return self.config.member_id

    @property
    def cluster_id(self) -> int:
        return self.config.cluster_id

    @property
    def raft_term(self) -> int:
        return self._core.term

    @property
    def store(self) -> MVCCStore:
        return self._sm.store

    @property
    def leader(self) -> int:
        return self._core.leader

    def members(self) -> Sequence[Member]:
        return self._attributes.members()

    def add_apply_listener(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call ``listener`` (on the loop) after every applied batch; returns an unsubscribe."""
        self._apply_listeners.append(listener)

        def remove() -> None:
            with contextlib.suppress(ValueError):
                self._apply_listeners.remove(listener)

        return remove

    def status(self) -> NodeStatus:
        st = self._core.node.status()
        size = _file_size(self._db_path)
        return NodeStatus(
            member_id=self.member_id,
            cluster_id=self.cluster_id,
            leader=st.leader,
            raft_term=st.term,
            raft_index=st.last_index,
            raft_applied_index=self._core.applied,
            commit_index=st.commit,
            is_learner=self.member_id in st.conf_state.learners,
            db_size_bytes=size,
            db_size_in_use_bytes=size,
            revision=self.store.current_revision(),
        )

    async def propose(self, request: Request, *, timeout_s: float) -> Response:
        command = encode_command(Command(next(self._request_ids), request))
        metrics = self.metrics
        metrics.proposals_pending += 1
        try:
            result = await self._wait(
                functools.partial(self._core.propose, command=command), timeout_s
            )
            if result is None or isinstance(result, LeaseKeepAliveResult | LeaseRemaining):
                raise LeaderChangedError()  # the entry at its index was not this command
        except BaseException:
            metrics.proposals_failed += 1
            raise
        finally:
            metrics.proposals_pending -= 1
        if isinstance(result, KVError):
            raise result
        return result

    async def linearizable_barrier(self, *, timeout_s: float) -> None:
        await self._wait(self._core.read, timeout_s)

    # -- leases (the lessor lives in the core; these only wait for its answers) --------------

    @property
    def min_lease_ttl_s(self) -> int:
        return self.config.min_lease_ttl_s

    def new_lease_id(self) -> int:
        return self._lease_ids.next()

    async def lease_keep_alive(self, lease_id: int, *, timeout_s: float) -> int:
        start = functools.partial(self._core.lease_keep_alive, lease=lease_id)
        result = await self._wait(start, timeout_s)
        if not isinstance(result, LeaseKeepAliveResult):
            raise LeaderChangedError()
        return result.ttl

    async def lease_time_to_live(self, lease_id: int, *, timeout_s: float) -> int:
        start = functools.partial(self._core.lease_time_to_live, lease=lease_id)
        result = await self._wait(start, timeout_s)
        if not isinstance(result, LeaseRemaining):
            raise LeaderChangedError()
        return result.ttl

    async def _wait(self, start: Callable[[int], list[Action]], timeout_s: float) -> _Outcome:
        """Start a request in the core and wait for its outcome, at most ``timeout_s``."""
        if self._stopped:
            raise ServerStoppedError()
        loop = asyncio.get_running_loop()
        waiter = next(self._waiter_ids)
        future: asyncio.Future[_Outcome] = loop.create_future()
        self._waiters[waiter] = future
        timer = loop.call_later(max(0.0, timeout_s), self._expire, waiter)
        try:
            self._execute(start(waiter))
            self._wake.set()
            return await future
        finally:
            timer.cancel()
            if self._waiters.pop(waiter, None) is not None:  # abandoned: the caller went away
                self._core.expire(waiter)

    def _expire(self, waiter: int) -> None:
        self._execute(self._core.expire(waiter))

    async def move_leader(self, target_member_id: int, *, timeout_s: float) -> None:
        core = self._core
        if core.role is not Role.LEADER:
            raise NotLeaderError()
        if target_member_id not in core.conf_state.voters:
            raise BadLeaderTransfereeError()
        if target_member_id == self.member_id:
            return
        core.node.transfer_leadership(target_member_id)
        self._wake.set()
        deadline = time.monotonic() + timeout_s
        while core.leader != target_member_id:
            if time.monotonic() >= deadline:
                raise RequestTimeoutError()
            self._leader_changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._leader_changed.wait(), deadline - time.monotonic())

    async def snapshot_stream(self) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        chunks = self._sm.snapshot_chunks()
        sentinel = object()
        while True:
            chunk = await loop.run_in_executor(None, next, chunks, sentinel)
            if chunk is sentinel:
                return
            assert isinstance(chunk, bytes)
            yield chunk

    async def defragment(self) -> None:
        return None  # LMDB reuses freed pages; there is nothing to compact offline.

    # -- the loops ---------------------------------------------------------------------------

    async def _tick_loop(self) -> None:
        interval = self.config.tick_interval_ms / 1000
        next_at = time.monotonic()
        while not self._stopped:
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            self._execute(self._core.tick())
            self._wake.set()

    async def _ready_loop(self) -> None:
        while not self._stopped:
            await self._wake.wait()
            self._wake.clear()
            self._execute(self._core.pump())

    async def _publish_attributes(self) -> None:
        """Tell the cluster our name and client URLs, through the log, until it sticks."""
        data = self._attributes.publication(self.member_id)
        if data is None:
            return
        start = functools.partial(self._core.propose, command=data)
        while not self._stopped:
            try:
                await self._wait(start, self._election_timeout_s())
            except KVError:
                await asyncio.sleep(self._election_timeout_s() / 2)
                continue
            return


def request_ids(member_id: int, now_s: float) -> Iterator[int]:
    """Request ids unique across members and restarts, as etcd's idutil makes them: 2 bytes of
    the member id, 5 of the start time in milliseconds, then a counter. A follower finds its
    forwarded writes in the log by their bytes, so two members (or one before and after a
    restart) must never encode the same request the same way."""
    start = (member_id & 0xFFFF) << 48 | (int(now_s * 1000) & 0xFF_FFFF_FFFF) << 8
    return itertools.count(start + 1)


def bootstrap_log(raft_log: DurableLog, voters: Sequence[int]) -> None:
    """Give a brand-new log its membership: every member starts from the same snapshot at
    (index 1, term 1), so logs agree from the start without a bootstrap election."""
    if raft_log.last_index() > 0:
        return
    conf = ConfState(voters=tuple(sorted(voters)))
    raft_log.save(
        HardState(term=1, vote=0, commit=1), (), Snapshot(SnapshotMeta(1, 1, conf), b""), sync=True
    )


def _apply_then_set(
    sm: KVStateMachine, entries: Sequence[Entry], done: threading.Event, timer: Histogram
) -> list[ApplyResult]:
    try:
        return _timed_apply(sm, entries, timer)
    finally:
        done.set()


def _wait_then_apply(
    sm: KVStateMachine,
    entries: Sequence[Entry],
    after: threading.Event | None,
    timer: Histogram,
) -> list[ApplyResult]:
    if after is not None:
        after.wait()  # the disk thread's last batch, which comes before this one
    return _timed_apply(sm, entries, timer)


def _timed_apply(
    sm: KVStateMachine, entries: Sequence[Entry], timer: Histogram
) -> list[ApplyResult]:
    # A batch is one LMDB write transaction: its time, commit included, is what the metric
    # etcd_disk_backend_commit_duration_seconds stands for here.
    started = time.perf_counter()
    results = sm.apply(entries)
    timer.observe(time.perf_counter() - started)
    return results


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


__all__ = ["DriverConfig", "NodeDriver", "bootstrap_log", "request_ids"]
