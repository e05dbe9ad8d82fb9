"""LmdbRaftLog: the durable Raft log and hard state, on LMDB.

Layout (one LMDB environment in its own directory, file ``data.mdb``):

``entries`` sub-database
    key: the entry index as a big-endian u64, so LMDB's byte order is index order.
    value: ``crc32 u32 | term u64 | kind u8 | data``. The checksum covers the key, the term, the
    kind and the data, so an entry read back under the wrong index also fails the check.
``meta`` sub-database
    ``format``     the format tag, checked at open.
    ``hard_state`` ``crc32 | term | vote | commit``.
    ``offset``     ``crc32 | index | term``: the last compacted entry (the snapshot point). The
                   first entry in the log is ``offset.index + 1``; ``term(offset.index)`` works.
    ``snapshot``   ``crc32 | index | term | voters | learners | data``.

Durability: every ``save`` is one write transaction (atomic and isolated) with one durable
commit, however many entries it carries (group commit). Two modes:

``durability="full"`` (default)
    LMDB's own synchronous commit: data pages are flushed, then the meta page. Safe against
    power loss; every commit is durable (``sync=False`` is honoured as "at least as durable").
``durability="fast"``
    LMDB's ``sync`` is off and ``sync=True`` commits are followed by one ``env.sync(True)``: one
    flush instead of two. Safe against process crashes (SIGKILL); after a power loss in the
    window between commit and flush, LMDB's meta page may point at unflushed pages, which the
    startup verification reports as corruption rather than serving.
"""

from __future__ import annotations

import itertools
import os
import struct
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import lmdb
from raftkv_storage.filecheck import check_not_truncated

from raftkv.errors import (
    CompactedError,
    CorruptionError,
    InternalError,
    SnapshotTemporarilyUnavailable,
    StorageError,
    UnavailableError,
)
from raftkv.raft.storage import limit_size
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

__all__ = ["LOG_FORMAT", "LmdbRaftLog"]

LOG_FORMAT = b"raftkv-log/1"
DEFAULT_LOG_MAP_SIZE_BYTES = 8 << 30

_U64 = struct.Struct(">Q")
_ENTRY_HEAD = struct.Struct(">IQB")  # crc32, term, kind
_HARD_STATE = struct.Struct(">IQQQ")  # crc32, term, vote, commit
_OFFSET = struct.Struct(">IQQ")  # crc32, index, term
_SNAP_HEAD = struct.Struct(">IQQII")  # crc32, index, term, n_voters, n_learners

TAIL_MAX_ENTRIES = 4096
TAIL_MAX_BYTES = 8 << 20
"""Bounds on the in-memory copy of the newest entries (see ``LmdbRaftLog._tail``)."""

_K_FORMAT = b"format"
_K_HARD_STATE = b"hard_state"
_K_OFFSET = b"offset"
_K_SNAPSHOT = b"snapshot"


def _encode_entry(entry: Entry) -> tuple[bytes, bytes]:
    key = _U64.pack(entry.index)
    body = _ENTRY_HEAD.pack(0, entry.term, int(entry.kind))[4:] + entry.data
    crc = zlib.crc32(body, zlib.crc32(key))
    return key, struct.pack(">I", crc) + body


def _encode_snapshot(snap: Snapshot) -> bytes:
    cs = snap.meta.conf_state
    ids = struct.pack(f">{len(cs.voters) + len(cs.learners)}Q", *cs.voters, *cs.learners)
    head = _SNAP_HEAD.pack(0, snap.meta.index, snap.meta.term, len(cs.voters), len(cs.learners))
    body = head[4:] + ids + snap.data
    return struct.pack(">I", zlib.crc32(body)) + body


def _sealed(fmt: struct.Struct, *fields: int) -> bytes:
    body = fmt.pack(0, *fields)[4:]
    return struct.pack(">I", zlib.crc32(body)) + body


@dataclass(slots=True)
class _LogState:
    """The cached shape of the log, staged during a write and published after commit."""

    offset: Index
    offset_term: Term
    last: Index
    snapshot: Snapshot


