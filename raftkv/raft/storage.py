"""The read side of log storage, as the core sees it, and the in-memory reference implementation.

The core only ever *reads* storage. The driver writes to it while handling a ``Ready``:
it appends ``Ready.entries``, saves ``Ready.hard_state`` and installs ``Ready.snapshot``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from raftkv.errors import (
    CompactedError,
    InternalError,
    SnapshotTemporarilyUnavailable,
    UnavailableError,
)
from raftkv.raft.types import (
    EMPTY_HARD_STATE,
    ConfState,
    Entry,
    HardState,
    Index,
    Snapshot,
    SnapshotMeta,
    Term,
)

__all__ = ["LogStorage", "MemoryStorage", "limit_size"]


class LogStorage(Protocol):
    """What the core reads. Errors: CompactedError, UnavailableError,
    SnapshotTemporarilyUnavailable; any other exception makes the node inoperable."""

    def initial_state(self) -> tuple[HardState, ConfState]: ...

    def entries(self, lo: Index, hi: Index, max_size: int | None = None) -> Sequence[Entry]:
        """Entries in [lo, hi), at least one if any, and at most ``max_size`` bytes after it."""
        ...

    def term(self, index: Index) -> Term:
        """Term of the entry at ``index``; valid from ``first_index() - 1`` (the snapshot)."""
        ...

    def first_index(self) -> Index: ...

    def last_index(self) -> Index: ...

    def snapshot(self) -> Snapshot:
        """The most recent snapshot, for a follower that needs compacted entries."""
        ...


def limit_size(entries: Sequence[Entry], max_size: int | None) -> Sequence[Entry]:
    """The longest prefix within ``max_size`` bytes, but never fewer than one entry."""
    if max_size is None or len(entries) <= 1:
        return entries
    total = entries[0].size()
    for n in range(1, len(entries)):
        total += entries[n].size()
        if total > max_size:
            return entries[:n]
    return entries


class MemoryStorage:
    """A complete in-memory LogStorage with the write side the driver needs.

    ``_entries[0]`` is a sentinel holding the snapshot's (index, term), so ``term()`` of the
    snapshot index works without special cases.
    """

    def __init__(self, conf_state: ConfState | None = None) -> None:
        self._hard_state = EMPTY_HARD_STATE
        self._snapshot = Snapshot(SnapshotMeta(conf_state=conf_state or ConfState()))
        self._entries: list[Entry] = [Entry(0, 0)]

    # -- read side ----------------------------------------------------------------------------

    def initial_state(self) -> tuple[HardState, ConfState]:
        return self._hard_state, self._snapshot.meta.conf_state

    def entries(self, lo: Index, hi: Index, max_size: int | None = None) -> Sequence[Entry]:
        offset = self._entries[0].index
        if lo <= offset:
            raise CompactedError(f"index {lo} is compacted (first index {offset + 1})")
        if hi > self.last_index() + 1:
            raise UnavailableError(f"index {hi - 1} is past the last index {self.last_index()}")
        return limit_size(self._entries[lo - offset : hi - offset], max_size)

    def term(self, index: Index) -> Term:
        offset = self._entries[0].index
        if index < offset:
            raise CompactedError(f"index {index} is compacted (first index {offset + 1})")
        if index - offset >= len(self._entries):
            raise UnavailableError(f"index {index} is past the last index {self.last_index()}")
        return self._entries[index - offset].term

    def first_index(self) -> Index:
        return self._entries[0].index + 1

    def last_index(self) -> Index:
        return self._entries[0].index + len(self._entries) - 1

    def snapshot(self) -> Snapshot:
        if self._snapshot.is_empty:
            # Nothing compacted yet: a follower that needs a snapshot can use the log instead.
            raise SnapshotTemporarilyUnavailable("no snapshot has been taken yet")
        return self._snapshot

    @property
    def hard_state(self) -> HardState:
        return self._hard_state

    # -- write side ---------------------------------------------------------------------------

    def set_hard_state(self, hard_state: HardState) -> None:
        self._hard_state = hard_state

    def append(self, entries: Sequence[Entry]) -> None:
        """Append ``entries``, first truncating any existing suffix they conflict with."""
        if not entries:
            return
        first_new = entries[0].index
        offset = self._entries[0].index
        if first_new + len(entries) - 1 <= offset:
            return  # entirely covered by the snapshot
        if first_new <= offset:
            entries = entries[offset + 1 - first_new :]
            first_new = entries[0].index
        if first_new > self.last_index() + 1:
            raise InternalError(
                f"missing log entries: last index {self.last_index()}, appending at {first_new}"
            )
        del self._entries[first_new - offset :]
        self._entries.extend(entries)

    def apply_snapshot(self, snapshot: Snapshot) -> None:
        """Replace the whole log with ``snapshot``; older snapshots are ignored."""
        if snapshot.meta.index <= self._snapshot.meta.index and not self._snapshot.is_empty:
            return
        self._snapshot = snapshot
        self._entries = [Entry(snapshot.meta.term, snapshot.meta.index)]

    def create_snapshot(self, index: Index, conf_state: ConfState, data: bytes) -> Snapshot:
        """Record a snapshot of the state machine as of ``index`` (which must be applied)."""
        if index <= self._snapshot.meta.index:
            return self._snapshot
        if index > self.last_index():
            raise InternalError(f"snapshot index {index} > last index {self.last_index()}")
        meta = SnapshotMeta(index, self.term(index), conf_state)
        self._snapshot = Snapshot(meta, data)
        return self._snapshot

    def compact(self, index: Index) -> None:
        """Drop entries up to and including ``index``; they must be covered by a snapshot."""
        offset = self._entries[0].index
        if index <= offset:
            return
        if index > self.last_index():
            raise InternalError(f"compact {index} is past the last index {self.last_index()}")
        self._entries = self._entries[index - offset :]
        tail = self._entries[0]
        self._entries[0] = Entry(tail.term, tail.index)

    def copy(self) -> MemoryStorage:
        clone = MemoryStorage()
        clone._hard_state = self._hard_state
        clone._snapshot = self._snapshot
        clone._entries = list(self._entries)
        return clone
