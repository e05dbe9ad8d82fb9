"""Raft safety invariants, checked incrementally as the simulated cluster acts.

Each method records one observation and raises :class:`SimulationError` the moment the
observations contradict Raft's guarantees. Everything is O(1) or O(nodes) per observation, so it
can run after every single step of every run.

1. Election safety: at most one leader per term, over the whole run.
2. Log matching: entries persisted anywhere with the same (index, term) have the same content
   and the same previous term.
3. Leader completeness: a leader of term T holds every entry committed in a term before T. A
   hard state (term t, commit c) proves entry c was committed in a term <= t; the new leader
   must hold the highest such entry with t < T (and by log matching all before it).
4. State-machine safety: the same index applies the same entry on every node; snapshots taken
   at the same index hold the same data.
5. Durability: the highest committed entry is on durable storage (or covered by a durable
   snapshot) on a majority of nodes, so no crash can lose an acknowledged write.

Also checked: a voter never grants two candidates a vote in the same term; a leader advances
its commit index only to an entry of its own term (the Figure 8 rule), which catches a broken
commit rule long before the rare schedule in which it loses a committed entry.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from raftkv.raft.storage import MemoryStorage
from raftkv.raft.types import Entry, Index, NodeId, Term
from raftkv.sim.node import SimulationError

__all__ = ["InvariantChecker"]


class InvariantChecker:
    __slots__ = (
        "_commit_points",
        "_log",
        "_snapshots",
        "_votes",
        "committed",
        "leaders",
        "max_commit_seen",
        "max_committed",
        "max_committed_term",
        "quorum",
    )

    def __init__(self, voters: int) -> None:
        self.quorum = voters // 2 + 1
        self.leaders: dict[Term, NodeId] = {}
        self._log: dict[tuple[Index, Term], tuple[Term, bytes, int]] = {}
        self.committed: dict[Index, tuple[Term, bytes | None]] = {}
        """index -> (term, data); data None when known only through a snapshot."""
        self._commit_points: dict[Term, tuple[Index, Term]] = {}
        """hard-state term -> (highest commit index seen with it, term of that entry)."""
        self.max_committed: Index = 0
        self.max_committed_term: Term = 0
        self.max_commit_seen: Index = 0
        """The highest commit index any node's hard state (or snapshot) carried."""
        self._snapshots: dict[Index, bytes] = {}
        self._votes: dict[tuple[NodeId, Term], NodeId] = {}

    # -- 1. election safety -----------------------------------------------------------------

    def leader_elected(self, node: NodeId, term: Term) -> None:
        other = self.leaders.setdefault(term, node)
        if other != node:
            raise SimulationError(
                f"election safety: nodes {other} and {node} both leader in term {term}"
            )

    def vote_granted(self, voter: NodeId, term: Term, candidate: NodeId) -> None:
        other = self._votes.setdefault((voter, term), candidate)
        if other != candidate:
            raise SimulationError(
                f"vote safety: node {voter} voted for {other} and {candidate} in term {term}"
            )

    # -- 2. log matching --------------------------------------------------------------------

    def entries_persisted(self, node: NodeId, entries: Sequence[Entry], prev_term: Term) -> None:
        """``prev_term`` is the term of the entry before ``entries[0]``, or -1 if unknown."""
        log = self._log
        for e in entries:
            key = (e.index, e.term)
            seen = log.get(key)
            if seen is None:
                log[key] = (prev_term, e.data, e.kind)
            elif seen[1] != e.data or seen[2] != e.kind:
                raise SimulationError(
                    f"log matching: node {node} persisted a different entry at index {e.index}"
                    f" term {e.term}: {e.data!r} vs {seen[1]!r}"
                )
            elif seen[0] != prev_term:
                if seen[0] == -1:
                    log[key] = (prev_term, e.data, e.kind)
                elif prev_term != -1:
                    raise SimulationError(
                        f"log matching: node {node} has entry ({e.index}, {e.term}) after term"
                        f" {prev_term}, another node after term {seen[0]}"
                    )
            prev_term = e.term

    # -- 3. leader completeness -------------------------------------------------------------

    def commit_seen(self, index: Index) -> None:
        """Some node's hard state carried commit ``index`` (a snapshot's index counts too)."""
        if index > self.max_commit_seen:
            self.max_commit_seen = index

    def commit_observed(self, node: NodeId, hs_term: Term, index: Index, entry_term: Term) -> None:
        """A node's hard state says (term ``hs_term``, commit ``index``): the entry at ``index``
        (with term ``entry_term``) was committed in a term no later than ``hs_term``."""
        seen = self._commit_points.get(hs_term)
        if seen is None or seen[0] < index:
            self._commit_points[hs_term] = (index, entry_term)

    def leader_committed(self, node: NodeId, term: Term, index: Index, entry_term: Term) -> None:
        """Leader ``node`` of ``term`` advanced its commit index to ``index``: only counting
        replicas of an entry of its own term may do that (Raft §5.4.2, Figure 8)."""
        if entry_term != term:
            raise SimulationError(
                f"commit rule: leader {node} of term {term} committed index {index}, an entry"
                f" of term {entry_term}, by counting replicas"
            )

    def check_leader_log(
        self, node: NodeId, term: Term, term_at: Callable[[Index], Term | None]
    ) -> None:
        """A leader of ``term`` must hold every entry committed in an earlier term; it suffices
        to check the highest one. ``term_at(index)`` gives the leader's term at ``index`` (None:
        covered by its snapshot; -1: missing)."""
        best_index, best_term = 0, 0
        for t, (index, entry_term) in self._commit_points.items():
            if t < term and index > best_index:
                best_index, best_term = index, entry_term
        if best_index == 0:
            return
        found = term_at(best_index)
        if found is not None and found != best_term:
            raise SimulationError(
                f"leader completeness: node {node} leads term {term} but its log has term"
                f" {found} at index {best_index}, committed with term {best_term} before"
                f" term {term}"
            )

    def _note_committed(self, index: Index, term: Term) -> None:
        if index > self.max_committed:
            self.max_committed = index
            self.max_committed_term = term

    # -- 4. state-machine safety ------------------------------------------------------------

    def entry_applied(self, node: NodeId, entry: Entry) -> None:
        index = entry.index
        seen = self.committed.get(index)
        if seen is None:
            self.committed[index] = (entry.term, entry.data)
            self._note_committed(index, entry.term)
            return
        if seen[0] != entry.term or (seen[1] is not None and seen[1] != entry.data):
            raise SimulationError(
                f"state-machine safety: node {node} applied ({index}, {entry.term}, "
                f"{entry.data!r}) where another node applied ({index}, {seen[0]}, {seen[1]!r})"
            )
        if seen[1] is None:
            self.committed[index] = (entry.term, entry.data)

    def snapshot_committed(self, node: NodeId, index: Index, term: Term, data: bytes) -> None:
        """A snapshot at ``index`` was taken or installed: everything up to it is committed."""
        self.commit_seen(index)
        seen = self.committed.get(index)
        if seen is None:
            self.committed[index] = (term, None)
            self._note_committed(index, term)
        elif seen[0] != term:
            raise SimulationError(
                f"state-machine safety: node {node} has a snapshot at index {index} with term"
                f" {term}, but term {seen[0]} was committed there"
            )
        other = self._snapshots.setdefault(index, data)
        if other != data:
            raise SimulationError(
                f"state-machine safety: node {node}'s snapshot at index {index} differs from"
                f" another node's: {data!r} vs {other!r}"
            )

    # -- 5. durability ----------------------------------------------------------------------

    def check_durable(self, durables: Sequence[MemoryStorage], why: str) -> None:
        index = self.max_committed
        if index == 0:
            return
        term = self.max_committed_term
        count = 0
        for storage in durables:
            if index < storage.first_index() or (
                index <= storage.last_index() and storage.term(index) == term
            ):
                count += 1
        if count < self.quorum:
            raise SimulationError(
                f"durability: committed entry ({index}, {term}) is durable on only {count} of"
                f" {len(durables)} nodes (after {why})"
            )
