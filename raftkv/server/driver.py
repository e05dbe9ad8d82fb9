"""NodeDriver: the asyncio shell that owns one RawNode and runs its Ready loop.

Only the event-loop thread touches the RawNode. Disk work runs on two dedicated threads, one per
LMDB environment, so each environment's write transactions stay on one thread and fsync never
blocks the loop: the log thread persists Readies (and takes snapshots), the apply thread applies
committed entries. The Ready loop does not wait for applies: it queues each batch on the apply
thread (in order) and goes on, so a long apply never holds up heartbeats and acks; entries
already in the stable log are queued before the Ready's new entries are persisted, the others
after. Installing a received snapshot into the state machine runs on the log thread only after
every queued apply has finished. While a Ready is being handled, new proposals and messages keep
arriving in the core; the next Ready carries all of them: one fsync per batch (group commit),
one LMDB transaction per batch of applies, one append message per batch per peer. ReadIndex
rounds are batched the same way: a bounded number in flight, and whatever arrives meanwhile goes
in the next one.

A follower forwards its clients' writes to the leader as etcd does, fire and forget: the command
rides the next message batch to the leader, which proposes it and says nothing unless it turns it
down. The follower learns the write's index and term when the entry reaches its own log (it looks
for its forwarded commands among the entries of each Ready), and its result when it applies.

Proposal outcomes are honest: a proposal waits for the entry at its index to apply. The same
term means it applied (its result is returned); another term means it was superseded and will
never apply (LeaderChangedError); a deadline means the outcome is unknown (RequestTimeoutError).
A forwarded write the leader turned down as a non-leader is sent again to the next leader.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import itertools
import json
import logging
import random
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from raftkv.errors import NotLeader, ProposalDropped, SnapshotTemporarilyUnavailable
from raftkv.kv.codec import Command, encode_command
from raftkv.kv.errors import KVError
from raftkv.kv.mvcc import MVCCStore
from raftkv.kv.state_machine import ApplyResult, KVStateMachine, quick_to_apply
from raftkv.kv.types import Request, Response
from raftkv.raft.config import RaftConfig
from raftkv.raft.messages import Message
from raftkv.raft.rawnode import RawNode
from raftkv.raft.ready import Ready
from raftkv.raft.storage import LogStorage
from raftkv.raft.types import ConfState, Entry, HardState, Role, Snapshot, SnapshotMeta
from raftkv.server.api import Member, NodeStatus
from raftkv.server.errors import (
    BadLeaderTransfereeError,
    LeaderChangedError,
    NoLeaderError,
    NotLeaderError,
    RequestTimeoutError,
    ServerStoppedError,
)
from raftkv.server.peer.handler import Refusal
from raftkv.server.peer.snapshot_receiver import ReceivedSnapshots
from raftkv.server.worker import SerialWorker

logger = logging.getLogger(__name__)

_MAX_APPLIES_IN_FLIGHT = 64
"""Applied batches queued on the apply thread before the Ready loop waits for the state machine."""
_LIGHT_APPLY_MAX_ENTRIES = 64
"""Largest batch of plain puts that may apply on the disk thread (see ``_apply``): ~5 ms."""
_MAX_READ_ROUNDS_IN_FLIGHT = 2
"""ReadIndex rounds outstanding per member, for the same reason: reads that arrive while rounds
are out share the next one (one heartbeat round confirms all of them)."""
_RECENT_RESULTS = 4096
_READ_RETRY_S = 0.5
_ATTRIBUTES_MAGIC = b"MA"
"""Prefix of a log entry in which a member publishes its name and client URLs (as etcd's
member attributes); the KV state machine skips it, the driver records it."""


class DurableLog(LogStorage, Protocol):
    """The Raft log the driver writes: the core's read side plus the write side."""

    def save(
        self,
        hard_state: HardState | None,
        entries: Sequence[Entry],
        snapshot: Snapshot | None,
        *,
        sync: bool,
    ) -> None: ...

    def create_snapshot(
        self, index: int, conf_state: ConfState, data: bytes, *, sync: bool = True
    ) -> Snapshot: ...

    def compact(self, index: int, *, sync: bool = False) -> None: ...


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


@dataclass(slots=True)
class _Pending:
    future: asyncio.Future[tuple[int, Response | KVError | None]]
    """Resolves with (term of the entry applied at the index, its result)."""


