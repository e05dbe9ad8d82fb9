"""DriverCore: every decision a member makes around the Raft core, with no I/O.

The server's asyncio adapter (``raftkv.server.driver``) and the simulator (``raftkv.sim``) run
this same object. It owns the ``RawNode``; it takes events (a client's write or read, a tick,
Raft messages, a persist or an apply that finished, a forward refused or lost, a deadline that
passed) and returns actions (``raftkv.driver.actions``) for the environment to carry out. It
reads no clock (time is ticks; deadlines are the environment's, reported with ``expire``), opens
no socket, starts no thread and touches no disk.

Theory of operation: the Ready pipeline. ``pump`` takes a Ready when the previous one is done
and walks it through these steps, each of which may have to wait for an event:

1. Send ``messages`` at once; learn the index and term of forwarded writes from ``entries``.
2. Committed entries already in the stable log may apply before this Ready's persist (they
   are durable on a quorum and locally); the others, and everything after a snapshot, only
   after it. A snapshot waits until every earlier apply has finished, because restoring it
   replaces the state machine.
3. Persist the snapshot, entries and hard state (``Persist``), and wait for ``persisted``. A
   hard state whose only change is the commit index is not written on its own: losing it is
   harmless (the leader tells it again, applying is idempotent), so it rides along with the
   next write, or with the stop.
4. Send ``persisted_messages``; hand the remaining committed entries to the state machine;
   note the ReadIndex answers; release the reads the state machine has caught up with.
5. Advance, once at most ``max_applies_in_flight`` batches are unfinished (a state machine
   that falls far behind holds the Ready loop back); maybe take a snapshot of the log.

Events other than ``pump`` never take a Ready: proposals and messages that arrive while a Ready
is in flight all go into the next one (one fsync per batch, one append per batch per peer).

Leases: the ``Lessor`` (``lessor.py``, which states the safety rules) keeps the leader's lease
clocks in ticks. It learns the lease table from applied results (and from the environment at
boot and after a snapshot is restored), becomes primary when the leader applies an entry of its
own term, proposes expired leases' revokes on ticks, and answers keep-alives and TimeToLive
once their ReadIndex round confirms the leadership.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from raftkv.driver.actions import (
    Action,
    AppliedTo,
    Fail,
    FlushReadsSoon,
    LeaderChanged,
    Persist,
    RecordAttributes,
    Refusal,
    Resolve,
    Send,
    TakeSnapshot,
)
from raftkv.driver.apply import ApplyPipeline
from raftkv.driver.errors import (
    LeaderChangedError,
    NoLeaderError,
    NotLeaderError,
    RequestTimeoutError,
    ServerStoppedError,
)
from raftkv.driver.lessor import Lessor
from raftkv.driver.proposals import Forwarder, ProposalWaiters
from raftkv.driver.reads import ReadIndexBatcher
from raftkv.errors import NotLeader, ProposalDropped, SnapshotTemporarilyUnavailable
from raftkv.kv.codec import Command, encode_command
from raftkv.kv.state_machine import ApplyResult
from raftkv.kv.types import LeaseGrantResponse, LeaseRevokeRequest, LeaseRevokeResponse
from raftkv.raft.messages import Message
from raftkv.raft.rawnode import RawNode
from raftkv.raft.ready import Ready
from raftkv.raft.storage import LogStorage
from raftkv.raft.types import Entry, EntryKind, HardState, Role

__all__ = ["ATTRIBUTES_MAGIC", "CoreConfig", "DriverCore"]

ATTRIBUTES_MAGIC = b"MA"
"""Prefix of a log entry in which a member publishes its name and client URLs (as etcd's
member attributes); the KV state machine skips it, the core reports it."""


@dataclass(frozen=True, slots=True)
class CoreConfig:
    member_id: int
    snapshot_count: int = 10_000
    """Applied entries between two snapshots of the log."""
    snapshot_catchup_entries: int = 5_000
    """Entries kept before a snapshot, so a slow follower can catch up without one."""
    max_applies_in_flight: int = 64
    light_apply_max_entries: int = 64
    """Largest batch of quick entries that may apply on the log's thread (~5 ms)."""
    max_read_rounds_in_flight: int = 2
    read_retry_ticks: int = 5
    unsafe_local_reads: bool = False
    """UNSAFE, for testing the fault-injection harness only: answer "linearizable" reads from
    local state without ReadIndex, so a partitioned or deposed member answers stale data."""
    lease_ticks_per_second: int = 10
    lease_extend_ticks: int = 10
    """What a new leader adds to every lease's TTL (etcd: the election timeout)."""
    lease_revokes_per_tick: int = 100
    """etcd revokes at most 1,000 expired leases a second."""


