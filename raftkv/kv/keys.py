"""Key ranges as etcd defines them, and request validation (etcd's v3rpc checks).

A range is ``[key, range_end)``. An empty ``range_end`` means the single key ``key``;
``range_end == b"\\0"`` means every key >= ``key``; ``key == range_end == b"\\0"`` means all keys.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from raftkv.kv.errors import (
    DuplicateKeyError,
    EmptyKeyError,
    InvalidSortOptionError,
    KeyTooLargeError,
    LeaseProvidedError,
    TooManyOpsError,
    ValueProvidedError,
)
from raftkv.kv.types import (
    CompactionRequest,
    DeleteRangeRequest,
    PutRequest,
    RangeRequest,
    Request,
    RequestOp,
    SortOrder,
    SortTarget,
    TxnRequest,
)

__all__ = [
    "MAX_STORED_KEY_BYTES",
    "MAX_TXN_DEPTH",
    "MAX_TXN_OPS",
    "escape_key",
    "escaped_size",
    "in_range",
    "normalize_end",
    "prefix_end",
    "unescape_key",
    "validate_request",
]

MAX_TXN_OPS = 128
"""etcd's --max-txn-ops default. etcd spends it as a budget down the nesting: a txn may hold
that many compares, success ops and failure ops each, and a txn nested in it only the budget
minus the largest of its parent's three counts (etcd's checkTxnRequest)."""
MAX_TXN_DEPTH = MAX_TXN_OPS + 1
"""The deepest nesting the budget can allow: every level that holds a txn spends at least one,
so level 129 is reachable (an empty txn) and level 130 never is. Deeper requests are refused
before they are decoded in full (raftkv.server.decoding), which also bounds every recursion over
a txn."""
MAX_STORED_KEY_BYTES = 511
"""LMDB's key size limit. The history key is ``escape_key(key) + 16`` bytes, so user keys are
bounded (to 493 bytes without NUL bytes); longer keys get "request is too large"."""

INF: bytes | None = None
"""An open upper bound."""


def prefix_end(prefix: bytes) -> bytes:
    """The range_end that selects every key starting with ``prefix`` (etcd's GetPrefixRangeEnd)."""
    end = bytearray(prefix)
    while end:
        if end[-1] < 0xFF:
            end[-1] += 1
            return bytes(end)
        end.pop()
    return b"\0"  # all bytes 0xff (or empty): every key from ``prefix`` on


def normalize_end(key: bytes, range_end: bytes) -> tuple[bytes, bytes | None]:
    """``(start, end)`` with ``end`` exclusive, or ``None`` for no upper bound.

    A single-key range becomes ``(key, key + b"\\0")``.
    """
    if not range_end:
        return key, key + b"\0"
    if range_end == b"\0":
        return key, None
    return key, range_end


def in_range(k: bytes, key: bytes, range_end: bytes) -> bool:
    start, end = normalize_end(key, range_end)
    return k >= start and (end is None or k < end)


_RUN_MAX = 127
_RUNS = re.compile(b"\0+")


def escape_key(key: bytes) -> bytes:
    """An order-preserving, self-delimiting encoding that ends in NUL NUL.

    For any keys a < b, escape_key(a) + x < escape_key(b) + y for all suffixes x and y, so
    ``escape_key(key) + revision`` sorts by key first and revision second.

    A run of n NUL bytes (n <= 127) becomes two bytes: NUL, then n if the key ends right after
    the run, or 256 - n if more follows; longer runs are split. Runs that end the key sort
    first and by length, runs followed by more bytes sort after them, longest first: exactly
    the order of the raw keys, while NUL-heavy keys grow by at most 2 bytes per 127 NULs.
    """
    if b"\0" not in key:
        return key + b"\0\0"
    return _RUNS.sub(_encode_run, key) + b"\0\0"


def _encode_run(match: re.Match[bytes]) -> bytes:
    start, end = match.span()
    at_end = end == len(match.string)
    n = end - start
    if n <= _RUN_MAX:  # the usual case: one run, one pair
        return bytes((0, n if at_end else 256 - n))
    out = bytearray()
    while n > 0:
        chunk = min(n, _RUN_MAX)
        n -= chunk
        last = n == 0
        out += b"\0" + bytes((chunk if (last and at_end) else 256 - chunk,))
    return bytes(out)


def unescape_key(stored: bytes) -> bytes:
    """Inverse of :func:`escape_key` (the argument ends with the NUL NUL terminator)."""
    body = stored[:-2]
    if b"\0" not in body:
        return body
    out = bytearray()
    i = 0
    while i < len(body):
        j = body.find(b"\0", i)
        if j < 0:
            out += body[i:]
            break
        out += body[i:j]
        code = body[j + 1]
        out += b"\0" * (code if code <= _RUN_MAX else 256 - code)
        i = j + 2
    return bytes(out)


def escaped_size(key: bytes) -> int:
    """``len(escape_key(key))``, without building it (every request checks it)."""
    size = len(key) + 2
    if b"\0" in key:
        for match in _RUNS.finditer(key):
            n = match.end() - match.start()
            size += 2 * -(-n // _RUN_MAX) - n
    return size


def _check_key(key: bytes) -> None:
    if not key:
        raise EmptyKeyError()
    if escaped_size(key) + 16 > MAX_STORED_KEY_BYTES:
        raise KeyTooLargeError()


def validate_request(req: Request) -> None:
    """etcd's input checks, run before proposing and again at apply. Raises a KVError."""
    if isinstance(req, RangeRequest):
        _check_key(req.key)
        if req.sort_order not in SortOrder.__members__.values():
            raise InvalidSortOptionError()
        if req.sort_target not in SortTarget.__members__.values():
            raise InvalidSortOptionError()
    elif isinstance(req, PutRequest):
        _check_key(req.key)
        if req.ignore_value and req.value:
            raise ValueProvidedError()
        if req.ignore_lease and req.lease:
            raise LeaseProvidedError()
    elif isinstance(req, DeleteRangeRequest):
        _check_key(req.key)
    elif isinstance(req, TxnRequest):
        _validate_txn(req, MAX_TXN_OPS)
        _check_intervals(req.success)
        _check_intervals(req.failure)
    elif isinstance(req, CompactionRequest):
        pass


def _validate_txn(txn: TxnRequest, budget: int) -> None:
    """etcd's checkTxnRequest, in its order: the op count against what the enclosing txns left
    of the budget, then the compares' keys, then each op (a nested txn with less budget)."""
    spent = max(len(txn.compare), len(txn.success), len(txn.failure))
    if spent > budget:
        raise TooManyOpsError()
    for c in txn.compare:
        _check_key(c.key)
    for op in (*txn.success, *txn.failure):
        if isinstance(op, TxnRequest):
            _validate_txn(op, budget - spent)
        else:
            validate_request(op)


class _Dels:
    """A set of deleted intervals; small, so a list suffices."""

    def __init__(self) -> None:
        self.spans: list[tuple[bytes, bytes | None]] = []

    def add(self, key: bytes, range_end: bytes) -> None:
        self.spans.append(normalize_end(key, range_end))

    def hits(self, k: bytes) -> bool:
        return any(k >= s and (e is None or k < e) for s, e in self.spans)


def _check_intervals(ops: Sequence[RequestOp]) -> tuple[set[bytes], _Dels]:
    """No key may be written twice in one txn (etcd's checkIntervals).

    Puts may not repeat, and no put may fall inside a delete range, at this level or below;
    the two branches of a nested txn may put the same key, since only one of them runs.
    """
    dels = _Dels()
    for op in ops:
        if isinstance(op, DeleteRangeRequest):
            dels.add(op.key, op.range_end)
    puts: set[bytes] = set()
    for op in ops:
        if not isinstance(op, TxnRequest):
            continue
        puts_then, dels_then = _check_intervals(op.success)
        puts_else, dels_else = _check_intervals(op.failure)
        for k in sorted(puts_then):
            if k in puts or dels.hits(k):
                raise DuplicateKeyError()
            puts.add(k)
        for k in sorted(puts_else):
            if (k in puts and k not in puts_then) or dels.hits(k):
                raise DuplicateKeyError()
            puts.add(k)
        dels.spans.extend(dels_then.spans)
        dels.spans.extend(dels_else.spans)
    for op in ops:
        if isinstance(op, PutRequest):
            if op.key in puts or dels.hits(op.key):
                raise DuplicateKeyError()
            puts.add(op.key)
    return puts, dels
