"""Log storage: the read side the core uses, the write side the driver uses, and the in-memory
reference implementation of both.

The core only ever *reads* storage (``LogStorage``). The driver writes to it (``DurableLog``)
while handling a ``Ready``: it saves ``Ready.snapshot``, ``Ready.entries`` and
``Ready.hard_state`` in one call, and later records snapshots and compacts the log. The same
write interface is implemented by ``MemoryStorage`` (reference and tests), by the simulator's
``SimDisk`` (with a crash model) and by ``raftkv_storage``'s LMDB log (production), and
``raftkv.testing.contracts.LogStorageContract`` holds all of them to it.
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

__all__ = ["DurableLog", "LogStorage", "MemoryStorage", "limit_size"]


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


class DurableLog(LogStorage, Protocol):
    """The write side of the Raft log, beside the read side it extends. The core never calls it.

    Visibility and durability are separate. Every write is visible to readers (the core,
    through ``LogStorage``) as soon as the call returns, synced or not. A write made with
    ``sync=False`` may be lost in a crash, but what survives a crash is always a prefix of the
    writes in the order they were made, each write whole or not at all: never a later write
    without an earlier one, never half of one. A write made with ``sync=True`` is durable when
    the call returns, together with every write before it.

    A write that raises (``InternalError`` for a broken caller contract, ``StorageError`` for a
    failing disk) has changed nothing, in memory or on disk.
    """

    def save(
        self,
        hard_state: HardState | None,
        entries: Sequence[Entry],
        snapshot: Snapshot | None,
        *,
        sync: bool,
    ) -> None:
        """Persist one Ready's ``snapshot``, ``entries`` and ``hard_state`` as one atomic write.

        The parts are applied in this order, so one call can carry all three:

        1. ``snapshot`` (None or empty: none) replaces the whole log; a snapshot no newer than
           the stored one is ignored (it was already installed, or overtaken).
        2. ``entries``, contiguous and ascending, are appended. Those at or below the snapshot
           index are skipped. An entry whose index is already in the log replaces that entry and
           everything after it: a suffix written under an old leader that conflicts with the new
           leader's log is truncated, never merged. The first new entry must be at most
           ``last_index() + 1``; a gap raises ``InternalError``.
        3. ``hard_state`` (None: keep the stored one) replaces the stored term, vote and commit.

        ``sync=True`` is required when ``Ready.must_sync`` is set (new entries, a snapshot, a new
        term or vote), and the caller must not send ``Ready.persisted_messages`` before such a
        call returns: a vote or an acknowledgement promises the recipient that this state
        survives a crash. A hard state whose only change is the commit index may be saved with
        ``sync=False``: a lost commit index is learned again from the leader. A call with
        nothing to save and ``sync=True`` makes every earlier write durable.
        """
        ...

    def create_snapshot(
        self, index: Index, conf_state: ConfState, data: bytes, *, sync: bool = True
    ) -> Snapshot:
        """Record ``data``, the state machine's image as of applied ``index``, and return it.

        ``index`` must still be in the log (``index <= last_index()``, else ``InternalError``);
        one at or below the current snapshot's index changes nothing and returns the current
        snapshot. The log keeps its entries: call :meth:`compact` afterwards.
        """
        ...

    def compact(self, index: Index, *, sync: bool = False) -> None:
        """Drop the entries up to and including ``index``.

        They must be covered by a snapshot (``create_snapshot`` first): a follower that needs
        them gets the snapshot instead. ``index`` past the last index raises ``InternalError``;
        at or below the compaction point it changes nothing. ``sync`` defaults to False because
        a compaction lost in a crash only leaves extra entries behind.
        """
        ...


def _check_append(entries: Sequence[Entry], offset: Index, last: Index) -> None:
    """Raise InternalError unless ``entries`` may be appended to a log holding (offset, last]:
    contiguous, and starting no later than ``last + 1`` once the part at or below ``offset``
    (covered by the snapshot) is skipped."""
    prev = entries[0].index - 1
    for entry in entries:
        if entry.index != prev + 1:
            raise InternalError(f"non-contiguous entries: {prev} then {entry.index}")
        prev = entry.index
    first_new = max(entries[0].index, offset + 1)
    if first_new <= prev and first_new > last + 1:
        raise InternalError(f"missing log entries: last index {last}, appending at {first_new}")


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
    """The reference DurableLog, in memory: every write is visible and "durable" at once.

    Besides ``save``, it keeps single-part writes (``append``, ``set_hard_state``,
    ``apply_snapshot``) for unit tests of the core that build a log piece by piece.

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

    # -- write side (DurableLog) -------------------------------------------------------------

    def save(
        self,
        hard_state: HardState | None,
        entries: Sequence[Entry],
        snapshot: Snapshot | None,
        *,
        sync: bool,
    ) -> None:
        """DurableLog.save. Memory has no durability to add, so ``sync`` changes nothing; the
        checks run before any change, so a refused call leaves the log as it was."""
        newer = snapshot if snapshot is not None and self._is_newer(snapshot) else None
        if entries:
            if newer is not None:
                _check_append(entries, newer.meta.index, newer.meta.index)
            else:
                _check_append(entries, self._entries[0].index, self.last_index())
        if newer is not None:
            self.apply_snapshot(newer)
        if entries:
            self._append_checked(entries)
        if hard_state is not None:
            self._hard_state = hard_state

    def set_hard_state(self, hard_state: HardState) -> None:
        self._hard_state = hard_state

    def append(self, entries: Sequence[Entry]) -> None:
        """Append ``entries``, first truncating any existing suffix they conflict with."""
        if entries:
            _check_append(entries, self._entries[0].index, self.last_index())
            self._append_checked(entries)

    def _append_checked(self, entries: Sequence[Entry]) -> None:
        offset = self._entries[0].index
        first_new = entries[0].index
        if first_new + len(entries) - 1 <= offset:
            return  # entirely covered by the snapshot
        if first_new <= offset:
            entries = entries[offset + 1 - first_new :]
            first_new = entries[0].index
        del self._entries[first_new - offset :]
        self._entries.extend(entries)

    def _is_newer(self, snapshot: Snapshot) -> bool:
        if snapshot.is_empty:
            return False
        return self._snapshot.is_empty or snapshot.meta.index > self._snapshot.meta.index

    def apply_snapshot(self, snapshot: Snapshot) -> None:
        """Replace the whole log with ``snapshot``; older snapshots are ignored."""
        if not self._is_newer(snapshot):
            return
        self._snapshot = snapshot
        self._entries = [Entry(snapshot.meta.term, snapshot.meta.index)]

    def create_snapshot(
        self, index: Index, conf_state: ConfState, data: bytes, *, sync: bool = True
    ) -> Snapshot:
        """DurableLog.create_snapshot (``sync`` changes nothing in memory)."""
        if index <= self._snapshot.meta.index:
            return self._snapshot
        if index > self.last_index():
            raise InternalError(f"snapshot index {index} > last index {self.last_index()}")
        meta = SnapshotMeta(index, self.term(index), conf_state)
        self._snapshot = Snapshot(meta, data)
        return self._snapshot

    def compact(self, index: Index, *, sync: bool = False) -> None:
        """DurableLog.compact (``sync`` changes nothing in memory)."""
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
