"""LmdbBackend: the KVBackend of raftkv.kv on one LMDB environment.

Each table of :mod:`raftkv.kv.backend` is an LMDB sub-database, so every MVCC lookup is a B+tree
seek in the memory map: nothing of the key space is held in Python memory, and opening a store
of any size costs a few page reads.

Durability: LMDB syncs the data pages at every commit and defers the meta page to the next
commit (``metasync=False``): a power loss may undo the last applied batch but never corrupts the
file, and the applied index rolls back with its effects, so Raft re-applies that batch.
Process crashes lose nothing committed.

Quota: the map is sized above the quota; a write that would not fit raises
:class:`~raftkv.kv.errors.NoSpaceError` ("mvcc: database space exceeded") instead of failing.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

import lmdb
from raftkv_storage.filecheck import check_not_truncated

from raftkv.errors import CorruptionError
from raftkv.kv.backend import TABLES, ReadTxn, WriteTxn
from raftkv.kv.errors import NoSpaceError
from raftkv.kv.state_machine import DEFAULT_QUOTA_BYTES

__all__ = ["KV_FORMAT", "LmdbBackend"]

KV_FORMAT = b"raftkv-kv/1"
_FORMAT_DB = b"format"


class _Txn:
    __slots__ = ("_dbs", "_txn")

    def __init__(self, txn: lmdb.Transaction[bytes], dbs: dict[str, lmdb._Database]) -> None:
        self._txn = txn
        self._dbs = dbs

    def get(self, table: str, key: bytes) -> bytes | None:
        return self._txn.get(key, db=self._dbs[table])

    def scan(
        self, table: str, start: bytes, end: bytes | None = None
    ) -> Iterator[tuple[bytes, bytes]]:
        cur = self._txn.cursor(db=self._dbs[table])
        if not cur.set_range(start):
            return
        if end is None:
            yield from cur.iternext()
            return
        for k, v in cur.iternext():
            if k >= end:
                return
            yield k, v

    def put(self, table: str, key: bytes, value: bytes) -> None:
        self._txn.put(key, value, db=self._dbs[table])

    def delete(self, table: str, key: bytes) -> bool:
        return bool(self._txn.delete(key, db=self._dbs[table]))

    def delete_range(self, table: str, start: bytes, end: bytes | None) -> int:
        db = self._dbs[table]
        if not start and end is None:
            n = int(self._txn.stat(db)["entries"])
            self._txn.drop(db, delete=False)
            return n
        cur = self._txn.cursor(db=db)
        n = 0
        positioned = cur.set_range(start)
        while positioned and (end is None or cur.key() < end):
            positioned = cur.delete()
            n += 1
        return n


class LmdbBackend:
    """A KVBackend on LMDB. One writer thread; any number of reader threads."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        quota_bytes: int = DEFAULT_QUOTA_BYTES,
        map_size_bytes: int | None = None,
        durable: bool = True,
    ) -> None:
        self.quota_bytes = quota_bytes
        self._dir = Path(path)
        self._dir.mkdir(parents=True, exist_ok=True)
        self._file = str(self._dir / "data.mdb")
        map_size = map_size_bytes or quota_bytes + quota_bytes // 4 + (64 << 20)
        try:
            self._env = lmdb.open(
                str(self._dir),
                map_size=map_size,
                max_dbs=len(TABLES) + 1,
                sync=durable,
                metasync=False,
                readahead=False,
                max_readers=256,
            )
        except lmdb.Error as exc:
            raise CorruptionError(f"{self._file}: cannot open the key space: {exc}") from exc
        try:
            self._check()
        except BaseException:
            self._env.close()
            raise

    def _check(self) -> None:
        psize = int(self._env.stat()["psize"])
        need = (int(self._env.info()["last_pgno"]) + 1) * psize
        check_not_truncated(str(self._dir), self._file, os.path.getsize(self._file), need)
        try:
            self._dbs = {name: self._env.open_db(name.encode()) for name in TABLES}
            fmt_db = self._env.open_db(_FORMAT_DB)
            with self._env.begin(write=True, db=fmt_db) as txn:
                fmt = txn.get(b"format")
                if fmt is None:
                    txn.put(b"format", KV_FORMAT)
                elif fmt != KV_FORMAT:
                    raise CorruptionError(f"{self._file}: unknown key space format {fmt!r}")
        except lmdb.Error as exc:
            raise CorruptionError(f"{self._file}: unreadable key space: {exc}") from exc

    @property
    def path(self) -> Path:
        return self._dir

    def close(self) -> None:
        self._env.close()

    def __enter__(self) -> LmdbBackend:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @contextmanager
    def read(self) -> Iterator[ReadTxn]:
        with self._env.begin() as txn:
            yield _Txn(txn, self._dbs)

    snapshot_view = read  # an LMDB read transaction is already a consistent snapshot

    @contextmanager
    def write(self) -> Iterator[WriteTxn]:
        txn = self._env.begin(write=True)
        try:
            yield _Txn(txn, self._dbs)
        except lmdb.MapFullError:
            txn.abort()
            raise NoSpaceError() from None
        except BaseException:
            txn.abort()
            raise
        try:
            txn.commit()
        except lmdb.MapFullError:
            raise NoSpaceError() from None

    def size_bytes(self) -> int:
        """The file's high-water mark (etcd's dbSize): pages in use, free ones included."""
        info = self._env.info()
        return (int(info["last_pgno"]) + 1) * int(self._env.stat()["psize"])

    def sync(self) -> None:
        """Make every commit durable now (call before compacting the Raft log)."""
        self._env.sync(True)