class LmdbRaftLog:
    """A durable ``LogStorage`` with the write side (``save``, ``compact``, snapshots).

    Thread use: one writer thread (the disk executor) calls the write methods; any thread may
    read. Reads use their own read transactions, so they never see half a batch.

    The newest entries written (up to ``TAIL_MAX_ENTRIES`` and ``TAIL_MAX_BYTES``) are also kept
    in memory, as written: the entries a leader sends and every member applies are nearly
    always these, and reading them back meant a read transaction, a checksum and a decode per
    entry on the event loop. The copy holds only entries already committed to LMDB, and is
    replaced whole (never changed in place), so a reader sees one consistent list.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        map_size_bytes: int = DEFAULT_LOG_MAP_SIZE_BYTES,
        verify: bool = True,
        durability: str = "full",
    ) -> None:
        if durability not in ("full", "fast"):
            raise ValueError(f"durability must be 'full' or 'fast', not {durability!r}")
        self._fast = durability == "fast"
        self._dir = Path(path)
        self._dir.mkdir(parents=True, exist_ok=True)
        self._file = str(self._dir / "data.mdb")
        self._tail: tuple[Index, list[Entry]] = (1, [])
        """(index of the first entry held, the newest entries in index order)."""
        self._tail_bytes = 0
        try:
            self._env = lmdb.open(
                str(self._dir),
                map_size=map_size_bytes,
                max_dbs=4,
                sync=not self._fast,
                metasync=True,
                readahead=False,
                max_readers=256,
            )
        except lmdb.Error as exc:
            raise CorruptionError(f"{self._file}: cannot open the raft log: {exc}") from exc
        try:
            self._check_file_size()
            self._entries_db = self._env.open_db(b"entries")
            self._meta_db = self._env.open_db(b"meta")
            self._init_format()
            self._load_meta()
            if verify:
                self.verify()
        except lmdb.Error as exc:
            self._env.close()
            raise CorruptionError(f"{self._file}: unreadable raft log: {exc}") from exc
        except BaseException:
            self._env.close()
            raise

    # -- lifecycle ----------------------------------------------------------------------------

    @property
    def path(self) -> Path:
        return self._dir

    def close(self) -> None:
        self._env.close()

    def __enter__(self) -> LmdbRaftLog:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _check_file_size(self) -> None:
        """A truncated file would make LMDB fault on a page past the end: refuse it first."""
        info = self._env.info()
        need = (int(info["last_pgno"]) + 1) * int(self._env.stat()["psize"])
        check_not_truncated(str(self._dir), self._file, os.path.getsize(self._file), need)

    def _init_format(self) -> None:
        with self._env.begin(write=True, db=self._meta_db) as txn:
            fmt = txn.get(_K_FORMAT)
            if fmt is None:
                if txn.stat(self._entries_db)["entries"]:
                    raise CorruptionError(f"{self._file}: entries present but no format tag")
                txn.put(_K_FORMAT, LOG_FORMAT)
                txn.put(_K_HARD_STATE, _sealed(_HARD_STATE, 0, 0, 0))
                txn.put(_K_OFFSET, _sealed(_OFFSET, 0, 0))
                txn.put(_K_SNAPSHOT, _encode_snapshot(Snapshot()))
            elif fmt != LOG_FORMAT:
                raise CorruptionError(f"{self._file}: unknown log format {fmt!r}")
        self._env.sync(True)

    def _meta(self, txn: lmdb.Transaction, key: bytes) -> bytes:
        raw = txn.get(key, db=self._meta_db)
        if raw is None:
            raise CorruptionError(f"{self._file}: meta record {key.decode()} is missing")
        data = bytes(raw)
        if len(data) < 4 or struct.unpack_from(">I", data)[0] != zlib.crc32(data[4:]):
            raise CorruptionError(f"{self._file}: meta record {key.decode()} checksum mismatch")
        return data

    def _load_meta(self) -> None:
        with self._env.begin() as txn:
            hs = self._meta(txn, _K_HARD_STATE)
            if len(hs) != _HARD_STATE.size:
                raise CorruptionError(f"{self._file}: hard state record has a bad length")
            _, term, vote, commit = _HARD_STATE.unpack(hs)
            self._hard_state = HardState(term, vote, commit)
            off = self._meta(txn, _K_OFFSET)
            if len(off) != _OFFSET.size:
                raise CorruptionError(f"{self._file}: offset record has a bad length")
            _, offset, offset_term = _OFFSET.unpack(off)
            self._offset: Index = offset
            self._offset_term: Term = offset_term
            self._snapshot = self._decode_snapshot(self._meta(txn, _K_SNAPSHOT))
            cur = txn.cursor(db=self._entries_db)
            self._last: Index = _U64.unpack(cur.key())[0] if cur.last() else self._offset

    def _decode_snapshot(self, raw: bytes) -> Snapshot:
        try:
            _, index, term, nv, nl = _SNAP_HEAD.unpack_from(raw)
            ids = struct.unpack_from(f">{nv + nl}Q", raw, _SNAP_HEAD.size)
            data = raw[_SNAP_HEAD.size + 8 * (nv + nl) :]
            conf = ConfState(tuple(ids[:nv]), tuple(ids[nv:]))
        except (struct.error, ValueError) as exc:
            raise CorruptionError(f"{self._file}: snapshot record is malformed: {exc}") from exc
        return Snapshot(SnapshotMeta(index, term, conf), data)

    def verify(self) -> None:
        """Check every entry: contiguous indexes, checksums, non-decreasing terms.

        Raises CorruptionError naming the file and the first bad index.
        """
        expect = self._offset + 1
        prev_term = self._offset_term
        with self._env.begin(db=self._entries_db) as txn:
            for key, value in txn.cursor():
                entry = self._decode(key, value)
                if entry.index != expect:
                    raise CorruptionError(
                        f"{self._file}: log has a gap or stray entry at index {entry.index} "
                        f"(expected {expect})"
                    )
                if entry.term < prev_term:
                    raise CorruptionError(
                        f"{self._file}: entry {entry.index} has term {entry.term} "
                        f"below the previous term {prev_term}"
                    )
                prev_term = entry.term
                expect += 1
        if self._hard_state.commit > self._last:
            raise CorruptionError(
                f"{self._file}: hard state commit {self._hard_state.commit} is past the last "
                f"index {self._last}: the log lost acknowledged entries"
            )

    def _decode(self, key: bytes | memoryview, value: bytes | memoryview) -> Entry:
        if len(key) != 8:
            raise CorruptionError(f"{self._file}: malformed entry key {bytes(key)!r}")
        index: Index = _U64.unpack(key)[0]
        if len(value) < _ENTRY_HEAD.size:
            raise CorruptionError(f"{self._file}: entry {index} is truncated")
        crc, term, kind = _ENTRY_HEAD.unpack_from(value)
        if crc != zlib.crc32(memoryview(value)[4:], zlib.crc32(key)):
            raise CorruptionError(f"{self._file}: entry {index} checksum mismatch")
        try:
            entry_kind = EntryKind(kind)
        except ValueError:
            raise CorruptionError(f"{self._file}: entry {index} has unknown kind {kind}") from None
        return Entry(term, index, entry_kind, bytes(value[_ENTRY_HEAD.size :]))

    # -- read side (LogStorage) -----------------------------------------------------------------

    def initial_state(self) -> tuple[HardState, ConfState]:
        return self._hard_state, self._snapshot.meta.conf_state

    @property
    def hard_state(self) -> HardState:
        return self._hard_state

    def first_index(self) -> Index:
        return self._offset + 1

    def last_index(self) -> Index:
        return self._last

    def entries(self, lo: Index, hi: Index, max_size: int | None = None) -> Sequence[Entry]:
        offset, last = self._offset, self._last
        if lo <= offset:
            raise CompactedError(f"index {lo} is compacted (first index {offset + 1})")
        if hi > last + 1:
            raise UnavailableError(f"index {hi - 1} is past the last index {last}")
        first, tail = self._tail
        if first <= lo and hi <= first + len(tail):
            return limit_size(tail[lo - first : hi - first], max_size)
        out: list[Entry] = []
        total = 0
        with self._env.begin(db=self._entries_db, buffers=True) as txn:
            cur = txn.cursor()
            positioned = cur.set_key(_U64.pack(lo))
            while lo + len(out) < hi:
                if not positioned:
                    raise self._missing(lo + len(out))
                entry = self._decode(cur.key(), cur.value())
                if entry.index != lo + len(out):
                    raise self._missing(lo + len(out))
                total += entry.size()
                if max_size is not None and out and total > max_size:
                    break
                out.append(entry)
                positioned = cur.next()
        return out

    def _missing(self, index: Index) -> StorageError:
        if index <= self._offset:
            return CompactedError(f"index {index} was compacted concurrently")
        return CorruptionError(f"{self._file}: entry {index} is missing from the log")

    def term(self, index: Index) -> Term:
        offset, last = self._offset, self._last
        if index < offset:
            raise CompactedError(f"index {index} is compacted (first index {offset + 1})")
        if index > last:
            raise UnavailableError(f"index {index} is past the last index {last}")
        if index == offset:
            return self._offset_term
        first, tail = self._tail
        if first <= index < first + len(tail):
            return tail[index - first].term
        key = _U64.pack(index)
        with self._env.begin(db=self._entries_db, buffers=True) as txn:
            value = txn.get(key)
            if value is None:
                raise self._missing(index)
            return self._decode(key, value).term

    def snapshot(self) -> Snapshot:
        if self._snapshot.is_empty:
            raise SnapshotTemporarilyUnavailable("no snapshot has been taken yet")
        return self._snapshot

    # -- write side -----------------------------------------------------------------------------

    def save(
        self,
        hard_state: HardState | None,
        entries: Sequence[Entry],
        snapshot: Snapshot | None,
        *,
        sync: bool,
    ) -> None:
        """Persist a Ready's snapshot, entries and hard state atomically, in that order.

        One write transaction; with ``sync`` one fsync. Entries that conflict with the existing
        log replace its suffix from their first index on.
        """
        state = _LogState(self._offset, self._offset_term, self._last, self._snapshot)
        with self._env.begin(write=True) as txn:
            if snapshot is not None and not snapshot.is_empty:
                self._put_snapshot_txn(txn, snapshot, state)
            if entries:
                self._append_txn(txn, entries, state)
            if hard_state is not None:
                txn.put(
                    _K_HARD_STATE,
                    _sealed(_HARD_STATE, hard_state.term, hard_state.vote, hard_state.commit),
                    db=self._meta_db,
                )
        if sync and self._fast:
            self._env.sync(True)
        if state.snapshot is not self._snapshot:
            self._set_tail(state.offset + 1, [], 0)
        if entries and entries[-1].index > state.offset:
            self._extend_tail(entries, state.offset)
        self._publish(state)
        if hard_state is not None:
            self._hard_state = hard_state

    def _set_tail(self, first: Index, tail: list[Entry], size: int) -> None:
        while tail and (len(tail) > TAIL_MAX_ENTRIES or size > TAIL_MAX_BYTES):
            drop = max(1, len(tail) // 4)  # trim in steps: one copy per step, not per entry
            size -= sum(e.size() for e in tail[:drop])
            tail = tail[drop:]
            first += drop
        self._tail = (first, tail)
        self._tail_bytes = size

    def _extend_tail(self, entries: Sequence[Entry], offset: Index) -> None:
        """Add freshly committed ``entries``, replacing any suffix they overwrote."""
        if entries[0].index <= offset:
            entries = entries[offset + 1 - entries[0].index :]
        start = entries[0].index
        first, tail = self._tail
        size = self._tail_bytes
        if first <= start <= first + len(tail):
            kept = tail[: start - first]
            size -= sum(e.size() for e in tail[start - first :])
        else:  # a gap, or an overwrite from before the cached part: start afresh
            first, kept, size = start, [], 0
        self._set_tail(first, kept + list(entries), size + sum(e.size() for e in entries))

    def _publish(self, state: _LogState) -> None:
        # Order matters for concurrent readers: widen before narrowing.
        self._last = state.last
        self._offset_term = state.offset_term
        self._offset = state.offset
        self._snapshot = state.snapshot

    def _put_snapshot_txn(
        self, txn: lmdb.Transaction, snapshot: Snapshot, state: _LogState
    ) -> None:
        current = state.snapshot
        if snapshot.meta.index <= current.meta.index and not current.is_empty:
            return
        txn.drop(self._entries_db, delete=False)
        txn.put(_K_SNAPSHOT, _encode_snapshot(snapshot), db=self._meta_db)
        txn.put(
            _K_OFFSET, _sealed(_OFFSET, snapshot.meta.index, snapshot.meta.term), db=self._meta_db
        )
        state.offset = state.last = snapshot.meta.index
        state.offset_term = snapshot.meta.term
        state.snapshot = snapshot

    def _append_txn(
        self, txn: lmdb.Transaction, entries: Sequence[Entry], state: _LogState
    ) -> None:
        offset, last = state.offset, state.last
        for prev, nxt in itertools.pairwise(entries):
            if nxt.index != prev.index + 1:
                raise InternalError(f"non-contiguous entries: {prev.index} then {nxt.index}")
        if entries[-1].index <= offset:
            return  # entirely covered by the snapshot
        if entries[0].index <= offset:
            entries = entries[offset + 1 - entries[0].index :]
        first_new = entries[0].index
        if first_new > last + 1:
            raise InternalError(f"missing log entries: last index {last}, appending at {first_new}")
        cur = txn.cursor(db=self._entries_db)
        if first_new <= last and cur.set_range(_U64.pack(first_new)):
            while cur.delete():
                pass
        cur.putmulti((_encode_entry(e) for e in entries), append=True)
        state.last = entries[-1].index

    def append(self, entries: Sequence[Entry], *, sync: bool = True) -> None:
        """MemoryStorage-compatible: append (truncating a conflicting suffix) durably."""
        self.save(None, entries, None, sync=sync)

    def set_hard_state(self, hard_state: HardState, *, sync: bool = True) -> None:
        self.save(hard_state, (), None, sync=sync)

    def apply_snapshot(self, snapshot: Snapshot, *, sync: bool = True) -> None:
        """Replace the whole log with ``snapshot``; older snapshots are ignored."""
        self.save(None, (), snapshot, sync=sync)

    def create_snapshot(
        self, index: Index, conf_state: ConfState, data: bytes, *, sync: bool = True
    ) -> Snapshot:
        """Record a snapshot of the state machine as of ``index`` (which must be applied)."""
        if index <= self._snapshot.meta.index:
            return self._snapshot
        if index > self._last:
            raise InternalError(f"snapshot index {index} > last index {self._last}")
        snap = Snapshot(SnapshotMeta(index, self.term(index), conf_state), data)
        with self._env.begin(write=True, db=self._meta_db) as txn:
            txn.put(_K_SNAPSHOT, _encode_snapshot(snap))
        if sync and self._fast:
            self._env.sync(True)
        self._snapshot = snap
        return snap

    def compact(self, index: Index, *, sync: bool = False) -> None:
        """Drop entries up to and including ``index``; they must be covered by a snapshot."""
        if index <= self._offset:
            return
        if index > self._last:
            raise InternalError(f"compact {index} is past the last index {self._last}")
        term = self.term(index)
        with self._env.begin(write=True) as txn:
            cur = txn.cursor(db=self._entries_db)
            end = _U64.pack(index)
            positioned = cur.first()
            while positioned and cur.key() <= end:
                positioned = cur.delete()
            txn.put(_K_OFFSET, _sealed(_OFFSET, index, term), db=self._meta_db)
        if sync and self._fast:
            self._env.sync(True)
        self._offset_term = term
        self._offset = index
        first, tail = self._tail
        if index >= first:
            cut = index + 1 - first
            size = self._tail_bytes - sum(e.size() for e in tail[:cut])
            self._set_tail(index + 1, tail[cut:], size)

    def sync(self) -> None:
        self._env.sync(True)

    def all_entries(self) -> Iterable[Entry]:
        """Every stored entry, for tools and tests."""
        with self._env.begin(db=self._entries_db) as txn:
            return [self._decode(k, v) for k, v in txn.cursor()]
