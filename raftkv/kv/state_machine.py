"""KVStateMachine: applies committed Raft entries to the MVCC store, deterministically.

* Many entries are applied in ONE backend write transaction, and the applied index is stored in
  that same transaction, so a crash leaves effects and index consistent (etcd's cindex lesson).
* Entries at or below the applied index are skipped: re-applying is a no-op.
* A request that fails with a KVError leaves no effects and its error is the result.
* Snapshots are a logical dump of every table from one consistent read view, produced in
  chunks (writes continue meanwhile), and restored in one write transaction.

The state machine sees entries through a structural protocol (``index``, ``kind``, ``data``),
so it never imports the Raft core.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from raftkv.errors import CorruptionError
from raftkv.kv.backend import META, TABLES, KVBackend, WriteTxn
from raftkv.kv.codec import MAGIC, decode_command, is_put_command
from raftkv.kv.errors import KVError, NoSpaceError, StaleLeaseRevokeError
from raftkv.kv.keys import validate_request
from raftkv.kv.leases import grant_in, leases_in, revoke_in
from raftkv.kv.mvcc import MVCCStore, Revisions, delete_keys_in
from raftkv.kv.types import (
    LeaseGrantRequest,
    LeaseGrantResponse,
    LeaseRevokeRequest,
    LeaseRevokeResponse,
    PutRequest,
    Request,
    Response,
    TxnRequest,
)

__all__ = [
    "DEFAULT_QUOTA_BYTES",
    "ApplyResult",
    "CommittedEntry",
    "KVStateMachine",
    "dump_chunks",
    "image_records",
    "is_command",
    "load_chunks",
    "quick_to_apply",
]

DEFAULT_QUOTA_BYTES = 2 << 30
"""etcd's default backend quota: 2 GiB."""

_U64 = struct.Struct(">Q")
_K_APPLIED = b"applied"
_SNAP_MAGIC = b"RAFTKV-SNAP/1\n"
_REC = struct.Struct(">BII")  # table id, key length, value length
_END = 0xFF
_PAD_BYTES = 512


class CommittedEntry(Protocol):
    @property
    def index(self) -> int: ...

    @property
    def term(self) -> int: ...

    @property
    def kind(self) -> int: ...

    @property
    def data(self) -> bytes: ...


def _skipped(entry: CommittedEntry) -> bool:
    """A no-op, configuration change or non-KV entry: applying it only advances the index."""
    return entry.kind != 0 or entry.data[:2] != MAGIC


def is_command(entry: CommittedEntry) -> bool:
    """Whether ``entry`` carries a KV command (applying it gives a result, unless the state
    machine had applied it already, through a restored snapshot image)."""
    return not _skipped(entry)


def quick_to_apply(entry: CommittedEntry) -> bool:
    """Whether applying ``entry`` is bounded and quick: skipped, or a plain Put (read from the
    command's tag, without decoding it)."""
    return _skipped(entry) or is_put_command(entry.data)


@dataclass(frozen=True, slots=True)
class ApplyResult:
    """The outcome of one applied KV command. ``result`` is a Response or the KVError."""

    index: int
    request_id: int
    result: Response | KVError


def _writes(req: Request) -> bool:
    """Whether the request needs space (refused over quota); a revoke only frees some."""
    if isinstance(req, PutRequest | LeaseGrantRequest):
        return True
    if isinstance(req, TxnRequest):
        return any(_writes(op) for op in (*req.success, *req.failure))
    return False


class KVStateMachine:
    def __init__(self, backend: KVBackend, *, quota_bytes: int = DEFAULT_QUOTA_BYTES) -> None:
        self.backend = backend
        self.store = MVCCStore(backend)
        self.quota_bytes = quota_bytes

    def applied_index(self) -> int:
        with self.backend.read() as txn:
            raw = txn.get(META, _K_APPLIED)
            return 0 if raw is None else int(_U64.unpack(raw)[0])

    def apply(self, entries: Sequence[CommittedEntry]) -> list[ApplyResult]:
        """Apply a batch in one transaction; returns the results of the KV commands in it."""
        results: list[ApplyResult] = []
        if not entries:
            return results
        over_quota = self.backend.size_bytes() > self.quota_bytes
        with self.backend.write() as txn:
            raw = txn.get(META, _K_APPLIED)
            applied = 0 if raw is None else int(_U64.unpack(raw)[0])
            last = applied
            revisions: Revisions | None = None  # read at the batch's first command
            for entry in entries:
                if entry.index <= last:
                    continue
                last = entry.index
                if _skipped(entry):
                    continue
                cmd = decode_command(entry.data)
                if revisions is None:
                    revisions = Revisions(txn)
                result = self._apply_one(txn, cmd.request, over_quota, revisions, entry.term)
                results.append(ApplyResult(entry.index, cmd.request_id, result))
            if revisions is not None:
                revisions.flush(txn)
            if last != applied:
                txn.put(META, _K_APPLIED, _U64.pack(last))
        return results

    def _apply_one(
        self, txn: WriteTxn, req: Request, over_quota: bool, revisions: Revisions, term: int
    ) -> Response | KVError:
        try:
            validate_request(req)
            if over_quota and _writes(req):
                raise NoSpaceError()
            if isinstance(req, LeaseGrantRequest):
                ttl = grant_in(txn, req.id, req.ttl)  # a grant makes no revision
                return LeaseGrantResponse(revisions.current, req.id, ttl)
            if isinstance(req, LeaseRevokeRequest):
                return _revoke(txn, req, revisions, term)
            return self.store.apply_in(txn, req, revisions)
        except KVError as exc:
            return exc

    def leases(self) -> list[tuple[int, int]]:
        """Every lease as ``(id, granted TTL)`` (what a member's lessor starts from)."""
        with self.backend.read() as txn:
            return leases_in(txn)

    # -- snapshots ------------------------------------------------------------------------------

    def snapshot_chunks(self, chunk_bytes: int = 1 << 20) -> Iterator[bytes]:
        """The whole state machine (applied index included) as a stream of chunks."""
        return dump_chunks(self.backend, chunk_bytes)

    def restore(self, chunks: Iterable[bytes]) -> None:
        """Replace the whole state with a snapshot stream; all or nothing."""
        load_chunks(self.backend, chunks)


