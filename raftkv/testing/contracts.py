"""Conformance suites that every storage implementation must pass.

``LogStorageContract`` is a pytest mixin for a ``LogStorage`` with the write side
(``append``/``set_hard_state``/``apply_snapshot``/``create_snapshot``/``compact``, as on
:class:`~raftkv.raft.storage.MemoryStorage`). Subclass it in a test module as ``TestX`` and
implement :meth:`make` (and :meth:`reopen` for durable storage)::

    class TestMemoryLog(LogStorageContract):
        def make(self, tmp_path): return MemoryStorage()

Every test then runs against the implementation, including a seeded differential test that
replays random operations against ``MemoryStorage`` as the reference model.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol, TypeVar

from raftkv.errors import CompactedError, SnapshotTemporarilyUnavailable, UnavailableError
from raftkv.raft.storage import MemoryStorage
from raftkv.raft.types import (
    ConfState,
    Entry,
    EntryKind,
    HardState,
    Index,
    Snapshot,
    SnapshotMeta,
    Term,
)

__all__ = ["LogStorageContract", "WritableLog", "ents"]

_E = TypeVar("_E", bound=BaseException)


class WritableLog(Protocol):
    """LogStorage plus the MemoryStorage-style write side the driver uses."""

    def initial_state(self) -> tuple[HardState, ConfState]: ...
    def entries(self, lo: Index, hi: Index, max_size: int | None = None) -> Sequence[Entry]: ...
    def term(self, index: Index) -> Term: ...
    def first_index(self) -> Index: ...
    def last_index(self) -> Index: ...
    def snapshot(self) -> Snapshot: ...
    def set_hard_state(self, hard_state: HardState) -> None: ...
    def append(self, entries: Sequence[Entry]) -> None: ...
    def apply_snapshot(self, snapshot: Snapshot) -> None: ...
    def create_snapshot(self, index: Index, conf_state: ConfState, data: bytes) -> Snapshot: ...
    def compact(self, index: Index) -> None: ...


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


class LogStorageContract:
    """Mixin: the behaviour every writable LogStorage shares with MemoryStorage."""

    durable = False
    """Set True when :meth:`reopen` returns a new instance over the same durable state."""

    def make(self, tmp_path: Path) -> WritableLog:
        raise NotImplementedError

    def reopen(self, storage: WritableLog, tmp_path: Path) -> WritableLog:
        return storage

    # -- tests ------------------------------------------------------------------------------

    def test_empty(self, tmp_path: Path) -> None:
        s = self.make(tmp_path)
        _check(s.first_index() == 1 and s.last_index() == 0, "empty log bounds")
        _check(s.term(0) == 0, "term(0) is 0")
        _check(s.initial_state()[0] == HardState(), "empty hard state")
        _raises(UnavailableError, lambda: s.term(1))
        _raises(SnapshotTemporarilyUnavailable, s.snapshot)
        _check(list(s.entries(1, 1)) == [], "empty slice")

    def test_append_and_read(self, tmp_path: Path) -> None:
        s = self.make(tmp_path)
        s.append(ents((1, 1), (2, 1), (3, 2)))
        _check(s.last_index() == 3, "last index")
        _check([e.term for e in s.entries(1, 4)] == [1, 1, 2], "terms")
        _check(s.entries(2, 3)[0].data == b"2/1", "payload")
        _check(s.term(3) == 2, "term")
        _raises(UnavailableError, lambda: s.entries(1, 5))
        _raises(UnavailableError, lambda: s.term(4))

    def test_truncate_conflicting_suffix(self, tmp_path: Path) -> None:
        s = self.make(tmp_path)
        s.append(ents((1, 1), (2, 1), (3, 1), (4, 1)))
        s.append(ents((3, 2)))
        _check(s.last_index() == 3 and s.term(3) == 2, "suffix replaced")
        _raises(UnavailableError, lambda: s.term(4))
        s.append(ents((4, 2), (5, 2)))
        _check([e.index for e in s.entries(1, 6)] == [1, 2, 3, 4, 5], "contiguous")

    def test_max_size(self, tmp_path: Path) -> None:
        s = self.make(tmp_path)
        s.append(ents((1, 1), (2, 1), (3, 1), data=b"x" * 100))
        one = s.entries(1, 4, 0)
        _check(len(one) == 1, "at least one entry even over the limit")
        _check(len(s.entries(1, 4, 2 * one[0].size())) == 2, "two fit")
        _check(len(s.entries(1, 4, None)) == 3, "no limit")

    def test_hard_state(self, tmp_path: Path) -> None:
        s = self.make(tmp_path)
        s.append(ents((1, 1), (2, 1)))
        s.set_hard_state(HardState(3, 2, 2))
        _check(s.initial_state()[0] == HardState(3, 2, 2), "hard state")

    def test_snapshot_and_compact(self, tmp_path: Path) -> None:
        s = self.make(tmp_path)
        s.append(ents(*[(i, 1 + i // 3) for i in range(1, 10)]))
        cs = ConfState((1, 2, 3))
        snap = s.create_snapshot(5, cs, b"state@5")
        _check(snap.meta == SnapshotMeta(5, s.term(5), cs), "snapshot meta")
        s.compact(5)
        _check(s.first_index() == 6 and s.last_index() == 9, "bounds after compact")
        _check(s.term(5) == snap.meta.term, "term of the compaction point")
        _raises(CompactedError, lambda: s.term(4))
        _raises(CompactedError, lambda: s.entries(5, 7))
        _check(s.snapshot().data == b"state@5", "snapshot data")
        _check(s.initial_state()[1] == cs, "conf state")
        s.compact(3)  # no-op, already compacted
        _check(s.first_index() == 6, "compact below offset is a no-op")

    def test_apply_snapshot_replaces_log(self, tmp_path: Path) -> None:
        s = self.make(tmp_path)
        s.append(ents((1, 1), (2, 1), (3, 1)))
        snap = Snapshot(SnapshotMeta(10, 3, ConfState((1,))), b"img")
        s.apply_snapshot(snap)
        _check(s.first_index() == 11 and s.last_index() == 10, "bounds")
        _check(s.term(10) == 3, "term of snapshot index")
        s.apply_snapshot(Snapshot(SnapshotMeta(8, 2, ConfState((1,))), b"old"))
        _check(s.snapshot().data == b"img", "an older snapshot is ignored")
        s.append(ents((11, 3), (12, 4)))
        _check(s.last_index() == 12, "append after snapshot")
        s.append(ents((9, 3), (10, 3), (11, 5)))
        _check(s.term(11) == 5 and s.last_index() == 11, "covered prefix skipped")

    def test_reopen_keeps_everything(self, tmp_path: Path) -> None:
        s = self.make(tmp_path)
        s.append(ents(*[(i, 1) for i in range(1, 21)]))
        s.set_hard_state(HardState(1, 1, 20))
        s.create_snapshot(10, ConfState((1,)), b"ten")
        s.compact(10)
        s.append(ents((20, 2)))
        s = self.reopen(s, tmp_path)
        _check(s.first_index() == 11 and s.last_index() == 20, "bounds survive reopen")
        _check(s.term(20) == 2 and s.term(10) == 1, "terms survive")
        _check(s.initial_state() == (HardState(1, 1, 20), ConfState((1,))), "state survives")
        _check(s.snapshot().data == b"ten", "snapshot survives")

    def test_random_ops_match_reference(self, tmp_path: Path) -> None:
        for seed in range(4):
            self._differential(random.Random(seed), tmp_path / f"d{seed}")

    def _differential(self, rng: random.Random, tmp_path: Path) -> None:
        tmp_path.mkdir(parents=True, exist_ok=True)
        s = self.make(tmp_path)
        ref = MemoryStorage()
        applied = 0
        for step in range(120):
            op = rng.random()
            last = ref.last_index()
            if op < 0.5:
                # Raft never truncates committed entries; neither does this model.
                lo = rng.randint(max(ref.first_index(), ref.hard_state.commit + 1), last + 1)
                term = max(ref.term(lo - 1), 1) + rng.randint(0, 2)
                new = ents(*[(i, term) for i in range(lo, lo + rng.randint(1, 6))])
                s.append(new)
                ref.append(new)
            elif op < 0.65 and last >= ref.first_index():
                hs = HardState(step, rng.randint(0, 3), rng.randint(ref.first_index() - 1, last))
                s.set_hard_state(hs)
                ref.set_hard_state(hs)
            elif op < 0.8 and last >= ref.first_index():
                applied = rng.randint(ref.first_index(), last)
                data = f"snap{applied}".encode()
                s.create_snapshot(applied, ConfState((1, 2)), data)
                ref.create_snapshot(applied, ConfState((1, 2)), data)
                s.compact(applied)
                ref.compact(applied)
            elif op < 0.85:
                meta = SnapshotMeta(last + rng.randint(1, 5), ref.term(last) + 1, ConfState((4,)))
                snap = Snapshot(meta, b"installed")
                s.apply_snapshot(snap)
                ref.apply_snapshot(snap)
            elif op < 0.9 and self.durable:
                s = self.reopen(s, tmp_path)
            self._same(s, ref)

    @staticmethod
    def _same(s: WritableLog, ref: MemoryStorage) -> None:
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
