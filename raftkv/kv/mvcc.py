"""etcd's MVCC key space over any :class:`~raftkv.kv.backend.KVBackend`.

The records it reads and writes, and the primitive seeks over them, are in
:mod:`raftkv.kv.layout`; the evaluation of a txn's compares is in :mod:`raftkv.kv.compare`.

A put or delete also keeps the key's lease attachment up to date (``raftkv.kv.leases``).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace

from raftkv.kv.backend import HIST, META, REV, KVBackend, ReadTxn, WriteTxn
from raftkv.kv.compare import compare_path
from raftkv.kv.errors import (
    CompactedRevisionError,
    FutureRevisionError,
    KeyNotFoundError,
)
from raftkv.kv.keys import escape_key, normalize_end, unescape_key, validate_request
from raftkv.kv.layout import (
    MAX_U64,
    META_COMPACT,
    META_REV,
    REVISION,
    TOMBSTONE_VALUE,
    U64,
    hist_value,
    inverted,
    is_tombstone,
    kv_of,
    live,
    main_of,
    meta_u64,
    visible,
)
from raftkv.kv.leases import attach, check_exists, detach
from raftkv.kv.types import (
    CompactionRequest,
    CompactionResponse,
    DeleteRangeRequest,
    DeleteRangeResponse,
    Event,
    EventType,
    HashKVResult,
    KeyValue,
    PutRequest,
    PutResponse,
    RangeRequest,
    RangeResponse,
    Request,
    RequestOp,
    Response,
    ResponseOp,
    SortOrder,
    SortTarget,
    TxnRequest,
    TxnResponse,
    WatchBatch,
)

__all__ = ["MVCCStore", "Revisions", "delete_keys_in", "hash_versions"]


class Revisions:
    """A write transaction's current and compacted revisions, read once for a batch of requests.

    Applying a batch reads them once and writes the current revision back once, at the end
    (:meth:`flush`), instead of twice and once per request: py-lmdb gives up and retakes the GIL
    around every LMDB call, and those were three of the ~8 calls of a put.
    """

    __slots__ = ("_stored", "compacted", "current")

    def __init__(self, txn: ReadTxn) -> None:
        self.current = MVCCStore.current_revision_in(txn)
        self.compacted = MVCCStore.compacted_revision_in(txn)
        self._stored = self.current

    def flush(self, txn: WriteTxn) -> None:
        """Write the current revision, if a request moved it."""
        if self.current != self._stored:
            txn.put(META, META_REV, U64.pack(self.current))
            self._stored = self.current


class MVCCStore:
    """Reads open their own transaction; writes run inside the caller's write transaction."""

    def __init__(self, backend: KVBackend) -> None:
        self.backend = backend

    # -- revisions ------------------------------------------------------------------------------

    @staticmethod
    def current_revision_in(txn: ReadTxn) -> int:
        return meta_u64(txn, META_REV, 1)

    @staticmethod
    def compacted_revision_in(txn: ReadTxn) -> int:
        return meta_u64(txn, META_COMPACT, 0)

    def current_revision(self) -> int:
        with self.backend.read() as txn:
            return self.current_revision_in(txn)

    def compacted_revision(self) -> int:
        with self.backend.read() as txn:
            return self.compacted_revision_in(txn)

    # -- reads ----------------------------------------------------------------------------------

    def range(self, req: RangeRequest) -> RangeResponse:
        validate_request(req)
        with self.backend.read() as txn:
            cur = self.current_revision_in(txn)
            return range_in(txn, req, cur, cur, self.compacted_revision_in(txn))

    def get(self, key: bytes, revision: int = 0) -> KeyValue | None:
        resp = self.range(RangeRequest(key, revision=revision))
        return resp.kvs[0] if resp.kvs else None

    def events(
        self,
        start_revision: int,
        key: bytes,
        range_end: bytes = b"",
        *,
        prev_kv: bool = False,
        max_events: int = 1000,
    ) -> WatchBatch:
        """History events with revision >= ``start_revision`` for keys in the range.

        At most about ``max_events`` (never splitting a revision). If ``start_revision`` is
        below the compacted revision the batch is empty and ``compact_revision`` is set.
        """
        with self.backend.read() as txn:
            cur = self.current_revision_in(txn)
            compacted = self.compacted_revision_in(txn)
            if start_revision < compacted:
                return WatchBatch((), start_revision, compact_revision=compacted)
            start_revision = max(start_revision, 1)
            start, end = normalize_end(key, range_end)
            lo, hi = escape_key(start), None if end is None else escape_key(end)
            out: list[Event] = []
            last_main = start_revision - 1
            for rk, k_esc in txn.scan(REV, REVISION.pack(start_revision, 0)):
                main, sub = REVISION.unpack(rk)
                if len(out) >= max_events and main != last_main:
                    return WatchBatch(tuple(out), main)
                last_main = main
                if k_esc < lo or (hi is not None and k_esc >= hi):
                    continue
                ev = _event(txn, k_esc, main, sub, prev_kv)
                if ev is not None:
                    out.append(ev)
            return WatchBatch(tuple(out), cur + 1)

    def hash_kv(self, revision: int = 0) -> HashKVResult:
        """CRC-32 over every stored version at or below ``revision`` (HashKV)."""
        with self.backend.read() as txn:
            cur = self.current_revision_in(txn)
            compacted = self.compacted_revision_in(txn)
            # etcd's HashByRev: the compacted revision itself is gone too (unlike for a read,
            # which may ask for it), and that check comes first.
            if 0 < revision <= compacted:
                raise CompactedRevisionError()
            rev = cur if revision <= 0 else revision
            if rev > cur:
                raise FutureRevisionError()
            return HashKVResult(hash_versions(txn.scan(HIST, b""), rev), compacted, rev)

    # -- writes (inside the caller's write transaction) -----------------------------------------

    def apply_in(self, txn: WriteTxn, req: Request, revisions: Revisions | None = None) -> Response:
        """Execute one validated request. Raises a KVError with no effects on failure.

        With ``revisions`` (one :class:`Revisions` for a whole batch in ``txn``) the new current
        revision is only recorded there, and the caller flushes it once after the batch;
        without, this request reads and writes them itself.
        """
        revs = Revisions(txn) if revisions is None else revisions
        w = _Writer(txn, revs.current, revs.compacted)
        if isinstance(req, RangeRequest):
            return range_in(txn, req, w.cur, w.cur, w.compacted)
        if isinstance(req, CompactionRequest):
            resp: Response = w.compact(req.revision)
            revs.compacted = req.revision
            return resp
        if isinstance(req, PutRequest):
            check_exists(txn, req.lease)  # etcd's Put looks the lease up first, a txn second
            missing = req.ignore_value or req.ignore_lease
            if missing and live(txn, escape_key(req.key)) is None:
                raise KeyNotFoundError()
            resp = w.put(req)
        elif isinstance(req, DeleteRangeRequest):
            resp = w.delete_range(req)
        elif isinstance(req, TxnRequest):
            path = compare_path(txn, req, w.cur)
            _precheck(txn, req, path, w.cur, w.compacted)
            resp = w.run_txn(req, path)
        else:
            raise TypeError(f"not a KV request: {type(req).__name__}")  # leases: the state machine
        if w.sub:
            revs.current = w.main
        if revisions is None:
            revs.flush(txn)
        return resp


