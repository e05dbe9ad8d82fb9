"""The ordered byte store under the MVCC layer, and an in-memory implementation.

A backend holds a few named tables of byte keys in byte order, read and written in
transactions. ``raftkv_storage`` implements it on LMDB; :class:`MemoryBackend` is the pure
reference the simulator and the tests use.

Rules every backend follows:

* ``read()`` transactions see one committed state. ``write()`` is one atomic transaction,
  committed when its ``with`` block exits normally and aborted when it raises. Only one write
  transaction is open at a time.
* ``scan`` yields ``(key, value)`` for ``start <= key < end`` in key order. The caller must not
  modify the table it is scanning while the scan is live.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Protocol

__all__ = [
    "HIST",
    "LEASE",
    "LEASE_KEYS",
    "META",
    "REV",
    "TABLES",
    "KVBackend",
    "MemoryBackend",
    "ReadTxn",
    "WriteTxn",
]

HIST = "hist"
"""escape_key(key) + ~main + ~sub  ->  one version of a key (newest first per key)."""
REV = "rev"
"""main + sub  ->  escape_key(key): the change log in revision order, for watches."""
META = "meta"
"""current revision, compacted revision, applied index, format."""
LEASE = "lease"
"""lease id -> granted TTL (``raftkv.kv.leases``)."""
LEASE_KEYS = "lease_keys"
"""lease id + escape_key(key) -> empty: the keys attached to each lease."""
TABLES = (HIST, REV, META, LEASE, LEASE_KEYS)
"""In snapshot order: a snapshot names a table by its position, so new tables go last."""


class ReadTxn(Protocol):
    def get(self, table: str, key: bytes) -> bytes | None: ...

    def scan(
        self, table: str, start: bytes, end: bytes | None = None
    ) -> Iterator[tuple[bytes, bytes]]: ...


class WriteTxn(ReadTxn, Protocol):
    def put(self, table: str, key: bytes, value: bytes) -> None: ...

    def delete(self, table: str, key: bytes) -> bool: ...

    def delete_range(self, table: str, start: bytes, end: bytes | None) -> int: ...


class KVBackend(Protocol):
    def read(self) -> AbstractContextManager[ReadTxn]: ...

    def write(self) -> AbstractContextManager[WriteTxn]: ...

    def snapshot_view(self) -> AbstractContextManager[ReadTxn]:
        """A read transaction that stays consistent however long it is held (for snapshots)."""
        ...

    def size_bytes(self) -> int:
        """Bytes in use, compared with the quota."""
        ...


class _Table:
    __slots__ = ("data", "keys")

    def __init__(self) -> None:
        self.keys: list[bytes] = []
        self.data: dict[bytes, bytes] = {}

    def copy(self) -> _Table:
        t = _Table()
        t.keys = list(self.keys)
        t.data = dict(self.data)
        return t


class _MemTxn:
    """Reads and writes straight on the tables, with an undo log for abort."""

    def __init__(self, tables: dict[str, _Table], writable: bool) -> None:
        self._tables = tables
        self._writable = writable
        self.undo: list[tuple[str, bytes, bytes | None]] = []
        self.size_delta = 0

    def get(self, table: str, key: bytes) -> bytes | None:
        return self._tables[table].data.get(key)

    def scan(
        self, table: str, start: bytes, end: bytes | None = None
    ) -> Iterator[tuple[bytes, bytes]]:
        t = self._tables[table]
        keys = t.keys
        i = bisect.bisect_left(keys, start)
        while i < len(keys):
            k = keys[i]
            if end is not None and k >= end:
                return
            yield k, t.data[k]
            i = bisect.bisect_right(keys, k)  # robust to writes in other tables

    def put(self, table: str, key: bytes, value: bytes) -> None:
        t = self._tables[table]
        old = t.data.get(key)
        if old is None:
            bisect.insort(t.keys, key)
            self.size_delta += len(key) + len(value)
        else:
            self.size_delta += len(value) - len(old)
        t.data[key] = value
        self.undo.append((table, key, old))

    def delete(self, table: str, key: bytes) -> bool:
        t = self._tables[table]
        old = t.data.pop(key, None)
        if old is None:
            return False
        del t.keys[bisect.bisect_left(t.keys, key)]
        self.undo.append((table, key, old))
        self.size_delta -= len(key) + len(old)
        return True

    def delete_range(self, table: str, start: bytes, end: bytes | None) -> int:
        t = self._tables[table]
        lo = bisect.bisect_left(t.keys, start)
        hi = len(t.keys) if end is None else bisect.bisect_left(t.keys, end)
        doomed = t.keys[lo:hi]
        for k in doomed:
            old = t.data.pop(k)
            self.undo.append((table, k, old))
            self.size_delta -= len(k) + len(old)
        del t.keys[lo:hi]
        return len(doomed)

    def rollback(self) -> None:
        for table, key, old in reversed(self.undo):
            t = self._tables[table]
            present = key in t.data
            if old is None:
                t.data.pop(key, None)
                if present:
                    del t.keys[bisect.bisect_left(t.keys, key)]
            else:
                t.data[key] = old
                if not present:
                    bisect.insort(t.keys, key)
        self.undo.clear()


class MemoryBackend:
    """A KVBackend in memory, for the simulator and tests. Single-threaded.

    ``committed_writes`` counts committed write transactions (the simulator's disk can use it).
    """

    def __init__(self) -> None:
        self._tables = {name: _Table() for name in TABLES}
        self._writing = False
        self._size = 0
        self.committed_writes = 0

    @contextmanager
    def read(self) -> Iterator[ReadTxn]:
        yield _MemTxn(self._tables, writable=False)

    @contextmanager
    def write(self) -> Iterator[WriteTxn]:
        if self._writing:
            raise RuntimeError("a write transaction is already open")
        self._writing = True
        txn = _MemTxn(self._tables, writable=True)
        try:
            yield txn
        except BaseException:
            txn.rollback()
            raise
        finally:
            self._writing = False
        self._size += txn.size_delta
        self.committed_writes += 1

    @contextmanager
    def snapshot_view(self) -> Iterator[ReadTxn]:
        yield _MemTxn({n: t.copy() for n, t in self._tables.items()}, writable=False)

    def size_bytes(self) -> int:
        return self._size

    def copy(self) -> MemoryBackend:
        clone = MemoryBackend()
        clone._tables = {n: t.copy() for n, t in self._tables.items()}
        clone._size = self._size
        return clone
