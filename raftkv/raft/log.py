"""RaftLog: the log as the core sees it, stable storage plus entries not yet persisted.

Invariants (checked where they could break):
- ``applied <= committed <= last_index()``;
- entries below ``unstable_offset`` are read from storage, entries at or above it from
  ``_unstable``; storage may still hold stale entries at or above the offset until the driver
  persists the unstable suffix, which overwrites them;
- a pending (unstable) snapshot replaces the whole log up to its index.
"""

from __future__ import annotations

from collections.abc import Sequence

from raftkv.errors import CompactedError, InternalError, UnavailableError, invariant
from raftkv.raft.storage import LogStorage, limit_size
from raftkv.raft.types import Entry, Index, Snapshot, Term


class RaftLog:
    def __init__(self, storage: LogStorage, applied: Index = 0) -> None:
        self.storage = storage
        first = storage.first_index()
        last = storage.last_index()
        self._unstable: list[Entry] = []
        self.unstable_offset: Index = last + 1
        self.pending_snapshot: Snapshot | None = None
        self.committed: Index = first - 1
        self.applied: Index = first - 1
        hard_state, _ = storage.initial_state()
        if hard_state.commit:
            self.commit_to(hard_state.commit)
        if applied:
            self.applied = max(self.applied, min(applied, self.committed))

    # -- indexes and terms ----------------------------------------------------------------------

    def first_index(self) -> Index:
        if self.pending_snapshot is not None:
            return self.pending_snapshot.meta.index + 1
        return self.storage.first_index()

    def last_index(self) -> Index:
        if self._unstable:
            return self.unstable_offset + len(self._unstable) - 1
        if self.pending_snapshot is not None:
            return self.pending_snapshot.meta.index
        return self.storage.last_index()

    def stable_last_index(self) -> Index:
        """The last index known to be durable and still part of this log."""
        if self.pending_snapshot is not None:
            return 0
        return self.unstable_offset - 1

    def term(self, index: Index) -> Term:
        """Raises CompactedError or UnavailableError outside [first_index - 1, last_index]."""
        if index >= self.unstable_offset and self._unstable:
            pos = index - self.unstable_offset
            if pos >= len(self._unstable):
                raise UnavailableError(f"index {index} is past the last index")
            return self._unstable[pos].term
        snap = self.pending_snapshot
        if snap is not None:
            if index == snap.meta.index:
                return snap.meta.term
            if index < snap.meta.index:
                raise CompactedError(f"index {index} is compacted")
            raise UnavailableError(f"index {index} is past the last index")
        if index >= self.unstable_offset:
            raise UnavailableError(f"index {index} is past the last index")
        return self.storage.term(index)

    def last_term(self) -> Term:
        return self.term(self.last_index())

    def matches_term(self, index: Index, term: Term) -> bool:
        try:
            return self.term(index) == term
        except (CompactedError, UnavailableError):
            return False

    def is_up_to_date(self, last_index: Index, last_term: Term) -> bool:
        """Raft §5.4.1: is a log ending at (last_index, last_term) at least as up to date?"""
        my_term = self.last_term()
        return last_term > my_term or (last_term == my_term and last_index >= self.last_index())

    # -- reading entries ------------------------------------------------------------------------

    def slice(self, lo: Index, hi: Index, max_size: int | None = None) -> list[Entry]:
        """Entries in [lo, hi), bounded by ``max_size`` bytes (but at least one)."""
        if lo >= hi:
            return []
        if lo < self.first_index():
            raise CompactedError(f"index {lo} is compacted")
        if hi > self.last_index() + 1:
            raise UnavailableError(f"index {hi - 1} is past the last index")
        result: list[Entry] = []
        if lo < self.unstable_offset:
            result.extend(self.storage.entries(lo, min(hi, self.unstable_offset), max_size))
            if len(result) < min(hi, self.unstable_offset) - lo:
                return result  # storage already cut at max_size
        if hi > self.unstable_offset:
            start = max(lo, self.unstable_offset) - self.unstable_offset
            result.extend(self._unstable[start : hi - self.unstable_offset])
        return list(limit_size(result, max_size))

    def entries_from(self, lo: Index, max_size: int | None) -> list[Entry]:
        return self.slice(lo, self.last_index() + 1, max_size)

    def unstable_entries(self) -> tuple[Entry, ...]:
        return tuple(self._unstable)

    def has_next_committed_entries(self) -> bool:
        return self.pending_snapshot is None and self.committed > self.applied

    def next_committed_entries(self, max_size: int | None) -> tuple[Entry, ...]:
        if not self.has_next_committed_entries():
            return ()
        return tuple(self.slice(self.applied + 1, self.committed + 1, max_size))

    # -- appending ------------------------------------------------------------------------------

    def append(self, entries: Sequence[Entry]) -> Index:
        """Append ``entries``, replacing the suffix from their first index; return last index."""
        if not entries:
            return self.last_index()
        first = entries[0].index
        if first - 1 < self.committed:
            raise InternalError(f"appending at {first} would overwrite committed {self.committed}")
        if first > self.last_index() + 1:
            raise InternalError(f"gap: appending at {first} after last index {self.last_index()}")
        if first == self.unstable_offset + len(self._unstable):
            self._unstable.extend(entries)
        elif first <= self.unstable_offset:
            # Replaces entries possibly in storage already; persisting this suffix truncates them.
            self.unstable_offset = first
            self._unstable = list(entries)
        else:
            del self._unstable[first - self.unstable_offset :]
            self._unstable.extend(entries)
        return self.last_index()

    def find_conflict(self, entries: Sequence[Entry]) -> Index:
        """Index of the first entry whose term differs from ours (or that we lack); 0 if none."""
        for entry in entries:
            if not self.matches_term(entry.index, entry.term):
                return entry.index
        return 0

    def maybe_append(
        self, prev_index: Index, prev_term: Term, commit: Index, entries: Sequence[Entry]
    ) -> Index | None:
        """Follower side of AppendEntries. Returns the last index now known to match the
        leader's log, or None if (prev_index, prev_term) does not match.

        Entries that already match are kept: a stale or duplicated append must never truncate
        entries that a later append added (they may be acknowledged, even committed)."""
        if not self.matches_term(prev_index, prev_term):
            return None
        last_new = prev_index + len(entries)
        conflict = self.find_conflict(entries)
        if conflict:
            invariant(
                conflict > self.committed,
                f"entry {conflict} conflicts with committed entry (committed {self.committed})",
            )
            self.append(entries[conflict - prev_index - 1 :])
        self.commit_to(min(commit, last_new))
        return last_new

    def find_conflict_by_term(self, index: Index, term: Term) -> tuple[Index, Term]:
        """The largest (i, t) with i <= index and t = term(i) <= ``term``; used to skip a whole
        conflicting term per round trip. Returns (i, 0) if the term at i is compacted."""
        while index > 0:
            try:
                t = self.term(index)
            except CompactedError:
                return index, 0
            except UnavailableError:
                index = self.last_index()
                continue
            if t <= term:
                return index, t
            index -= 1
        return 0, 0

    # -- commit, apply, persistence -------------------------------------------------------------

    def commit_to(self, index: Index) -> None:
        if index > self.committed:
            invariant(
                index <= self.last_index(),
                f"commit index {index} is past the last index {self.last_index()}",
            )
            self.committed = index

    def applied_to(self, index: Index) -> None:
        if index:
            invariant(
                self.applied <= index <= self.committed,
                f"applied {index} outside [{self.applied}, {self.committed}]",
            )
            self.applied = index

    def stable_to(self, index: Index, term: Term) -> None:
        """Entries up to (index, term) are durable. Ignored if they were replaced meanwhile."""
        if index < self.unstable_offset or not self._unstable:
            return
        pos = index - self.unstable_offset
        if pos >= len(self._unstable) or self._unstable[pos].term != term:
            return
        del self._unstable[: pos + 1]
        self.unstable_offset = index + 1

    def stable_snapshot_to(self, index: Index) -> None:
        if self.pending_snapshot is not None and self.pending_snapshot.meta.index == index:
            self.pending_snapshot = None

    def restore(self, snapshot: Snapshot) -> None:
        """Replace the whole log with ``snapshot`` (not yet persisted)."""
        self.pending_snapshot = snapshot
        self._unstable = []
        self.unstable_offset = snapshot.meta.index + 1
        self.committed = snapshot.meta.index