def hash_versions(versions: Iterable[tuple[bytes, bytes]], rev: int) -> int:
    """HashKV's CRC-32 over stored versions (``hist`` key, value), in key order, at or below
    ``rev``; a backup's status hashes its image with it, so the two can be compared."""
    h = zlib.crc32(b"raftkv-hashkv")
    for hk, hv in versions:
        if main_of(hk) <= rev:
            h = zlib.crc32(hv, zlib.crc32(hk, h))
    return h


def delete_keys_in(txn: WriteTxn, keys: Sequence[bytes], revisions: Revisions) -> int:
    """Delete ``keys`` (a revoked lease's, detached already, in key order) in one revision, one
    DELETE event each; returns the revision after it (unchanged if none was live)."""
    w = _Writer(txn, revisions.current, revisions.compacted)
    for key in keys:
        k_esc = escape_key(key)
        if live(txn, k_esc) is not None:
            w._record(k_esc, TOMBSTONE_VALUE)
    if w.sub:
        revisions.current = w.main
    return revisions.current


def _event(txn: ReadTxn, k_esc: bytes, main: int, sub: int, prev_kv: bool) -> Event | None:
    hk = k_esc + inverted(main, sub)
    user_key = unescape_key(k_esc)
    prev: KeyValue | None = None
    rec: tuple[bytes, bytes] | None = None
    for n, (k, v) in enumerate(txn.scan(HIST, hk)):
        if n == 0:
            if k != hk:
                return None  # removed by compaction
            rec = (k, v)
            if not prev_kv:
                break
            continue
        if k[:-16] == k_esc and not is_tombstone(v):
            prev = kv_of(user_key, k, v)
        break
    if rec is None:
        return None
    if is_tombstone(rec[1]):
        return Event(EventType.DELETE, KeyValue(user_key, mod_revision=main), prev, sub)
    return Event(EventType.PUT, kv_of(user_key, *rec), prev, sub)