def _revoke(
    txn: WriteTxn, req: LeaseRevokeRequest, revisions: Revisions, term: int
) -> LeaseRevokeResponse:
    """etcd's revoke: every attached key deleted in one revision, in key order. An expiry
    takes effect only in an entry of the term whose leader decided it (``raftkv.driver.lessor``
    explains why)."""
    if req.term and req.term != term:
        raise StaleLeaseRevokeError()
    keys = revoke_in(txn, req.id)
    before = revisions.current
    revision = delete_keys_in(txn, keys, revisions)
    return LeaseRevokeResponse(revision, req.id, len(keys) if revision != before else 0)


def dump_chunks(backend: KVBackend, chunk_bytes: int = 1 << 20) -> Iterator[bytes]:
    """Every record of every table from one consistent view, CRC-32 sealed at the end."""
    with backend.snapshot_view() as txn:
        buf = bytearray(_SNAP_MAGIC)
        crc = 0
        for tid, table in enumerate(TABLES):
            for k, v in txn.scan(table, b""):
                buf += _REC.pack(tid, len(k), len(v))
                buf += k
                buf += v
                if len(buf) >= chunk_bytes:
                    crc = zlib.crc32(buf, crc)
                    yield bytes(buf)
                    buf.clear()
        buf += _REC.pack(_END, 0, 0)
        crc = zlib.crc32(buf, crc)
        buf += struct.pack(">I", crc)
        yield bytes(buf)


def _records(chunks: Iterable[bytes], padded: bool = False) -> Iterator[tuple[str, bytes, bytes]]:
    buf = bytearray()
    crc = 0
    pos = 0
    seen_magic = False
    it = iter(chunks)

    def need(n: int) -> bool:
        nonlocal buf, pos
        while len(buf) - pos < n:
            chunk = next(it, None)
            if chunk is None:
                return False
            if pos:
                del buf[:pos]
                pos = 0
            buf += chunk
        return True

    if not need(len(_SNAP_MAGIC)) or bytes(buf[: len(_SNAP_MAGIC)]) != _SNAP_MAGIC:
        raise CorruptionError("snapshot: bad magic")
    seen_magic = True
    crc = zlib.crc32(buf[: len(_SNAP_MAGIC)])
    pos = len(_SNAP_MAGIC)
    while seen_magic:
        if not need(_REC.size):
            raise CorruptionError("snapshot: truncated")
        head = bytes(buf[pos : pos + _REC.size])
        tid, klen, vlen = _REC.unpack(head)
        crc = zlib.crc32(head, crc)
        pos += _REC.size
        if tid == _END:
            if not need(4) or struct.unpack_from(">I", buf, pos)[0] != crc:
                raise CorruptionError("snapshot: checksum mismatch or truncated trailer")
            pos += 4
            if padded:
                _check_padding(buf, pos, it)
            elif need(1):
                raise CorruptionError("snapshot: trailing bytes")
            return
        if tid >= len(TABLES) or not need(klen + vlen):
            raise CorruptionError("snapshot: bad or truncated record")
        body = bytes(buf[pos : pos + klen + vlen])
        crc = zlib.crc32(body, crc)
        pos += klen + vlen
        yield TABLES[tid], body[:klen], body[klen:]


def _check_padding(buf: bytearray, pos: int, rest: Iterator[bytes]) -> None:
    """A backup file pads the image with zero bytes to a multiple of 512 (etcdctl checks its
    size against bbolt's page size): anything after the trailer must be that padding."""
    size = len(buf) - pos
    if any(buf[pos:]):
        raise CorruptionError("snapshot: trailing bytes after the image")
    for chunk in rest:
        size += len(chunk)
        if any(chunk):
            raise CorruptionError("snapshot: trailing bytes after the image")
    if size >= _PAD_BYTES:
        raise CorruptionError("snapshot: more padding than a backup file has")


def image_records(chunks: Iterable[bytes]) -> Iterator[tuple[str, bytes, bytes]]:
    """``(table, key, value)`` of every record of a backup file's image (which may end in the
    zero padding ``raftkv snapshot save`` and ``etcdctl snapshot save`` keep), checked as
    :func:`load_chunks` checks it. The sha256 that such a file ends with is not part of it."""
    return _records(chunks, padded=True)


def load_chunks(
    backend: KVBackend, chunks: Iterable[bytes], *, padded: bool = False, applied: int | None = None
) -> None:
    """Replace every table with the snapshot's records in one write transaction.

    A corrupt stream raises CorruptionError and the transaction aborts: nothing changes.
    ``padded`` accepts a backup file's zero padding after the image; ``applied`` replaces the
    image's applied index (a restored backup starts a new cluster, with a new Raft log).
    """
    with backend.write() as txn:
        for table in TABLES:
            txn.delete_range(table, b"", None)
        for table, k, v in _records(chunks, padded):
            txn.put(table, k, v)
        if applied is not None:
            txn.put(META, _K_APPLIED, _U64.pack(applied))
