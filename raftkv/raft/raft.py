"""The Raft state machine: roles, elections, replication, ReadIndex and leadership transfer.

Follows the Raft thesis (Ongaro 2014) with etcd-raft's refinements: pre-vote (§9.6),
check-quorum with leader leases against disruptive candidates, reject hints that skip a whole
term per round trip, pipelined appends bounded by in-flight windows, and ReadIndex (§6.4).

Nothing here performs I/O. Outputs accumulate in ``_msgs`` / ``_msgs_after_persist`` /
``_read_states`` and leave through ``ready()``. Time is ``tick()``; randomness is the injected
``rng``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

from raftkv.errors import (
    CompactedError,
    NotLeader,
    ProposalDropped,
    SnapshotTemporarilyUnavailable,
    UnavailableError,
)
from raftkv.raft.config import DEFAULT_LOGGER_NAME, RaftConfig
from raftkv.raft.log import RaftLog
from raftkv.raft.messages import (
    AppendEntries,
    AppendResponse,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    Message,
    ReadIndexRequest,
    ReadIndexResponse,
    RequestVote,
    TimeoutNow,
    TransferLeader,
    VoteResponse,
)
from raftkv.raft.progress import Progress, ProgressState, ProgressTracker, VoteResult, vote_result
from raftkv.raft.readonly import ReadOnly
from raftkv.raft.ready import ProgressStatus, Ready, Status
from raftkv.raft.storage import LogStorage
from raftkv.raft.types import (
    NO_NODE,
    ConfChange,
    ConfChangeKind,
    ConfState,
    Entry,
    EntryKind,
    HardState,
    Index,
    NodeId,
    ReadState,
    Role,
    Snapshot,
    SoftState,
    Term,
)


class Rng(Protocol):
    """The slice of ``random.Random`` the core uses; inject a seeded one for determinism."""

    def randrange(self, start: int, stop: int, /) -> int: ...


class Raft:
    def __init__(self, config: RaftConfig, storage: LogStorage, rng: Rng) -> None:
        self.config = config
        self.id = config.node_id
        self._rng = rng
        self._logger = (
            config.logger if config.logger is not None else logging.getLogger(DEFAULT_LOGGER_NAME)
        )
        self.log = RaftLog(storage, config.applied)
        hard_state, conf_state = storage.initial_state()
        self.tracker = ProgressTracker(
            conf_state, config.max_inflight_msgs, config.max_inflight_bytes
        )
        self.term: Term = hard_state.term
        self.vote: NodeId = hard_state.vote
        self.lead: NodeId = NO_NODE
        self.role = Role.FOLLOWER
        self.votes: dict[NodeId, bool] = {}
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_election_timeout = config.election_ticks
        self.lead_transferee: NodeId = NO_NODE
        self.pending_conf_index: Index = 0
        self.read_only = ReadOnly()
        self._pending_reads: list[tuple[NodeId, bytes]] = []
        self._needs_broadcast = False
        self._uncommitted_bytes = 0
        """Payload bytes this leader appended that have not committed (max_uncommitted_...)."""
        self._msgs: list[Message] = []
        self._msgs_after_persist: list[Message] = []
        self._read_states: list[ReadState] = []
        self._prev_soft = SoftState(NO_NODE, Role.FOLLOWER)
        self._prev_hard = hard_state
        self._become_follower(self.term, NO_NODE)

    # ---------------------------------------------------------------------------------- helpers

    def _send(self, msg: Message) -> None:
        # Responses that promise something about our stable storage wait for the durable write.
        if isinstance(msg, AppendResponse) or (isinstance(msg, VoteResponse) and not msg.pre_vote):
            self._msgs_after_persist.append(msg)
        else:
            self._msgs.append(msg)

    def _promotable(self) -> bool:
        return self.id in self.tracker.voters

    def _hard_state(self) -> HardState:
        return HardState(self.term, self.vote, self.log.committed)

    def _reset(self, term: Term) -> None:
        if self.term != term:
            self.term = term
            self.vote = NO_NODE
        self.lead = NO_NODE
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        ticks = self.config.election_ticks
        self.randomized_election_timeout = ticks + self._rng.randrange(0, ticks)
        self.lead_transferee = NO_NODE
        self.votes = {}
        self.tracker.reset(self.log.last_index() + 1)
        self.pending_conf_index = 0
        self.read_only = ReadOnly()
        self._pending_reads = []
        self._needs_broadcast = False

    # ------------------------------------------------------------------------------ transitions

    def _become_follower(self, term: Term, lead: NodeId) -> None:
        self._reset(term)
        self.lead = lead
        self.role = Role.FOLLOWER

    def _become_pre_candidate(self) -> None:
        # Neither the term nor the vote changes: a pre-vote disturbs no one.
        self.votes = {}
        self.lead = NO_NODE
        self.role = Role.PRE_CANDIDATE

    def _become_candidate(self) -> None:
        self._reset(self.term + 1)
        self.vote = self.id
        self.role = Role.CANDIDATE

    def _become_leader(self) -> None:
        self._reset(self.term)
        self.lead = self.id
        self.role = Role.LEADER
        self._uncommitted_bytes = 0
        own = self.tracker.progress.get(self.id)
        if own is not None:
            own.become_replicate()
            own.match = self.log.stable_last_index()
            own.next = self.log.last_index() + 1
            own.recent_active = True
        # Entries of earlier terms commit only once an entry of this term does (§5.4.2).
        self.pending_conf_index = self.log.last_index()
        self.log.append((Entry(self.term, self.log.last_index() + 1),))
        self._needs_broadcast = True
        self._logger.info("node %x became leader at term %d", self.id, self.term)

    # ------------------------------------------------------------------------------------ ticks

    def tick(self) -> None:
        if self.role is Role.LEADER:
            self._tick_leader()
        else:
            self._tick_election()

    def _tick_election(self) -> None:
        self.election_elapsed += 1
        if self._promotable() and self.election_elapsed >= self.randomized_election_timeout:
            self.election_elapsed = 0
            self.hup(transfer=False)

    def _tick_leader(self) -> None:
        self.heartbeat_elapsed += 1
        self.election_elapsed += 1
        if self.election_elapsed >= self.config.election_ticks:
            self.election_elapsed = 0
            if self.config.check_quorum:
                if not self.tracker.quorum_active(self.id):
                    self._logger.info("node %x lost its quorum; stepping down", self.id)
                    self._become_follower(self.term, NO_NODE)
                    return
                for node, pr in self.tracker.progress.items():
                    if node != self.id:
                        pr.recent_active = False
            self.lead_transferee = NO_NODE  # a transfer that took a whole timeout has failed
        if self.heartbeat_elapsed >= self.config.heartbeat_ticks:
            self.heartbeat_elapsed = 0
            self._broadcast_heartbeat(self.read_only.last_pending_context())

    # -------------------------------------------------------------------------------- elections

    def hup(self, *, transfer: bool) -> None:
        if self.role is Role.LEADER or not self._promotable():
            return
        if self._has_unapplied_conf_change():
            return
        if self.config.pre_vote and not transfer:
            self._campaign(pre_vote=True, transfer=False)
        else:
            self._campaign(pre_vote=False, transfer=transfer)

    def _has_unapplied_conf_change(self) -> bool:
        if self.log.committed <= self.log.applied:
            return False
        try:
            pending = self.log.slice(self.log.applied + 1, self.log.committed + 1)
        except (CompactedError, UnavailableError):
            return False
        return any(e.kind is EntryKind.CONF_CHANGE for e in pending)

    def _campaign(self, *, pre_vote: bool, transfer: bool) -> None:
        if pre_vote:
            self._become_pre_candidate()
            term = self.term + 1
        else:
            self._become_candidate()
            term = self.term
        self.votes[self.id] = True
        if self._tally() is not VoteResult.PENDING:
            return
        last_index, last_term = self.log.last_index(), self.log.last_term()
        for voter in self.tracker.voters:
            if voter != self.id:
                self._send(
                    RequestVote(self.id, voter, term, last_index, last_term, pre_vote, transfer)
                )

    def _tally(self) -> VoteResult:
        result = vote_result(self.tracker.voters, self.votes)
        if result is VoteResult.WON:
            if self.role is Role.PRE_CANDIDATE:
                self._campaign(pre_vote=False, transfer=False)
            else:
                self._become_leader()
        elif result is VoteResult.LOST:
            self._become_follower(self.term, NO_NODE)
        return result

    def _handle_vote_request(self, m: RequestVote) -> None:
        can_vote = (
            self.vote == m.src
            or (self.vote == NO_NODE and self.lead == NO_NODE)
            or (m.pre_vote and m.term > self.term)
        )
        if can_vote and self.log.is_up_to_date(m.last_index, m.last_term):
            self._send(VoteResponse(self.id, m.src, m.term, True, m.pre_vote))
            if not m.pre_vote:
                self.election_elapsed = 0
                self.vote = m.src
        else:
            self._send(VoteResponse(self.id, m.src, self.term, False, m.pre_vote))

    # ------------------------------------------------------------------------------------- step

    def step(self, m: Message) -> None:
        if m.dst != self.id:
            return
        if m.term > self.term:
            if isinstance(m, RequestVote):
                in_lease = (
                    self.config.check_quorum
                    and self.lead != NO_NODE
                    and self.election_elapsed < self.config.election_ticks
                )
                if in_lease and not m.transfer:
                    return  # a leader we heard from recently is alive: ignore the disruption
            if isinstance(m, RequestVote) and m.pre_vote:
                pass  # answering a pre-vote never changes our term
            elif isinstance(m, VoteResponse) and m.pre_vote and m.granted:
                pass  # the term is bumped only when we really campaign
            else:
                leader_msg = isinstance(m, AppendEntries | Heartbeat | InstallSnapshot)
                self._become_follower(m.term, m.src if leader_msg else NO_NODE)
        elif m.term < self.term:
            self._step_stale(m)
            return
        if isinstance(m, RequestVote):
            self._handle_vote_request(m)
        elif self.role is Role.LEADER:
            self._step_leader(m)
        elif self.role is Role.FOLLOWER:
            self._step_follower(m)
        else:
            self._step_candidate(m)

    def _step_stale(self, m: Message) -> None:
        if (self.config.check_quorum or self.config.pre_vote) and isinstance(
            m, AppendEntries | Heartbeat
        ):
            # Tell the stale leader about the new term; without this a partitioned leader that
            # rejoins could never learn it was replaced while pre-vote blocks its elections.
            self._msgs.append(AppendResponse(self.id, m.src, self.term, 0))
        elif isinstance(m, RequestVote) and m.pre_vote:
            self._send(VoteResponse(self.id, m.src, self.term, False, True))

    def _step_leader(self, m: Message) -> None:
        if isinstance(m, AppendResponse):
            self._handle_append_response(m)
        elif isinstance(m, HeartbeatResponse):
            self._handle_heartbeat_response(m)
        elif isinstance(m, ReadIndexRequest):
            if m.src in self.tracker.progress:
                self._handle_read_request(m.src, m.context)
        elif isinstance(m, TransferLeader):
            self._handle_transfer(m.target)

    def _step_candidate(self, m: Message) -> None:
        if isinstance(m, AppendEntries | Heartbeat | InstallSnapshot):
            self._become_follower(m.term, m.src)
            self._step_follower(m)
        elif isinstance(m, VoteResponse) and m.pre_vote == (self.role is Role.PRE_CANDIDATE):
            self.votes.setdefault(m.src, m.granted)
            self._tally()

    def _step_follower(self, m: Message) -> None:
        if isinstance(m, AppendEntries):
            self.election_elapsed = 0
            self.lead = m.src
            self._handle_append(m)
        elif isinstance(m, Heartbeat):
            self.election_elapsed = 0
            self.lead = m.src
            self.log.commit_to(m.commit)
            self._send(HeartbeatResponse(self.id, m.src, self.term, m.context))
        elif isinstance(m, InstallSnapshot):
            self.election_elapsed = 0
            self.lead = m.src
            self._handle_snapshot(m.snapshot)
        elif isinstance(m, TimeoutNow):
            self._logger.info("node %x received TimeoutNow; campaigning at once", self.id)
            self.hup(transfer=True)
        elif isinstance(m, ReadIndexResponse):
            self._read_states.append(ReadState(m.index, m.context))
        elif isinstance(m, TransferLeader) and self.lead != NO_NODE:
            self._send(TransferLeader(self.id, self.lead, self.term, m.target))

    # ------------------------------------------------------------------ replication: follower

    def _handle_append(self, m: AppendEntries) -> None:
        log = self.log
        if m.prev_index < log.committed:
            self._send(AppendResponse(self.id, m.src, self.term, log.committed))
            return
        last_new = log.maybe_append(m.prev_index, m.prev_term, m.commit, m.entries)
        if last_new is not None:
            self._send(AppendResponse(self.id, m.src, self.term, last_new))
            return
        hint_index, hint_term = log.find_conflict_by_term(
            min(m.prev_index, log.last_index()), m.prev_term
        )
        self._send(
            AppendResponse(self.id, m.src, self.term, m.prev_index, True, hint_index, hint_term)
        )

    def _handle_snapshot(self, snapshot: Snapshot) -> None:
        meta = snapshot.meta
        if meta.index <= self.log.committed:
            self._send(AppendResponse(self.id, self.lead, self.term, self.log.committed))
            return
        if self.log.matches_term(meta.index, meta.term):
            # We already hold the snapshot's last entry: just fast-forward the commit index.
            self.log.commit_to(meta.index)
            self._send(AppendResponse(self.id, self.lead, self.term, self.log.last_index()))
            return
        self._logger.info("node %x restoring snapshot at index %d", self.id, meta.index)
        self.log.restore(snapshot)
        self.tracker.set_conf(meta.conf_state, self.log.last_index() + 1)
        self._send(AppendResponse(self.id, self.lead, self.term, self.log.last_index()))

    # -------------------------------------------------------------------- replication: leader

    def _handle_append_response(self, m: AppendResponse) -> None:
        pr = self.tracker.progress.get(m.src)
        if pr is None:
            return
        pr.recent_active = True
        if m.reject:
            next_probe = m.reject_hint
            if m.log_term > 0:
                next_probe, _ = self.log.find_conflict_by_term(m.reject_hint, m.log_term)
            if pr.maybe_decr_to(m.index, next_probe):
                if pr.state is ProgressState.REPLICATE:
                    pr.become_probe()
                self._send_append(m.src)
            return
        was_paused = pr.is_paused()
        if not pr.maybe_update(m.index):
            return
        if pr.state is ProgressState.PROBE:
            pr.become_replicate()
        elif pr.state is ProgressState.SNAPSHOT and pr.match >= pr.pending_snapshot:
            pr.become_probe()
            pr.become_replicate()
        elif pr.state is ProgressState.REPLICATE:
            pr.inflights.free_le(m.index)
        if self._maybe_commit():
            # The new commit index goes out at the next ready(), in the same append as the
            # entries proposed meanwhile: an append of its own would cost every follower a
            # message and an answer.
            self._needs_broadcast = True
        elif was_paused or pr.state is ProgressState.REPLICATE:
            while self._send_append(m.src, send_if_empty=False):
                pass
        if m.src == self.lead_transferee and pr.match == self.log.last_index():
            self._send(TimeoutNow(self.id, m.src, self.term))

    def _handle_heartbeat_response(self, m: HeartbeatResponse) -> None:
        pr = self.tracker.progress.get(m.src)
        if pr is None:
            return
        pr.recent_active = True
        pr.probe_sent = False
        if pr.state is ProgressState.REPLICATE and pr.inflights.full():
            pr.inflights.free_first_one()
        if pr.state is ProgressState.SNAPSHOT:
            # The transport may have lost the snapshot; after a few rounds, try again.
            pr.snapshot_stalls += 1
            if pr.snapshot_stalls > self.config.election_ticks:
                pr.become_probe()
        if pr.match < self.log.last_index():
            self._send_append(m.src)
        if m.context:
            self._ack_read(m.src, m.context)

    def _maybe_commit(self) -> bool:
        index = self.tracker.committed()
        if index <= self.log.committed:
            return False
        # Only an entry of the current term commits by counting replicas (§5.4.2, Figure 8).
        if self.log.term(index) != self.term:
            return False
        was_committed_in_term = self._committed_in_term()
        self.log.commit_to(index)
        if not was_committed_in_term:
            self._release_pending_reads()
        return True

    def _committed_in_term(self) -> bool:
        try:
            return self.log.term(self.log.committed) == self.term
        except (CompactedError, UnavailableError):
            return False

    def _send_append(self, to: NodeId, *, send_if_empty: bool = True) -> bool:
        pr = self.tracker.progress[to]
        if pr.is_paused():
            return False
        prev_index = pr.next - 1
        try:
            prev_term = self.log.term(prev_index)
            entries = self.log.entries_from(pr.next, self.config.max_size_per_msg_bytes)
        except (CompactedError, UnavailableError):
            return self._send_snapshot(to, pr)
        if not entries and not send_if_empty:
            return False
        if entries and pr.state is ProgressState.REPLICATE:
            last = entries[-1].index
            pr.next = last + 1
            pr.inflights.add(last, sum(e.size() for e in entries))
        elif pr.state is ProgressState.PROBE:
            pr.probe_sent = True
        self._send(
            AppendEntries(
                self.id, to, self.term, prev_index, prev_term, tuple(entries), self.log.committed
            )
        )
        return True

    def _send_snapshot(self, to: NodeId, pr: Progress) -> bool:
        if not pr.recent_active:
            return False
        try:
            snapshot = self.log.storage.snapshot()
        except SnapshotTemporarilyUnavailable:
            return False
        pr.become_snapshot(snapshot.meta.index)
        self._send(InstallSnapshot(self.id, to, self.term, snapshot))
        return True

    def _broadcast_append(self) -> None:
        for node, pr in self.tracker.progress.items():
            if node != self.id and self._send_append(node):
                # Pipelining: keep streaming to a follower that is known to be in sync.
                while pr.state is ProgressState.REPLICATE and self._send_append(
                    node, send_if_empty=False
                ):
                    pass

    def _broadcast_heartbeat(self, context: bytes) -> None:
        committed = self.log.committed
        for node, pr in self.tracker.progress.items():
            if node != self.id:
                commit = min(pr.match, committed)
                self._send(Heartbeat(self.id, node, self.term, commit, context))

    # ---------------------------------------------------------------------------- proposals

    def propose(self, batch: Sequence[bytes]) -> Index:
        return self._append_proposals([(EntryKind.NORMAL, data) for data in batch])

    def propose_conf_change(self, change: ConfChange) -> Index:
        if self.role is Role.LEADER and self.pending_conf_index > self.log.applied:
            raise ProposalDropped("a configuration change is already pending")
        index = self._append_proposals([(EntryKind.CONF_CHANGE, change.encode())])
        self.pending_conf_index = index
        return index

    def _append_proposals(self, items: Sequence[tuple[EntryKind, bytes]]) -> Index:
        if self.role is not Role.LEADER:
            raise NotLeader(self.lead)
        if self.lead_transferee != NO_NODE:
            raise ProposalDropped("leadership transfer in progress")
        limit = self.config.max_uncommitted_entries_bytes
        if limit:
            size = sum(len(data) for _, data in items)
            held = self._uncommitted_bytes
            if held and size and held + size > limit:
                raise ProposalDropped("too many uncommitted entries")
            self._uncommitted_bytes = held + size
        first = self.log.last_index() + 1
        term = self.term
        self.log.append(
            tuple(Entry(term, first + i, kind, data) for i, (kind, data) in enumerate(items))
        )
        # Appends go out at the next ready(), so proposals arriving together share a message.
        self._needs_broadcast = True
        return first

    def apply_conf_change(self, change: ConfChange) -> ConfState:
        voters = set(self.tracker.voters)
        learners = set(self.tracker.learners)
        node = change.node_id
        if change.kind is ConfChangeKind.ADD_NODE:
            learners.discard(node)
            voters.add(node)
        elif change.kind is ConfChangeKind.ADD_LEARNER:
            if node not in voters:
                learners.add(node)
        else:
            voters.discard(node)
            learners.discard(node)
        conf = ConfState(tuple(sorted(voters)), tuple(sorted(learners)))
        self.tracker.set_conf(conf, self.log.last_index() + 1)
        if self.role is Role.LEADER:
            if self.lead_transferee not in self.tracker.progress:
                self.lead_transferee = NO_NODE
            if self._maybe_commit():
                self._broadcast_append()
        return conf

    # ------------------------------------------------------------------------------- reads

    def read_index(self, context: bytes) -> None:
        if self.role is Role.LEADER:
            self._handle_read_request(self.id, context)
        elif self.lead != NO_NODE:
            self._send(ReadIndexRequest(self.id, self.lead, self.term, context))
        else:
            raise NotLeader(NO_NODE)

    def _handle_read_request(self, origin: NodeId, context: bytes) -> None:
        if len(self.tracker.voters) == 1 and self.id in self.tracker.voters:
            self._respond_read(origin, self.log.committed, context)
        elif not self._committed_in_term():
            # Our commit index may be stale until an entry of this term commits.
            self._pending_reads.append((origin, context))
        elif self.read_only.add_request(self.log.committed, origin, context):
            self._ack_read(self.id, context)
            self._broadcast_heartbeat(context)

    def _ack_read(self, node: NodeId, context: bytes) -> None:
        acks = self.read_only.recv_ack(node, context)
        if acks is None:
            return
        if vote_result(self.tracker.voters, dict.fromkeys(acks, True)) is not VoteResult.WON:
            return
        for request in self.read_only.advance(context):
            self._respond_read(request.origin, request.index, request.context)

    def _respond_read(self, origin: NodeId, index: Index, context: bytes) -> None:
        if origin == self.id:
            self._read_states.append(ReadState(index, context))
        else:
            self._send(ReadIndexResponse(self.id, origin, self.term, index, context))

    def _release_pending_reads(self) -> None:
        pending, self._pending_reads = self._pending_reads, []
        for origin, context in pending:
            self._handle_read_request(origin, context)

    # ---------------------------------------------------------------- transfer and reports

    def transfer_leadership(self, target: NodeId) -> None:
        if self.role is Role.LEADER:
            self._handle_transfer(target)
        elif self.lead != NO_NODE:
            self._send(TransferLeader(self.id, self.lead, self.term, target))
        else:
            raise NotLeader(NO_NODE)

    def _handle_transfer(self, target: NodeId) -> None:
        if target == self.id or target not in self.tracker.voters:
            return
        if self.lead_transferee == target:
            return
        self._logger.info("node %x transferring leadership to %x", self.id, target)
        self.lead_transferee = target
        self.election_elapsed = 0
        if self.tracker.progress[target].match == self.log.last_index():
            self._send(TimeoutNow(self.id, target, self.term))
        else:
            self._send_append(target)

    def report_unreachable(self, node: NodeId) -> None:
        pr = self.tracker.progress.get(node)
        if self.role is Role.LEADER and pr is not None and pr.state is ProgressState.REPLICATE:
            pr.become_probe()

    def report_snapshot(self, node: NodeId, ok: bool) -> None:
        pr = self.tracker.progress.get(node)
        if self.role is not Role.LEADER or pr is None or pr.state is not ProgressState.SNAPSHOT:
            return
        if not ok:
            pr.pending_snapshot = 0
        pr.become_probe()
        pr.probe_sent = True  # wait for the follower's answer or the next heartbeat response

    # ------------------------------------------------------------------------- ready/advance

    def _soft_state(self) -> SoftState:
        return SoftState(self.lead, self.role)

    def has_ready(self) -> bool:
        return bool(
            self._needs_broadcast
            or self._msgs
            or self._msgs_after_persist
            or self._read_states
            or self.log.unstable_entries()
            or self.log.pending_snapshot is not None
            or self.log.has_next_committed_entries()
            or self._soft_state() != self._prev_soft
            or self._hard_state() != self._prev_hard
        )

    def ready(self) -> Ready:
        if self._needs_broadcast:
            self._needs_broadcast = False
            if self.role is Role.LEADER:
                self._broadcast_append()
        soft = self._soft_state()
        hard = self._hard_state()
        entries = self.log.unstable_entries()
        snapshot = self.log.pending_snapshot
        must_sync = (
            bool(entries)
            or snapshot is not None
            or (hard.term != self._prev_hard.term or hard.vote != self._prev_hard.vote)
        )
        rd = Ready(
            soft_state=soft if soft != self._prev_soft else None,
            hard_state=hard if hard != self._prev_hard else None,
            entries=entries,
            snapshot=snapshot,
            committed_entries=self.log.next_committed_entries(
                self.config.max_committed_size_per_ready_bytes
            ),
            messages=tuple(self._msgs),
            persisted_messages=tuple(self._msgs_after_persist),
            read_states=tuple(self._read_states),
            must_sync=must_sync,
        )
        self._prev_soft = soft
        self._prev_hard = hard
        self._msgs = []
        self._msgs_after_persist = []
        self._read_states = []
        return rd

    def advance(self, rd: Ready) -> None:
        if rd.snapshot is not None:
            self.log.stable_snapshot_to(rd.snapshot.meta.index)
            self.log.applied_to(rd.snapshot.meta.index)
        if rd.entries:
            last = rd.entries[-1]
            self.log.stable_to(last.index, last.term)
            if self.role is Role.LEADER and self.log.matches_term(last.index, last.term):
                # The leader counts its own copy only once it is durable.
                own = self.tracker.progress.get(self.id)
                if own is not None and own.maybe_update(last.index) and self._maybe_commit():
                    self._needs_broadcast = True
        if rd.committed_entries:
            self.log.applied_to(rd.committed_entries[-1].index)
            if self._uncommitted_bytes:
                # Entries of an earlier leader's term may count here too; never below zero.
                done = sum(len(e.data) for e in rd.committed_entries)
                self._uncommitted_bytes = max(0, self._uncommitted_bytes - done)

    def status(self) -> Status:
        progress = tuple(
            (
                node,
                ProgressStatus(pr.match, pr.next, pr.state.value, pr.recent_active, pr.is_learner),
            )
            for node, pr in sorted(self.tracker.progress.items())
        )
        return Status(
            id=self.id,
            term=self.term,
            vote=self.vote,
            commit=self.log.committed,
            applied=self.log.applied,
            last_index=self.log.last_index(),
            leader=self.lead,
            role=self.role,
            conf_state=self.tracker.conf_state(),
            lead_transferee=self.lead_transferee,
            progress=progress,
        )
