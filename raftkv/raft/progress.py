"""The leader's view of each follower (Progress, Inflights) and quorum arithmetic.

A follower's progress is in one of three states:
- PROBE: we don't know where its log matches ours; send one append per heartbeat round and wait.
- REPLICATE: it matches up to ``match``; stream appends optimistically (pipelining), bounded by
  ``Inflights``.
- SNAPSHOT: it needs entries we compacted; a snapshot is on its way, send nothing else.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Iterable, Mapping

from raftkv.raft.types import ConfState, Index, NodeId


class ProgressState(enum.Enum):
    PROBE = "probe"
    REPLICATE = "replicate"
    SNAPSHOT = "snapshot"


class Inflights:
    """Appends sent but not yet acknowledged, as (last index, bytes), oldest first."""

    __slots__ = ("_bytes", "_items", "max_bytes", "max_count")

    def __init__(self, max_count: int, max_bytes: int) -> None:
        self.max_count = max_count
        self.max_bytes = max_bytes
        self._items: deque[tuple[Index, int]] = deque()
        self._bytes = 0

    def add(self, last_index: Index, size: int) -> None:
        self._items.append((last_index, size))
        self._bytes += size

    def free_le(self, index: Index) -> None:
        items = self._items
        while items and items[0][0] <= index:
            self._bytes -= items.popleft()[1]

    def free_first_one(self) -> None:
        if self._items:
            self._bytes -= self._items.popleft()[1]

    def full(self) -> bool:
        return len(self._items) >= self.max_count or (
            self.max_bytes > 0 and self._bytes >= self.max_bytes
        )

    def reset(self) -> None:
        self._items.clear()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._items)


class Progress:
    __slots__ = (
        "inflights",
        "is_learner",
        "match",
        "next",
        "pending_snapshot",
        "probe_sent",
        "recent_active",
        "snapshot_stalls",
        "state",
    )

    def __init__(self, next_index: Index, inflights: Inflights, is_learner: bool) -> None:
        self.match: Index = 0
        self.next: Index = next_index
        self.state = ProgressState.PROBE
        self.probe_sent = False
        self.pending_snapshot: Index = 0
        self.snapshot_stalls = 0
        self.recent_active = False
        self.inflights = inflights
        self.is_learner = is_learner

    def _reset_state(self, state: ProgressState) -> None:
        self.probe_sent = False
        self.pending_snapshot = 0
        self.snapshot_stalls = 0
        self.state = state
        self.inflights.reset()

    def become_probe(self) -> None:
        if self.state is ProgressState.SNAPSHOT:
            pending = self.pending_snapshot
            self._reset_state(ProgressState.PROBE)
            self.next = max(self.match + 1, pending + 1)
        else:
            self._reset_state(ProgressState.PROBE)
            self.next = self.match + 1

    def become_replicate(self) -> None:
        self._reset_state(ProgressState.REPLICATE)
        self.next = self.match + 1

    def become_snapshot(self, snapshot_index: Index) -> None:
        self._reset_state(ProgressState.SNAPSHOT)
        self.pending_snapshot = snapshot_index

    def maybe_update(self, index: Index) -> bool:
        """An acknowledgement up to ``index`` arrived; returns whether ``match`` advanced."""
        updated = self.match < index
        if updated:
            self.match = index
            self.probe_sent = False
        self.next = max(self.next, index + 1)
        return updated

    def maybe_decr_to(self, rejected: Index, match_hint: Index) -> bool:
        """The follower rejected an append at ``rejected``; returns False if that is stale."""
        if self.state is ProgressState.REPLICATE:
            if rejected <= self.match:
                return False
            self.next = self.match + 1
            return True
        if self.next - 1 != rejected:
            return False
        self.next = max(min(rejected, match_hint + 1), self.match + 1)
        self.probe_sent = False
        return True

    def is_paused(self) -> bool:
        if self.state is ProgressState.PROBE:
            return self.probe_sent
        if self.state is ProgressState.REPLICATE:
            return self.inflights.full()
        return True


def majority(n: int) -> int:
    return n // 2 + 1


def committed_index(voters: Iterable[NodeId], match: Mapping[NodeId, Index]) -> Index:
    """The largest index that a majority of ``voters`` have (0 for no voters)."""
    indexes = sorted((match.get(v, 0) for v in voters), reverse=True)
    if not indexes:
        return 0
    return indexes[majority(len(indexes)) - 1]


class VoteResult(enum.Enum):
    PENDING = "pending"
    WON = "won"
    LOST = "lost"


def vote_result(voters: Iterable[NodeId], votes: Mapping[NodeId, bool]) -> VoteResult:
    voter_list = tuple(voters)
    granted = sum(1 for v in voter_list if votes.get(v) is True)
    rejected = sum(1 for v in voter_list if votes.get(v) is False)
    need = majority(len(voter_list))
    if granted >= need:
        return VoteResult.WON
    if rejected > len(voter_list) - need:
        return VoteResult.LOST
    return VoteResult.PENDING


class ProgressTracker:
    """Membership plus one Progress per member."""

    def __init__(self, conf_state: ConfState, max_inflight: int, max_inflight_bytes: int) -> None:
        self.max_inflight = max_inflight
        self.max_inflight_bytes = max_inflight_bytes
        self.voters: tuple[NodeId, ...] = conf_state.voters
        self.learners: tuple[NodeId, ...] = conf_state.learners
        self.progress: dict[NodeId, Progress] = {}
        self.reset(1)

    def conf_state(self) -> ConfState:
        return ConfState(self.voters, self.learners)

    def members(self) -> tuple[NodeId, ...]:
        return tuple(sorted(self.voters + self.learners))

    def _new_progress(self, next_index: Index, is_learner: bool) -> Progress:
        return Progress(
            next_index, Inflights(self.max_inflight, self.max_inflight_bytes), is_learner
        )

    def reset(self, next_index: Index) -> None:
        """Forget everything about followers; used on every role change."""
        learners = set(self.learners)
        self.progress = {
            node: self._new_progress(next_index, node in learners) for node in self.members()
        }

    def set_conf(self, conf_state: ConfState, next_index: Index) -> None:
        self.voters = conf_state.voters
        self.learners = conf_state.learners
        old = self.progress
        learners = set(self.learners)
        self.progress = {}
        for node in self.members():
            pr = old.get(node) or self._new_progress(next_index, node in learners)
            pr.is_learner = node in learners
            self.progress[node] = pr

    def committed(self) -> Index:
        return committed_index(self.voters, {n: p.match for n, p in self.progress.items()})

    def quorum_active(self, self_id: NodeId) -> bool:
        active = sum(
            1
            for v in self.voters
            if v == self_id or (v in self.progress and self.progress[v].recent_active)
        )
        return active >= majority(len(self.voters))