def range_in(
    txn: ReadTxn, req: RangeRequest, cur: int, view_rev: int, compacted: int
) -> RangeResponse:
    """etcd's Range: ``cur`` is reported, ``view_rev`` is what "latest" reads (a txn's writes)."""
    rev = req.revision
    if rev > view_rev:
        raise FutureRevisionError()
    if rev <= 0:
        rev = view_rev
    if rev < compacted:
        raise CompactedRevisionError()
    filtered = bool(
        req.min_mod_revision
        or req.max_mod_revision
        or req.min_create_revision
        or req.max_create_revision
    )
    fetch = 0 if (req.sort_order != SortOrder.NONE or filtered) else req.limit
    fetch = fetch + 1 if fetch > 0 else 0
    kvs: list[KeyValue] = []
    total = 0
    # Values are sorted on before keys_only drops them (etcd strips after sorting).
    strip_now = req.keys_only and req.sort_target != SortTarget.VALUE
    for k_esc, hk, hv in visible(txn, req.key, req.range_end, rev):
        total += 1
        if not req.count_only and (fetch == 0 or len(kvs) < fetch):
            kvs.append(kv_of(unescape_key(k_esc), hk, hv, strip_now))
    if req.count_only:
        return RangeResponse(cur, (), False, total)
    if filtered:
        kvs = [kv for kv in kvs if _passes(req, kv)]
    kvs = _sorted(kvs, req.sort_order, req.sort_target)
    more = False
    if req.limit > 0 and len(kvs) > req.limit:
        kvs, more = kvs[: req.limit], True
    if req.keys_only and not strip_now:
        kvs = [replace(kv, value=b"") for kv in kvs]
    return RangeResponse(cur, tuple(kvs), more, total)


def _passes(req: RangeRequest, kv: KeyValue) -> bool:
    if req.min_mod_revision and kv.mod_revision < req.min_mod_revision:
        return False
    if req.max_mod_revision and kv.mod_revision > req.max_mod_revision:
        return False
    if req.min_create_revision and kv.create_revision < req.min_create_revision:
        return False
    return not (req.max_create_revision and kv.create_revision > req.max_create_revision)


def _sorted(kvs: list[KeyValue], order: SortOrder, target: SortTarget) -> list[KeyValue]:
    # Results come in ascending key order: ASCEND by KEY needs no work; NONE with another
    # target means ASCEND (as etcd does). Ties keep key order (a stable sort).
    if target != SortTarget.KEY and order == SortOrder.NONE:
        order = SortOrder.ASCEND
    if order == SortOrder.NONE or (target == SortTarget.KEY and order == SortOrder.ASCEND):
        return kvs
    desc = order == SortOrder.DESCEND
    if target == SortTarget.KEY:
        return kvs[::-1]
    if target == SortTarget.VERSION:
        return sorted(kvs, key=lambda kv: kv.version, reverse=desc)
    if target == SortTarget.CREATE:
        return sorted(kvs, key=lambda kv: kv.create_revision, reverse=desc)
    if target == SortTarget.MOD:
        return sorted(kvs, key=lambda kv: kv.mod_revision, reverse=desc)
    return sorted(kvs, key=lambda kv: kv.value, reverse=desc)


# -- txn helpers ----------------------------------------------------------------------------------


def _taken_ops(req: TxnRequest, path: Sequence[bool]) -> list[RequestOp]:
    """The ops of the branches ``path`` takes, nested txns expanded in place, in order."""
    it = iter(path)
    out: list[RequestOp] = []

    def walk(t: TxnRequest) -> None:
        for op in t.success if next(it) else t.failure:
            if isinstance(op, TxnRequest):
                walk(op)
            else:
                out.append(op)

    walk(req)
    return out


def _precheck(
    txn: ReadTxn, req: TxnRequest, path: Sequence[bool], cur: int, compacted: int
) -> None:
    """Errors that fail a whole txn before it writes anything (etcd's checkRequests), in etcd's
    order: every put first (key, then lease), then every range."""
    ops = _taken_ops(req, path)
    for op in ops:
        if isinstance(op, PutRequest):
            if (op.ignore_value or op.ignore_lease) and live(txn, escape_key(op.key)) is None:
                raise KeyNotFoundError()
            check_exists(txn, op.lease)
    for op in ops:
        if isinstance(op, RangeRequest):
            if op.revision > cur:
                raise FutureRevisionError()
            if 0 < op.revision < compacted:
                raise CompactedRevisionError()