@dataclass(slots=True)
class _Forwarded:
    """A write this member forwarded to the leader and has not yet seen in its own log."""

    command: bytes
    future: asyncio.Future[tuple[int, int] | None]
    """Resolves with the (index, term) the entry got, or None when it was certainly not
    proposed (sent nowhere, or refused by a member that is not the leader): send it again."""


@dataclass(slots=True)
class _ReadRound:
    waiters: list[asyncio.Future[None]]
    issued_at: float


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
        self._members = {m.id: m for m in members}
        self._members_path = members_path
        self._load_member_attributes()
        self._db_path = db_path
        self._received_snapshots = received_snapshots
        """Where the peer transport leaves the images of snapshots received from the leader."""
        self._applied = state_machine.applied_index()
        raft_config = RaftConfig(
            node_id=config.member_id,
            election_ticks=config.election_ticks,
            heartbeat_ticks=config.heartbeat_ticks,
            max_inflight_msgs=config.max_inflight_msgs,
            max_size_per_msg_bytes=config.max_size_per_msg_bytes,
            applied=self._applied,
        )
        self._node = RawNode(raft_config, raft_log, rng or random.Random())
        self._conf_state = raft_log.initial_state()[1]
        self._transport: Transport | None = None
        self._disk = SerialWorker("raftkv-disk")
        """The Raft log's thread: persisting Readies, snapshots and compaction; also small
        batches of plain puts, when the apply thread is idle (see ``_apply``)."""
        self._apply_thread = SerialWorker("raftkv-apply")
        """The state machine's thread for everything else: one LMDB write transaction per batch."""
        self._apply_thread_batches = 0
        """Batches handed to the apply thread whose done-callback has not run yet."""
        self._last_disk_apply: threading.Event | None = None
        """Set when the newest batch handed to the disk thread has been applied."""
        self._unsaved_hard_state: HardState | None = None
        """The newest commit-only hard state, not written yet (see ``_handle_ready``)."""
        self._applying: deque[asyncio.Future[list[ApplyResult]]] = deque()
        """Batches handed to the apply thread and not yet finished, oldest first."""
        self._wake = asyncio.Event()
        self._stopped = False
        self._leader = 0
        self._term = raft_log.initial_state()[0].term
        self._role = Role.FOLLOWER
        self._leader_changed = asyncio.Event()
        self._pending: dict[int, _Pending] = {}
        self._recent: deque[tuple[int, int, Response | KVError | None]] = deque()
        self._recent_by_index: dict[int, tuple[int, Response | KVError | None]] = {}
        self._request_ids = itertools.count(1)
        # Read contexts must be unique across members: the leader keys pending reads by them.
        self._read_ctx = itertools.count((config.member_id & (2**64 - 1)) << 64 | 1)
        self._read_batch: list[asyncio.Future[None]] = []
        self._read_rounds: dict[bytes, _ReadRound] = {}
        self._read_waiting: list[tuple[int, asyncio.Future[None]]] = []
        self._snapshot_index = _snapshot_index(raft_log)
        self._tasks: list[asyncio.Task[None]] = []
        self._apply_listeners: list[Callable[[], None]] = []
        self._forward_ids = itertools.count(1)
        self._forwarded: dict[int, _Forwarded] = {}
        """Forwarded writes not yet seen in the log, by forward id (to match a refusal)."""
        self._forwarded_commands: dict[bytes, _Forwarded] = {}
        """The same, by command (to find them among the entries of a Ready)."""
        self.failed = asyncio.Event()
        """Set when an internal loop died; the member must stop."""

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
            logger.critical("member %x: internal error; stopping", self.member_id, exc_info=True)
            self.failed.set()
            raise

    async def stop(self, *, transfer_leadership: bool = True) -> None:
        if self._stopped:
            return
        if transfer_leadership and self._role is Role.LEADER:
            await self._transfer_before_stop()
        self._stopped = True
        self._wake.set()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._fail_all(ServerStoppedError())
        if self._unsaved_hard_state is not None:
            hard_state, self._unsaved_hard_state = self._unsaved_hard_state, None
            await self._disk.submit(
                functools.partial(self._log.save, sync=True), hard_state, (), None
            )
        self._disk.shutdown(wait=True)
        self._apply_thread.shutdown(wait=True)

    async def _transfer_before_stop(self) -> None:
        status = self._node.status()
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

    # -- inputs from the transport -------------------------------------------------------------

    def deliver(self, messages: Sequence[Message]) -> None:
        step = self._node.step
        for msg in messages:
            step(msg)
        self._wake.set()

    def report_unreachable(self, member_id: int) -> None:
        self._node.report_unreachable(member_id)

    def report_snapshot(self, member_id: int, ok: bool) -> None:
        self._node.report_snapshot(member_id, ok)
        self._wake.set()

    def snapshot_chunks(self) -> Iterator[bytes]:
        return self._sm.snapshot_chunks()

    def handle_forwards(self, commands: list[bytes]) -> Refusal | None:
        """Leader side of a follower's forwarded writes: propose them, in order, at once.

        Returns None when they were appended (the follower learns the rest from the log), or
        why they were turned down: nothing was proposed then."""
        try:
            self._node.propose_many(commands)
        except NotLeader:
            return Refusal.NOT_LEADER
        except ProposalDropped:
            return Refusal.LEADER_CHANGED
        self._wake.set()
        return None

    def forwards_lost(self, forward_ids: Sequence[int]) -> None:
        """The transport's report of forwards whose link broke: they may have been proposed."""
        for forward_id in forward_ids:
            forwarded = self._forwarded.get(forward_id)
            if forwarded is not None and not forwarded.future.done():
                forwarded.future.set_exception(RequestTimeoutError())

    def forwards_rejected(self, forward_ids: Sequence[int], refusal: Refusal | None) -> None:
        """The transport's report of forwards that were certainly not proposed."""
        for forward_id in forward_ids:
            forwarded = self._forwarded.get(forward_id)
            if forwarded is None or forwarded.future.done():
                continue
            if refusal is Refusal.LEADER_CHANGED:
                forwarded.future.set_exception(LeaderChangedError())
            else:  # never sent, or sent to a member that is no longer the leader: send again
                forwarded.future.set_result(None)

    # -- NodeApi ---------------------------------------------------------------------------------

    @property
    def member_id(self) -> int:
        return self.config.member_id

    @property
    def cluster_id(self) -> int:
        return self.config.cluster_id

    @property
    def raft_term(self) -> int:
        return self._term

    @property
    def store(self) -> MVCCStore:
        return self._sm.store

    @property
    def leader(self) -> int:
        return self._leader

    def members(self) -> Sequence[Member]:
        return tuple(self._members.values())

    def add_apply_listener(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call ``listener`` (on the loop) after every applied batch; returns an unsubscribe."""
        self._apply_listeners.append(listener)

        def remove() -> None:
            with contextlib.suppress(ValueError):
                self._apply_listeners.remove(listener)

        return remove

    def status(self) -> NodeStatus:
        st = self._node.status()
        size = _file_size(self._db_path)
        return NodeStatus(
            member_id=self.member_id,
            cluster_id=self.cluster_id,
            leader=st.leader,
            raft_term=st.term,
            raft_index=st.last_index,
            raft_applied_index=self._applied,
            commit_index=st.commit,
            is_learner=self.member_id in st.conf_state.learners,
            db_size_bytes=size,
            db_size_in_use_bytes=size,
            revision=self.store.current_revision(),
        )

    async def propose(self, request: Request, *, timeout_s: float) -> Response:
        if self._stopped:
            raise ServerStoppedError()
        command = encode_command(Command(next(self._request_ids), request))
        term, (applied_term, result) = await self._replicate(command, timeout_s)
        return self._outcome(term, applied_term, result)

    async def _replicate(
        self, command: bytes, timeout_s: float
    ) -> tuple[int, tuple[int, Response | KVError | None]]:
        """Append ``command`` (forwarding it if needed) and wait until its index applies.
        Returns (term it was appended in, (term of the entry that applied there, result))."""
        deadline = time.monotonic() + timeout_s
        index, term = await self._append(command, deadline)
        recent = self._recent_by_index.get(index)
        if recent is not None:  # applied before the leader's answer reached us
            return term, recent
        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[int, Response | KVError | None]] = loop.create_future()
        self._pending[index] = _Pending(future)
        try:
            return term, await asyncio.wait_for(future, max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            raise RequestTimeoutError() from None
        finally:
            self._pending.pop(index, None)

    async def _append(self, command: bytes, deadline: float) -> tuple[int, int]:
        while True:
            if self._role is Role.LEADER:
                try:
                    index = self._node.propose(command)
                except NotLeader:
                    pass
                except ProposalDropped:
                    raise LeaderChangedError() from None
                else:
                    self._wake.set()
                    return index, self._node.term
            elif self._leader and self._transport is not None:
                appended = await self._forward(command, deadline)
                if appended is not None:
                    return appended
            await self._wait_for_leader(deadline)

    async def _forward(self, command: bytes, deadline: float) -> tuple[int, int] | None:
        """Forward a write to the leader and wait until it shows up in this member's log.

        Returns its (index, term), or None when it was certainly not proposed (send it again).
        """
        assert self._transport is not None
        forward_id = next(self._forward_ids)
        future: asyncio.Future[tuple[int, int] | None] = asyncio.get_running_loop().create_future()
        forwarded = _Forwarded(command, future)
        if not self._transport.forward(self._leader, forward_id, command):
            return None
        self._forwarded[forward_id] = forwarded
        # A retry of a command still awaited elsewhere (a member's attributes) may share it.
        self._forwarded_commands.setdefault(command, forwarded)
        try:
            return await asyncio.wait_for(future, deadline - time.monotonic())
        except TimeoutError:
            raise RequestTimeoutError() from None
        finally:
            del self._forwarded[forward_id]
            if self._forwarded_commands.get(command) is forwarded:
                del self._forwarded_commands[command]

    def _find_forwarded(self, entries: Sequence[Entry]) -> None:
        """Tell the writes this member forwarded where the leader appended them."""
        forwarded_commands = self._forwarded_commands
        for entry in entries:
            forwarded = forwarded_commands.pop(entry.data, None)
            if forwarded is not None and not forwarded.future.done():
                forwarded.future.set_result((entry.index, entry.term))

    async def _wait_for_leader(self, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise NoLeaderError() if not self._leader else RequestTimeoutError()
        self._leader_changed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._leader_changed.wait(), min(remaining, 0.05))

    @staticmethod
    def _outcome(term: int, applied_term: int, result: Response | KVError | None) -> Response:
        if applied_term != term or result is None:
            raise LeaderChangedError()
        if isinstance(result, KVError):
            raise result
        return result

    async def linearizable_barrier(self, *, timeout_s: float) -> None:
        if self._stopped:
            raise ServerStoppedError()
        if self.config.unsafe_local_reads:
            return
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        if not self._read_batch:
            loop.call_soon(self._issue_read_round)
        self._read_batch.append(future)
        try:
            await asyncio.wait_for(future, timeout_s)
        except TimeoutError:
            raise (NoLeaderError() if not self._leader else RequestTimeoutError()) from None

    def _issue_read_round(self, waiters: list[asyncio.Future[None]] | None = None) -> None:
        if waiters is None:
            if len(self._read_rounds) >= _MAX_READ_ROUNDS_IN_FLIGHT:
                return  # the batch goes when a round in flight completes
            waiters, self._read_batch = self._read_batch, []
        waiters = [w for w in waiters if not w.done()]
        if not waiters:
            return
        context = next(self._read_ctx).to_bytes(16, "big")
        with contextlib.suppress(NotLeader):  # retried by the tick loop once a leader is known
            self._node.read_index(context)
        self._read_rounds[context] = _ReadRound(waiters, time.monotonic())
        self._wake.set()

    def _retry_stale_reads(self) -> None:
        now = time.monotonic()
        for context, rnd in list(self._read_rounds.items()):
            if now - rnd.issued_at >= _READ_RETRY_S or not any(not w.done() for w in rnd.waiters):
                del self._read_rounds[context]
                self._issue_read_round(rnd.waiters)
        if self._read_batch:
            self._issue_read_round()

    async def move_leader(self, target_member_id: int, *, timeout_s: float) -> None:
        if self._role is not Role.LEADER:
            raise NotLeaderError()
        if target_member_id not in self._conf_state.voters:
            raise BadLeaderTransfereeError()
        if target_member_id == self.member_id:
            return
        self._node.transfer_leadership(target_member_id)
        self._wake.set()
        deadline = time.monotonic() + timeout_s
        while self._leader != target_member_id:
            if time.monotonic() >= deadline:
                raise RequestTimeoutError()
            self._leader_changed.clear()
            try:
                await asyncio.wait_for(self._leader_changed.wait(), deadline - time.monotonic())
            except TimeoutError:
                continue

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
            self._node.tick()
            self._retry_stale_reads()
            self._wake.set()

    async def _ready_loop(self) -> None:
        while not self._stopped:
            await self._wake.wait()
            self._wake.clear()
            while self._node.has_ready() and not self._stopped:
                rd = self._node.ready()
                try:
                    await self._handle_ready(rd)
                finally:
                    self._node.advance(rd)
                await self._maybe_snapshot()

    async def _handle_ready(self, rd: Ready) -> None:
        if rd.soft_state is not None:
            self._on_soft_state(rd.soft_state.leader, rd.soft_state.role)
        if rd.hard_state is not None:
            self._term = rd.hard_state.term
        if self._forwarded_commands and rd.entries:
            self._find_forwarded(rd.entries)
        transport = self._transport
        if transport is not None and rd.messages:
            transport.send(rd.messages)
        committed = rd.committed_entries
        # The Ready loop hands committed entries to the apply thread and moves on: a large apply
        # (deleting a big prefix takes seconds) must not stop heartbeats and acks, or the leader
        # loses its quorum. Entries already in the stable log need not wait for the persist
        # (they are durable on a quorum, and locally); entries that arrive in this very Ready,
        # and anything after a snapshot, only go after it.
        stable: Sequence[Entry] = ()
        if rd.snapshot is None:
            split = len(committed)
            if rd.entries and committed:  # committed indexes are contiguous
                split = max(0, min(split, rd.entries[0].index - committed[0].index))
            stable, committed = committed[:split], committed[split:]
        else:
            # Installing a snapshot replaces the state machine: every earlier apply first.
            await self._applies_done()
        persisted: asyncio.Future[None] | None = None
        if rd.must_sync:
            # A commit index skipped below rides along with the next write.
            hard_state = rd.hard_state or self._unsaved_hard_state
            self._unsaved_hard_state = None  # before the await: a stop must never write it later
            persisted = self._disk.submit(self._persist, rd, hard_state)
        if stable:
            # Handed over after the persist: on the disk thread it then runs behind it, and the
            # acks this Ready releases do not wait for it.
            self._apply(stable)
        if persisted is not None:
            await persisted
        elif rd.hard_state is not None:
            # Only the commit index moved. Losing it in a crash is harmless: the leader tells it
            # again, and applying is idempotent. So no LMDB commit and fsync of its own, which
            # was one of every two on a follower at low load (etcd does not sync these either).
            self._unsaved_hard_state = rd.hard_state
        if transport is not None and rd.persisted_messages:
            transport.send(rd.persisted_messages)
        if rd.snapshot is not None:
            self._applied = max(self._applied, self._sm.applied_index(), rd.snapshot.meta.index)
            self._conf_state = rd.snapshot.meta.conf_state
        if committed:
            self._apply(committed)
        for read_state in rd.read_states:
            self._on_read_state(read_state.index, read_state.context)
        self._release_reads()
        # Bounded: when the state machine falls this far behind, the loop waits for it.
        await self._applies_at_most(_MAX_APPLIES_IN_FLIGHT)

    def _apply(self, entries: Sequence[Entry]) -> None:
        """Apply ``entries`` after every batch handed over before, on one of two threads.

        A small batch of plain puts (and entries the state machine skips) goes to the disk
        thread when the apply thread has nothing to do: py-lmdb gives up and retakes the GIL
        around every LMDB call, so each extra thread doing so trades the GIL with the event loop
        (paired check perf m runs: ~3% more throughput, shorter tail; docs/performance.md).
        Anything that may take long (a DeleteRange of a big prefix, a txn, a compaction) goes to
        the apply thread, so a persist never waits behind it: the Ready loop waits for each
        persist, and a stalled Ready loop stops answering heartbeats. Batches still apply one at
        a time, in order: the disk thread only gets a batch when the apply thread is idle, and
        the apply thread waits for the disk thread's last batch before its own.
        """
        if self._apply_thread_batches == 0 and _is_light(entries):
            done = threading.Event()
            self._last_disk_apply = done
            future = self._disk.submit(_apply_then_set, self._sm, entries, done)
        else:
            self._apply_thread_batches += 1
            future = self._apply_thread.submit(
                _wait_then_apply, self._sm, entries, self._last_disk_apply
            )
            future.add_done_callback(self._apply_thread_batch_done)
        self._applying.append(future)
        # Batches finish, and these callbacks run, in the order given.
        future.add_done_callback(functools.partial(self._applied_batch, entries))

    def _apply_thread_batch_done(self, _future: asyncio.Future[list[ApplyResult]]) -> None:
        self._apply_thread_batches -= 1

    def _applied_batch(
        self, entries: Sequence[Entry], future: asyncio.Future[list[ApplyResult]]
    ) -> None:
        if self._applying and self._applying[0] is future:
            self._applying.popleft()
        if future.cancelled():
            return
        error = future.exception()
        if error is not None:
            if not self._stopped:
                logger.critical(
                    "member %x: applying entries %d-%d failed; stopping",
                    self.member_id,
                    entries[0].index,
                    entries[-1].index,
                    exc_info=error,
                )
                self.failed.set()
            return
        self._on_applied(entries, future.result())
        self._release_reads()

    async def _applies_done(self) -> None:
        await self._applies_at_most(0)

    async def _applies_at_most(self, batches: int) -> None:
        """Wait until at most ``batches`` apply batches are queued.

        A batch leaves the queue in its done-callback, which the loop runs on a later pass than
        the one that completed it. Awaiting an already-done future does not yield, so awaiting
        the head directly spun forever, at 100% CPU, whenever the head was done but its callback
        had not run yet (a one-member cluster under load hit it within seconds).
        ``asyncio.wait`` always yields, and never cancels the apply it waits for.
        """
        while len(self._applying) > batches:
            await asyncio.wait((self._applying[0],))

    def _persist(self, rd: Ready, hard_state: HardState | None) -> None:
        snapshot = rd.snapshot
        if snapshot is not None:
            # The state machine first: a crash in between must never leave a log that starts
            # after what the state machine has applied.
            # The transport left the image in a file named by the snapshot's index and term.
            received = self._received_snapshots
            if received is not None and (image := received.open(snapshot.meta)) is not None:
                with image as f:
                    self._sm.restore(iter(lambda: f.read(1 << 20), b""))
                received.remove(snapshot.meta)
            else:
                meta = snapshot.meta
                logger.warning("no image received for snapshot %d/%d", meta.index, meta.term)
            snapshot = Snapshot(snapshot.meta, b"")
        self._log.save(hard_state, rd.entries, snapshot, sync=True)

    def _on_soft_state(self, leader: int, role: Role) -> None:
        if leader != self._leader:
            logger.info("member %x: leader is now %x", self.member_id, leader)
        self._leader = leader
        self._role = role
        self._leader_changed.set()

    def _on_applied(self, entries: Sequence[Entry], results: Sequence[ApplyResult]) -> None:
        by_index = {r.index: r.result for r in results}
        for entry in entries:
            result = by_index.get(entry.index)
            self._remember(entry.index, entry.term, result)
            pending = self._pending.pop(entry.index, None)
            if pending is not None and not pending.future.done():
                pending.future.set_result((entry.term, result))
            if entry.data[:2] == _ATTRIBUTES_MAGIC:
                self._on_member_attributes(entry.data[2:])
        self._applied = entries[-1].index
        for listener in tuple(self._apply_listeners):
            listener()

    def _remember(self, index: int, term: int, result: Response | KVError | None) -> None:
        self._recent.append((index, term, result))
        self._recent_by_index[index] = (term, result)
        if len(self._recent) > _RECENT_RESULTS:
            old_index, _, _ = self._recent.popleft()
            self._recent_by_index.pop(old_index, None)

    def _on_read_state(self, index: int, context: bytes) -> None:
        rnd = self._read_rounds.pop(context, None)
        if rnd is None:
            return
        for waiter in rnd.waiters:
            self._read_waiting.append((index, waiter))
        if self._read_batch:
            self._issue_read_round()

    def _release_reads(self) -> None:
        if not self._read_waiting:
            return
        still: list[tuple[int, asyncio.Future[None]]] = []
        for index, waiter in self._read_waiting:
            if waiter.done():
                continue
            if index <= self._applied:
                waiter.set_result(None)
            else:
                still.append((index, waiter))
        self._read_waiting = still

    async def _maybe_snapshot(self) -> None:
        # A restored state-machine image can be newer than the log (the leader dumps its current
        # state under an older snapshot's metadata): a snapshot index must exist in the log.
        index = min(self._applied, self._log.last_index())
        if index - self._snapshot_index < self.config.snapshot_count:
            return
        conf = self._conf_state
        keep = self.config.snapshot_catchup_entries
        await self._disk.submit(self._take_snapshot, index, conf, keep)
        self._snapshot_index = index

    def _take_snapshot(self, index: int, conf: ConfState, keep: int) -> None:
        started = time.monotonic()
        self._log.create_snapshot(index, conf, b"")
        if index - keep > self._log.first_index():
            self._log.compact(index - keep)
        logger.info(
            "member %x: snapshot at index %d (%.0f ms)",
            self.member_id,
            index,
            (time.monotonic() - started) * 1000,
        )

    # -- member attributes -----------------------------------------------------------------

    async def _publish_attributes(self) -> None:
        """Tell the cluster our name and client URLs, through the log, until it sticks."""
        me = self._members.get(self.member_id)
        if me is None:
            return
        record = {"id": me.id, "name": me.name, "client_urls": list(me.client_urls)}
        data = _ATTRIBUTES_MAGIC + json.dumps(record, sort_keys=True).encode()
        while not self._stopped:
            try:
                term, (applied_term, _) = await self._replicate(data, self._election_timeout_s())
            except KVError:
                await asyncio.sleep(self._election_timeout_s() / 2)
                continue
            if term == applied_term:
                return

    def _on_member_attributes(self, data: bytes) -> None:
        try:
            record = json.loads(data)
            member_id, name = int(record["id"]), str(record["name"])
            client_urls = tuple(str(u) for u in record["client_urls"])
        except (ValueError, KeyError, TypeError):
            logger.warning("ignoring malformed member attributes %r", data[:200])
            return
        current = self._members.get(member_id)
        if current is None or (current.name, current.client_urls) == (name, client_urls):
            return
        self._members[member_id] = dataclasses.replace(current, name=name, client_urls=client_urls)
        self._save_member_attributes()

    def _load_member_attributes(self) -> None:
        if self._members_path is None or not self._members_path.exists():
            return
        try:
            records = json.loads(self._members_path.read_text())
        except (OSError, ValueError) as exc:
            logger.warning("ignoring unreadable %s: %s", self._members_path, exc)
            return
        for record in records:
            self._on_member_attributes(json.dumps(record).encode())

    def _save_member_attributes(self) -> None:
        if self._members_path is None:
            return
        records = [
            {"id": m.id, "name": m.name, "client_urls": list(m.client_urls)}
            for m in self._members.values()
        ]
        tmp = self._members_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(records, sort_keys=True))
        tmp.replace(self._members_path)

    def _fail_all(self, error: KVError) -> None:
        for pending in self._pending.values():
            if not pending.future.done():
                pending.future.set_exception(error)
        self._pending.clear()


def bootstrap_log(raft_log: DurableLog, voters: Sequence[int]) -> None:
    """Give a brand-new log its membership: every member starts from the same snapshot at
    (index 1, term 1), so logs agree from the start without a bootstrap election."""
    if raft_log.last_index() > 0:
        return
    conf = ConfState(voters=tuple(sorted(voters)))
    raft_log.save(
        HardState(term=1, vote=0, commit=1), (), Snapshot(SnapshotMeta(1, 1, conf), b""), sync=True
    )


def _is_light(entries: Sequence[Entry]) -> bool:
    """Whether applying ``entries`` is bounded and quick: few, and each quick on its own."""
    return len(entries) <= _LIGHT_APPLY_MAX_ENTRIES and all(map(quick_to_apply, entries))


def _apply_then_set(
    sm: KVStateMachine, entries: Sequence[Entry], done: threading.Event
) -> list[ApplyResult]:
    try:
        return sm.apply(entries)
    finally:
        done.set()


def _wait_then_apply(
    sm: KVStateMachine, entries: Sequence[Entry], after: threading.Event | None
) -> list[ApplyResult]:
    if after is not None:
        after.wait()  # the disk thread's last batch, which comes before this one
    return sm.apply(entries)


def _snapshot_index(raft_log: DurableLog) -> int:
    try:
        return raft_log.snapshot().meta.index
    except SnapshotTemporarilyUnavailable:
        return 0


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


__all__ = ["DriverConfig", "NodeDriver", "bootstrap_log"]