class _Stage(enum.Enum):
    IDLE = "idle"
    WAIT_APPLIES = "wait for applies"
    PERSISTING = "persisting"
    WAIT_ROOM = "wait for room"


class DriverCore:
    def __init__(
        self,
        config: CoreConfig,
        node: RawNode,
        log: LogStorage,
        *,
        applied: int,
        leases: Iterable[tuple[int, int]] = (),
        logger: logging.Logger | None = None,
    ) -> None:
        """``leases``: the state machine's lease table at ``applied``, as ``(id, TTL)``."""
        self.config = config
        self.node = node
        self._log = log
        self._logger = logger or logging.getLogger("raftkv.driver")
        hard_state, self.conf_state = log.initial_state()
        self.applied = applied
        """The state machine's applied index, as reported by finished applies."""
        self.term = hard_state.term
        self.leader = 0
        self.role = Role.FOLLOWER
        self.stopped = False
        self.ticks = 0
        self._snapshot_index = _snapshot_index(log)
        self._handed_out = node.status().applied
        """The last committed entry handed to the state machine (or restored by a snapshot):
        the log must keep every entry after it. It can be behind ``applied`` after a restart,
        when the commit index on disk lags the state machine (commit-only hard states are not
        written on their own), and the Raft core hands those entries out again."""
        self._proposals = ProposalWaiters()
        self._forwarder = Forwarder()
        self._parked: dict[int, bytes] = {}
        """Writes waiting for a leader to be known, by waiter."""
        self._reads = ReadIndexBatcher(
            config.member_id,
            max_rounds=config.max_read_rounds_in_flight,
            retry_ticks=config.read_retry_ticks,
        )
        self._applies = ApplyPipeline(light_max_entries=config.light_apply_max_entries)
        self._stage = _Stage.IDLE
        self._rd: Ready | None = None
        self._after_persist: tuple[Entry, ...] = ()
        self._unsaved_hard_state: HardState | None = None
        self.lessor = Lessor(
            ticks_per_second=config.lease_ticks_per_second,
            extend_ticks=config.lease_extend_ticks,
            revokes_per_tick=config.lease_revokes_per_tick,
        )
        self.lessor.load(leases, 0)

    # -- client requests -------------------------------------------------------------------

    def propose(self, waiter: int, command: bytes) -> list[Action]:
        """A client's write: append it (forwarding it to the leader if need be); the waiter is
        answered when the entry at its index applies."""
        out: list[Action] = []
        if self.stopped:
            out.append(Fail(waiter, ServerStoppedError()))
        else:
            self._submit(waiter, command, out)
        return out

    def read(self, waiter: int) -> list[Action]:
        """A linearizable read: the waiter is answered once the state machine has applied the
        leader's commit index, confirmed after the read arrived."""
        out: list[Action] = []
        if self.stopped:
            out.append(Fail(waiter, ServerStoppedError()))
        elif self.config.unsafe_local_reads:
            out.append(Resolve(waiter, None))
        elif self._reads.add(waiter):
            out.append(FlushReadsSoon())
        return out

    def issue_reads(self) -> None:
        self._reads.issue(self.node, self.ticks)

    def expire(self, waiter: int) -> list[Action]:
        """The waiter's deadline passed: forget it and say why it failed."""
        out: list[Action] = []
        if self._proposals.drop(waiter) or self._forwarder.drop(waiter):
            out.append(Fail(waiter, RequestTimeoutError()))  # it may still apply
        elif self._parked.pop(waiter, None) is not None or self._reads.drop(waiter):
            self.lessor.drop(waiter)
            out.append(Fail(waiter, NoLeaderError() if not self.leader else RequestTimeoutError()))
        return out

    def _submit(self, waiter: int, command: bytes, out: list[Action]) -> None:
        if self.role is Role.LEADER:
            try:
                index = self.node.propose(command)
            except NotLeader:
                pass
            except ProposalDropped:  # a leadership transfer is in progress
                out.append(Fail(waiter, LeaderChangedError()))
                return
            else:
                self._proposals.wait(waiter, index, self.node.term)
                return
        elif self.leader and self.leader != self.config.member_id:
            self._forwarder.forward(waiter, command, self.leader, out)
            return
        self._parked[waiter] = command

    def _retry_parked(self, out: list[Action]) -> None:
        parked, self._parked = self._parked, {}
        for waiter, command in parked.items():
            self._submit(waiter, command, out)

    # -- leases ----------------------------------------------------------------------------

    def lease_keep_alive(self, waiter: int, lease: int) -> list[Action]:
        """Renew ``lease`` on the leader: answered with a ``LeaseKeepAliveResult`` (TTL 0 for
        an unknown or expired lease) once a ReadIndex round confirms the leadership."""
        return self._lease_query(waiter, lease, renew=True)

    def lease_time_to_live(self, waiter: int, lease: int) -> list[Action]:
        """The seconds ``lease`` has left, on the leader (``LeaseRemaining``; -1: unknown)."""
        return self._lease_query(waiter, lease, renew=False)

    def _lease_query(self, waiter: int, lease: int, *, renew: bool) -> list[Action]:
        out: list[Action] = []
        lessor = self.lessor
        if self.stopped:
            out.append(Fail(waiter, ServerStoppedError()))
        elif not self._primary():
            out.append(Fail(waiter, NotLeaderError()))
        else:
            lessor.query(waiter, lease, renew=renew, term=self.node.term, now=self.ticks)
            if self.config.unsafe_local_reads:
                out.append(lessor.answer(waiter, self.node.term, self.ticks))
            elif self._reads.add(waiter):
                out.append(FlushReadsSoon())
        return out

    def _release_reads(self, out: list[Action]) -> None:
        """Answer the reads the state machine has caught up with; the lessor answers its own."""
        released: list[Action] = []
        self._reads.release(self.applied, released)
        lessor = self.lessor
        term = self.node.term if self._primary() else 0  # 0: the query fails, leader changed
        for action in released:
            if isinstance(action, Resolve) and lessor.is_query(action.waiter):
                out.append(lessor.answer(action.waiter, term, self.ticks))
            else:
                out.append(action)

    def _expire_leases(self) -> None:
        """Propose the revoke of every lease that expired (rate-limited), bound to this term."""
        lessor = self.lessor
        if not lessor.primary_term:
            return
        if not self._primary():
            lessor.demote()
            return
        expired = lessor.expired(self.ticks)
        for n, lease in enumerate(expired):
            request = LeaseRevokeRequest(lease, term=lessor.primary_term)
            try:
                self.node.propose(encode_command(Command(0, request)))
            except (NotLeader, ProposalDropped):  # a transfer: try again at the next tick
                for postponed in expired[n:]:
                    lessor.postpone(postponed)
                return

    def _lease_results(self, entries: Sequence[Entry], results: Sequence[ApplyResult]) -> None:
        lessor = self.lessor
        for r in results:
            if isinstance(r.result, LeaseGrantResponse):
                lessor.granted(r.result.id, r.result.ttl, self.ticks)
            elif isinstance(r.result, LeaseRevokeResponse):
                lessor.revoked(r.result.id)
        term = self.node.term
        leads = self.node.role is Role.LEADER and lessor.primary_term != term
        # An entry of its own term applied: everything committed before it has applied too.
        if leads and any(e.term == term for e in entries):
            lessor.promote(term, self.ticks)

    def _primary(self) -> bool:
        """This member leads now (the Raft core's role, not the last Ready's) and its lessor
        is primary in the current term."""
        node = self.node
        return node.role is Role.LEADER and self.lessor.primary_term == node.term

    # -- the peer transport ----------------------------------------------------------------

    def step(self, messages: Iterable[Message]) -> None:
        step = self.node.step
        for msg in messages:
            step(msg)

    def handle_forwards(self, commands: Sequence[bytes]) -> Refusal | None:
        """Leader side of a follower's forwarded writes: propose them, in order, at once.
        Returns None when they were appended, or why nothing was proposed."""
        try:
            self.node.propose_many(commands)
        except NotLeader:
            return Refusal.NOT_LEADER
        except ProposalDropped:
            return Refusal.LEADER_CHANGED
        return None

    def forwards_rejected(
        self, forward_ids: Iterable[int], refusal: Refusal | None
    ) -> list[Action]:
        """Forwards certainly not proposed: never sent, or refused by the receiver."""
        out: list[Action] = []
        for waiter, command in self._forwarder.rejected(forward_ids, refusal, out):
            self._parked[waiter] = command  # sent again at the next tick or leader change
        return out

    def forwards_lost(self, forward_ids: Iterable[int]) -> list[Action]:
        """Forwards whose link broke after they were sent: outcome unknown."""
        out: list[Action] = []
        self._forwarder.lost(forward_ids, out)
        return out

    # -- time ------------------------------------------------------------------------------

    def tick(self) -> list[Action]:
        out: list[Action] = []
        self.ticks += 1
        self.node.tick()
        self._reads.retry_stale(self.node, self.ticks)
        if self._parked and self.leader:
            self._retry_parked(out)
        self._expire_leases()
        return out

    # -- the Ready pipeline ----------------------------------------------------------------

    def pump(self) -> list[Action]:
        """Move the Ready pipeline as far as it goes without waiting for an event."""
        out: list[Action] = []
        while not self.stopped:
            stage = self._stage
            if stage is _Stage.IDLE:
                if not self.node.has_ready():
                    break
                self._take(self.node.ready(), out)
            elif stage is _Stage.WAIT_APPLIES:
                if self._applies:
                    break
                self._persist(out)
            elif stage is _Stage.PERSISTING:
                break
            else:
                if len(self._applies) > self.config.max_applies_in_flight:
                    break
                self._advance(out)
        return out

    def _take(self, rd: Ready, out: list[Action]) -> None:
        self._rd = rd
        if rd.soft_state is not None:
            self._on_soft_state(rd.soft_state.leader, rd.soft_state.role, out)
        if rd.hard_state is not None:
            self.term = rd.hard_state.term
        if rd.entries and self._forwarder:
            for waiter, entry in self._forwarder.find(rd.entries):
                self._proposals.wait(waiter, entry.index, entry.term)
        if rd.messages:
            out.append(Send(rd.messages))
        committed = rd.committed_entries
        if rd.snapshot is not None:
            self._after_persist = committed
            self._handed_out = committed[-1].index if committed else rd.snapshot.meta.index
            self._stage = _Stage.WAIT_APPLIES
            return
        split = len(committed)
        if rd.entries and committed:  # committed indexes are contiguous
            split = max(0, min(split, rd.entries[0].index - committed[0].index))
        self._after_persist = committed[split:]
        if committed:
            self._handed_out = committed[-1].index
        self._persist(out, stable=committed[:split])

    def _persist(self, out: list[Action], stable: Sequence[Entry] = ()) -> None:
        rd = self._rd
        assert rd is not None
        if rd.must_sync:
            hard_state = rd.hard_state or self._unsaved_hard_state
            self._unsaved_hard_state = None
            out.append(Persist(hard_state, rd.entries, rd.snapshot))
            self._stage = _Stage.PERSISTING
            if stable:  # after the persist: on the log's thread it then runs behind it
                out.append(self._applies.hand_over(stable))
            return
        if stable:
            out.append(self._applies.hand_over(stable))
        if rd.hard_state is not None:
            self._unsaved_hard_state = rd.hard_state
        self._persisted(rd, 0, out)

    def persisted(
        self, restored_applied: int = 0, leases: Iterable[tuple[int, int]] | None = None
    ) -> list[Action]:
        """The Persist asked for is durable. ``restored_applied`` is the state machine's
        applied index after restoring a received snapshot image (0 if none), ``leases`` its
        lease table then (None if no image was restored)."""
        out: list[Action] = []
        rd = self._rd
        if self._stage is not _Stage.PERSISTING or rd is None:
            raise RuntimeError(f"persisted while {self._stage.value}")
        if leases is not None:
            self.lessor.load(leases, self.ticks)
        self._persisted(rd, restored_applied, out)
        return out

    def _persisted(self, rd: Ready, restored_applied: int, out: list[Action]) -> None:
        if rd.persisted_messages:
            out.append(Send(rd.persisted_messages))
        if rd.snapshot is not None:
            # The image restored can be newer than the snapshot's index (the leader dumps its
            # current state under an older snapshot's metadata).
            self.applied = max(self.applied, restored_applied, rd.snapshot.meta.index)
            self.conf_state = rd.snapshot.meta.conf_state
            self._snapshot_index = max(self._snapshot_index, rd.snapshot.meta.index)
        if self._after_persist:
            out.append(self._applies.hand_over(self._after_persist))
            self._after_persist = ()
        for read_state in rd.read_states:
            self._reads.confirmed(self.node, self.ticks, read_state.index, read_state.context)
        self._release_reads(out)
        self._stage = _Stage.WAIT_ROOM

    def _advance(self, out: list[Action]) -> None:
        rd = self._rd
        assert rd is not None
        self.node.advance(rd)
        self._rd = None
        self._stage = _Stage.IDLE
        self._maybe_snapshot(out)

    def applied_batch(self, batch: int, results: Sequence[ApplyResult]) -> list[Action]:
        """The Apply ``batch`` finished with ``results`` (one per KV command in it)."""
        out: list[Action] = []
        entries = self._applies.finished(batch)
        by_index = {r.index: r.result for r in results}
        self._proposals.on_applied(entries, by_index, out)
        for entry in entries:
            if entry.kind == EntryKind.NORMAL and entry.data[:2] == ATTRIBUTES_MAGIC:
                out.append(RecordAttributes(entry.data[2:]))
        self.applied = max(self.applied, entries[-1].index)
        self._lease_results(entries, results)
        out.append(AppliedTo(self.applied))
        self._release_reads(out)
        return out

    def _on_soft_state(self, leader: int, role: Role, out: list[Action]) -> None:
        if leader != self.leader:
            self._logger.info("member %x: leader is now %x", self.config.member_id, leader)
        self.leader = leader
        self.role = role
        if role is not Role.LEADER:
            self.lessor.demote()
        out.append(LeaderChanged(leader, role))
        if leader and self._parked:
            self._retry_parked(out)

    def _maybe_snapshot(self, out: list[Action]) -> None:
        # A restored state-machine image can be newer than the log: a snapshot index must
        # exist in the log, and entries the Raft core has yet to hand out must stay in it.
        index = min(self.applied, self._handed_out, self._log.last_index())
        if index - self._snapshot_index < self.config.snapshot_count:
            return
        out.append(TakeSnapshot(index, self.conf_state, self.config.snapshot_catchup_entries))
        self._snapshot_index = index

    # -- stopping --------------------------------------------------------------------------

    def stop(self) -> list[Action]:
        """Fail everything still waiting, and write the commit index held back, if any."""
        out: list[Action] = []
        self.stopped = True
        error = ServerStoppedError()
        self._proposals.fail_all(error, out)
        self._forwarder.fail_all(error, out)
        out.extend(Fail(w, error) for w in self._parked)
        self._parked.clear()
        out.extend(Fail(w, error) for w in self._reads.waiters())
        self._reads.clear()
        self.lessor.clear_queries()
        self.lessor.demote()
        if self._unsaved_hard_state is not None:  # never set while a Persist is in flight
            out.append(Persist(self._unsaved_hard_state, (), None))
            self._unsaved_hard_state = None
        return out

    @property
    def held_by_applies(self) -> bool:
        """Whether the Ready pipeline waits for applies to finish (a finished apply may then let
        ``pump`` go on; otherwise it has nothing to pump)."""
        return self._stage is _Stage.WAIT_APPLIES or self._stage is _Stage.WAIT_ROOM


def _snapshot_index(log: LogStorage) -> int:
    try:
        return log.snapshot().meta.index
    except SnapshotTemporarilyUnavailable:
        return 0