class _Writer:
    """One request's writes: every change gets revision (cur + 1, sub)."""

    def __init__(self, txn: WriteTxn, current: int, compacted: int) -> None:
        self.wtxn = txn
        self.cur = current
        self.compacted = compacted
        self.main = self.cur + 1
        self.sub = 0

    def _record(self, k_esc: bytes, value: bytes) -> None:
        self.wtxn.put(HIST, k_esc + inverted(self.main, self.sub), value)
        self.wtxn.put(REV, REVISION.pack(self.main, self.sub), k_esc)
        self.sub += 1

    @property
    def view_rev(self) -> int:
        return self.main if self.sub else self.cur

    def put(self, req: PutRequest) -> PutResponse:
        k_esc = escape_key(req.key)
        prev = live(self.wtxn, k_esc)
        prev_kv = None if prev is None else kv_of(req.key, *prev)
        if prev_kv is None:
            create, version = self.main, 1
        else:
            create, version = prev_kv.create_revision, prev_kv.version + 1
        value = prev_kv.value if req.ignore_value and prev_kv else req.value
        lease = prev_kv.lease if req.ignore_lease and prev_kv else req.lease
        if prev_kv is None or prev_kv.lease != lease:  # the key moves to its new lease
            detach(self.wtxn, 0 if prev_kv is None else prev_kv.lease, k_esc)
            attach(self.wtxn, lease, k_esc)
        self._record(k_esc, hist_value(create, version, lease, value))
        return PutResponse(self.main, prev_kv if req.prev_kv else None)

    def delete_range(self, req: DeleteRangeRequest) -> DeleteRangeResponse:
        doomed = [
            (k_esc, kv_of(unescape_key(k_esc), hk, hv))
            for k_esc, hk, hv in visible(self.wtxn, req.key, req.range_end, self.view_rev)
        ]
        for k_esc, kv in doomed:
            detach(self.wtxn, kv.lease, k_esc)
            self._record(k_esc, TOMBSTONE_VALUE)
        rev = self.main if self.sub else self.cur
        prevs = tuple(kv for _, kv in doomed) if req.prev_kv else ()
        return DeleteRangeResponse(rev, len(doomed), prevs)

    def run_txn(self, req: TxnRequest, path: Sequence[bool]) -> TxnResponse:
        it = iter(path)

        def run(t: TxnRequest) -> TxnResponse:
            ok = next(it)
            out: list[ResponseOp] = []
            for op in t.success if ok else t.failure:
                out.append(self._op(op, run))
            return TxnResponse(0, ok, tuple(out))

        resp = run(req)
        return _stamp(resp, self.main if self.sub else self.cur)

    def _op(self, op: RequestOp, run: Callable[[TxnRequest], TxnResponse]) -> ResponseOp:
        if isinstance(op, RangeRequest):
            return range_in(self.wtxn, op, self.view_rev, self.view_rev, self.compacted)
        if isinstance(op, PutRequest):
            return self.put(op)
        if isinstance(op, DeleteRangeRequest):
            return self.delete_range(op)
        return run(op)

    def compact(self, revision: int) -> CompactionResponse:
        if revision <= self.compacted:
            raise CompactedRevisionError()
        if revision > self.cur:
            raise FutureRevisionError()
        compact_in(self.wtxn, revision)
        return CompactionResponse(self.cur)


def _stamp(resp: TxnResponse, rev: int) -> TxnResponse:
    """Give the txn and its write responses the txn's final revision, as etcd's header does."""
    out: list[ResponseOp] = []
    for r in resp.responses:
        if isinstance(r, TxnResponse):
            out.append(_stamp(r, rev))
        elif isinstance(r, PutResponse):
            out.append(PutResponse(rev, r.prev_kv))
        elif isinstance(r, DeleteRangeResponse):
            out.append(DeleteRangeResponse(rev, r.deleted, r.prev_kvs))
        else:
            out.append(RangeResponse(rev, r.kvs, r.more, r.count))
    return TxnResponse(rev, resp.succeeded, tuple(out))


def compact_in(txn: WriteTxn, revision: int) -> int:
    """Drop versions superseded at ``revision``; returns how many records were removed."""
    seek = REVISION.pack(MAX_U64 - revision, 0)
    end_rev = REVISION.pack(revision + 1, 0)
    removed = 0
    doomed_revs: list[bytes] = []
    for _rk, k_esc in txn.scan(REV, b"", end_rev):
        # The newest version <= revision survives unless it is a tombstone.
        kept = None
        older: list[bytes] = []
        for hk, hv in txn.scan(HIST, k_esc + seek):
            if hk[:-16] != k_esc:
                break
            if kept is None:
                kept = hk
                if is_tombstone(hv):
                    older.append(hk)
                continue
            older.append(hk)
        for hk in older:
            txn.delete(HIST, hk)
            removed += 1
            if main_of(hk) == revision:
                doomed_revs.append(REVISION.pack(revision, MAX_U64 - int(U64.unpack(hk[-8:])[0])))
    removed += txn.delete_range(REV, b"", REVISION.pack(revision, 0))
    for rk in doomed_revs:
        txn.delete(REV, rk)
    txn.put(META, META_COMPACT, U64.pack(revision))
    return removed
