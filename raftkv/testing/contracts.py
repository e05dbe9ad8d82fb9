"""Conformance suites that every storage implementation must pass.

``LogStorageContract`` is a pytest mixin for a :class:`~raftkv.raft.storage.DurableLog`: it
writes only through the DurableLog interface (``save``, ``create_snapshot``, ``compact``) and
reads through ``LogStorage``. Subclass it in a test module as ``TestX`` and implement
:meth:`make` (and :meth:`reopen` for durable storage)::

    class TestMemoryLog(LogStorageContract):
        def make(self, tmp_path): return MemoryStorage()

Every test then runs against the implementation, including a seeded differential test that
replays random saves against ``MemoryStorage`` as the reference model.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from raftkv.errors import (
    CompactedError,
    InternalError,
    SnapshotTemporarilyUnavailable,
    UnavailableError,
)
from raftkv.raft.storage import DurableLog, MemoryStorage
from raftkv.raft.types import ConfState, Entry, EntryKind, HardState, Snapshot, SnapshotMeta

__all__ = ["LogStorageContract", "ents"]

_E = TypeVar("_E", bound=BaseException)


def ents(*pairs: tuple[int, int], data: bytes | None = None) -> list[Entry]:
    """Entries from ``(index, term)`` pairs; the payload names the pair unless given."""
    return [
        Entry(t, i, EntryKind.NORMAL, data if data is not None else f"{i}/{t}".encode())
        for i, t in pairs
    ]


def _raises(exc: type[_E], fn: Callable[[], object]) -> None:
    try:
        fn()
    except exc:
        return
    raise AssertionError(f"expected {exc.__name__}")


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise AssertionError(msg)


def _append(s: DurableLog, entries: list[Entry]) -> None:
    s.save(None, entries, None, sync=True)


class LogStorageContract:
    """Mixin: the behaviour every DurableLog shares with MemoryStorage."""

    durable = False
    """Set True when :meth:`reopen` returns a new instance over the same durable state."""

    def make(self, tmp_path: Path) -> DurableLog:
        raise NotImplementedError

    def reopen(self, storage: DurableLog, tmp_path: Path) -> DurableLog:
        """The log as a restart finds it, after a last write made with ``sync=True``."""
        return storage

    # -- reads and appends ------------------------------------------------------------------

    def test_empty(self, tmp_path: Path) -> None:
        s = self.make(tmp_path)
        _check(s.first_index() == 1 and s.last_index() == 0, "empty log bounds")
        _check(s.term(0) == 0, "term(0) is 0")
        _check(s.initial_state()[0] == HardState(), "empty hard state")
        _raises(UnavailableError, lambda: s.term(1))
        _raises(SnapshotTemporarilyUnavailable, s.snapshot)
        _check(list(s.entries(1, 1)) == [], "empty slice")

    def test_save_and_read(self, tmp_path: Path) -> None:
        s = self.make(tmp_path)
        _append(s, ents((1, 1), (2, 1), (3, 2)))
        _check(s.last_index() == 3, "last index")
        _check([e.term for e in s.entries(1, 4)] == [1, 1, 2], "terms")
        _check(s.entries(2, 3)[0].data == b"2/1", "payload")
        _check(s.term(3) == 2, "term")
        _raises(UnavailableError, lambda: s.entries(1, 5))
        _raises(UnavailableError, lambda: s.term(4))

    def test_save_replaces_a_conflicting_suffix(self, tmp_path: Path) -> None:
        s = self.make(tmp_path)
        _append(s, ents((1, 1), (2, 1), (3, 1), (4, 1)))
        _append(s, ents((3, 2)))
        _check(s.last_index() == 3 and s.term(3) == 2, "suffix replaced, not merged")
        _raises(UnavailableError, lambda: s.term(4))
        _append(s, ents((4, 2), (5, 2)))
        _check([e.index for e in s.entries(1, 6)] == [1, 2, 3, 4, 5], "contiguous")
        # The caller (the core) has found where the new entries start; from there on the log
        # is theirs, even where the terms happen to match.
        _append(s, ents((2, 1), (3, 2)))
        _check(s.last_index() == 3, "the tail after the saved entries is gone")

    def test_max_size(self, tmp_path: Path) -> None:
        s = self.make(tmp_path)
        _append(s, ents((1, 1), (2, 1), (3, 1), data=b"x" * 100))
        one = s.entries(1, 4, 0)
        _check(len(one) == 1, "at least one entry even over the limit")
        _check(len(s.entries(1, 4, 2 * one[0].size())) == 2, "two fit")
        _check(len(s.entries(1, 4, None)) == 3, "no limit")

    # -- save: hard state, order, atomicity --------------------------------------------------

    def test_save_hard_state(self, tmp_path: Path) -> None:
        s = self.make(tmp_path)
        s.save(HardState(3, 2, 2), ents((1, 1), (2, 1)), None, sync=True)
        _check(s.initial_state()[0] == HardState(3, 2, 2), "hard state saved with entries")
        _append(s, ents((3, 3)))
        _check(s.initial_state()[0] == HardState(3, 2, 2), "None keeps the hard state")
        s.save(HardState(3, 2, 3), (), None, sync=False)
        _check(s.initial_state()[0] == HardState(3, 2, 3), "a commit-only change, unsynced")

    def test_save_applies_snapshot_then_entries_then_hard_state(self, tmp_path: Path) -> None:
        s = self.make(tmp_path)
        _append(s, ents((1, 1), (2, 1), (3, 1)))
        snap = Snapshot(SnapshotMeta(10, 3, ConfState((1, 2))), b"img")
        s.save(HardState(4, 1, 11), ents((11, 4), (12, 4)), snap, sync=True)
        _check(s.first_index() == 11 and s.last_index() == 12, "entries follow the snapshot")
        _check(s.term(10) == 3 and s.term(12) == 4, "terms across the snapshot point")
        _check(s.snapshot() == snap, "snapshot installed")
        _check(s.initial_state() == (HardState(4, 1, 11), ConfState((1, 2))), "initial state")
        _raises(CompactedError, lambda: s.entries(3, 4))

    def test_save_is_atomic(self, tmp_path: Path) -> None:
        s = self.make(tmp_path)
        s.save(HardState(1, 1, 2), ents((1, 1), (2, 1)), None, sync=True)
        before = (s.initial_state(), list(s.entries(1, 3)))
        gap = ents((4, 2))
        _raises(InternalError, lambda: s.save(HardState(2, 2, 4), gap, None, sync=True))
        holes = ents((3, 2), (5, 2))
        _raises(InternalError, lambda: s.save(HardState(2, 2, 5), holes, None, sync=True))
        snap = Snapshot(SnapshotMeta(10, 2, ConfState((1,))), b"img")
        late = ents((12, 2))
        _raises(InternalError, lambda: s.save(HardState(2, 2, 12), late, snap, sync=True))
        after = (s.initial_state(), list(s.entries(1, 3)))
        _check(after == before, "a refused save changed nothing")
        _check(s.last_index() == 2, "no entry of a refused save")
        _raises(SnapshotTemporarilyUnavailable, s.snapshot)
        _append(s, ents((3, 2)))
        _check(s.last_index() == 3, "the log still takes writes")

    def test_save_snapshot_replaces_log(self, tmp_path: Path) -> None:
        s = self.make(tmp_path)
        _append(s, ents((1, 1), (2, 1), (3, 1)))
        snap = Snapshot(SnapshotMeta(10, 3, ConfState((1,))), b"img")
        s.save(None, (), snap, sync=True)
        _check(s.first_index() == 11 and s.last_index() == 10, "bounds")
        _check(s.term(10) == 3, "term of snapshot index")
        s.save(None, (), Snapshot(SnapshotMeta(8, 2, ConfState((1,))), b"old"), sync=True)
        _check(s.snapshot().data == b"img", "an older snapshot is ignored")
        _append(s, ents((11, 3), (12, 4)))
        _check(s.last_index() == 12, "append after snapshot")
        _append(s, ents((9, 3), (10, 3), (11, 5)))
        _check(s.term(11) == 5 and s.last_index() == 11, "covered prefix skipped")

    # -- snapshots, compaction, restarts -----------------------------------------------------

    def test_snapshot_and_compact(self, tmp_path: Path) -> None:
        s = self.make(tmp_path)
        _append(s, ents(*[(i, 1 + i // 3) for i in range(1, 10)]))
        cs = ConfState((1, 2, 3))
        snap = s.create_snapshot(5, cs, b"state@5")
        _check(snap.meta == SnapshotMeta(5, s.term(5), cs), "snapshot meta")
        _check(s.create_snapshot(4, cs, b"old") == snap, "an older index returns the current")
        _raises(InternalError, lambda: s.create_snapshot(10, cs, b"future"))
        s.compact(5)
        _check(s.first_index() == 6 and s.last_index() == 9, "bounds after compact")
        _check(s.term(5) == snap.meta.term, "term of the compaction point")
        _raises(CompactedError, lambda: s.term(4))
        _raises(CompactedError, lambda: s.entries(5, 7))
        _check(s.snapshot().data == b"state@5", "snapshot data")
        _check(s.initial_state()[1] == cs, "conf state")
        s.compact(3)  # no-op, already compacted
        _check(s.first_index() == 6, "compact below offset is a no-op")
        _raises(InternalError, lambda: s.compact(10))

    def test_reopen_keeps_everything(self, tmp_path: Path) -> None:
        s = self.make(tmp_path)
        _append(s, ents(*[(i, 1) for i in range(1, 21)]))
        s.create_snapshot(10, ConfState((1,)), b"ten", sync=False)
        s.compact(10)
        s.save(HardState(2, 1, 19), ents((20, 2)), None, sync=True)
        s = self.reopen(s, tmp_path)
        _check(s.first_index() == 11 and s.last_index() == 20, "bounds survive reopen")
        _check(s.term(20) == 2 and s.term(10) == 1, "terms survive")
        _check(s.initial_state() == (HardState(2, 1, 19), ConfState((1,))), "state survives")
        _check(s.snapshot().data == b"ten", "snapshot survives")

    def test_random_saves_match_reference(self, tmp_path: Path) -> None:
        for seed in range(4):
            self._differential(random.Random(seed), tmp_path / f"d{seed}")

    def _differential(self, rng: random.Random, tmp_path: Path) -> None:
        tmp_path.mkdir(parents=True, exist_ok=True)
        s = self.make(tmp_path)
        ref = MemoryStorage()
        for step in range(120):
            op = rng.random()
            last = ref.last_index()
            if op < 0.6:
                self._random_save(rng, step, s, ref)
            elif op < 0.75 and last >= ref.first_index():
                applied = rng.randint(ref.first_index(), last)
                data = f"snap{applied}".encode()
                sync = rng.random() < 0.5
                s.create_snapshot(applied, ConfState((1, 2)), data, sync=sync)
                ref.create_snapshot(applied, ConfState((1, 2)), data)
                s.compact(applied)
                ref.compact(applied)
            elif op < 0.85:
                self._random_refused_save(rng, s, ref)
            elif op < 0.9 and self.durable:
                s.save(None, (), None, sync=True)  # everything so far becomes durable
                s = self.reopen(s, tmp_path)
            self._same(s, ref)

    @staticmethod
    def _random_save(rng: random.Random, step: int, s: DurableLog, ref: MemoryStorage) -> None:
        """A Ready's worth: maybe a newer snapshot, maybe entries, maybe a hard state."""
        snap: Snapshot | None = None
        last = ref.last_index()
        if rng.random() < 0.1:
            meta = SnapshotMeta(last + rng.randint(1, 5), ref.term(last) + 1, ConfState((4,)))
            snap = Snapshot(meta, b"installed")
        new: list[Entry] = []
        if rng.random() < 0.8:
            # Raft never truncates committed entries; neither does this model.
            base = snap.meta if snap is not None else None
            lo_min = base.index + 1 if base else max(ref.first_index(), ref.hard_state.commit + 1)
            lo = rng.randint(lo_min, base.index + 1 if base else last + 1)
            prev_term = base.term if base else ref.term(lo - 1)
            term = max(prev_term, 1) + rng.randint(0, 2)
            new = ents(*[(i, term) for i in range(lo, lo + rng.randint(1, 6))])
        hs: HardState | None = None
        if rng.random() < 0.5:
            top = new[-1].index if new else (snap.meta.index if snap else last)
            floor = snap.meta.index if snap else ref.first_index() - 1
            hs = HardState(step, rng.randint(0, 3), rng.randint(min(floor, top), top))
        sync = rng.random() < 0.7
        s.save(hs, new, snap, sync=sync)
        ref.save(hs, new, snap, sync=sync)

    @staticmethod
    def _random_refused_save(rng: random.Random, s: DurableLog, ref: MemoryStorage) -> None:
        """A save with a gap after its other parts: refused whole, on both."""
        last = ref.last_index()
        snap: Snapshot | None = None
        if rng.random() < 0.5:
            meta = SnapshotMeta(last + 3, ref.term(last) + 1, ConfState((5,)))
            snap = Snapshot(meta, b"refused")
        start = (snap.meta.index if snap else last) + rng.randint(2, 4)
        bad = ents(*[(i, 9) for i in range(start, start + 2)])
        hs = HardState(99, 1, 0)
        _raises(InternalError, lambda: s.save(hs, bad, snap, sync=True))
        _raises(InternalError, lambda: ref.save(hs, bad, snap, sync=True))

    @staticmethod
    def _same(s: DurableLog, ref: MemoryStorage) -> None:
        _check(s.first_index() == ref.first_index(), "first index")
        _check(s.last_index() == ref.last_index(), "last index")
        _check(s.initial_state() == ref.initial_state(), "initial state")
        lo, hi = ref.first_index(), ref.last_index() + 1
        _check(list(s.entries(lo, hi)) == list(ref.entries(lo, hi)), "entries")
        # Short suffixes too: the newest entries are what a log may serve from a cache.
        for start in sorted({(lo + hi) // 2, hi - 8, hi - 3, hi - 1}):
            if lo <= start < hi:
                suffix = list(s.entries(start, hi))
                _check(suffix == list(ref.entries(start, hi)), f"entries({start}, {hi})")
        for i in range(lo - 1, hi):
            _check(s.term(i) == ref.term(i), f"term({i})")
        try:
            want: Snapshot | None = ref.snapshot()
        except SnapshotTemporarilyUnavailable:
            want = None
        if want is not None:
            _check(s.snapshot() == want, "snapshot")
