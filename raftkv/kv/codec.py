"""A compact binary encoding of KV commands, carried in Raft entries.

Envelope: ``b"K1"`` magic, then the request id (varint), then one request. A request is a tag
byte followed by its fields: integers are LEB128 varints (signed ones zigzag-encoded), byte
strings are a varint length and the bytes, and booleans are packed into one flags byte. The
encoding is deterministic, so equal commands always produce equal bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

from raftkv.errors import CorruptionError
from raftkv.kv.types import (
    CompactionRequest,
    Compare,
    CompareResult,
    CompareTarget,
    DeleteRangeRequest,
    LeaseGrantRequest,
    LeaseRevokeRequest,
    PutRequest,
    RangeRequest,
    Request,
    RequestOp,
    SortOrder,
    SortTarget,
    TxnRequest,
)

__all__ = [
    "Command",
    "decode_command",
    "decode_request",
    "encode_command",
    "encode_request",
    "is_put_command",
]

MAGIC = b"K1"

_RANGE, _PUT, _DELETE, _TXN, _COMPACT = 1, 2, 3, 4, 5
_LEASE_GRANT, _LEASE_REVOKE = 6, 7


@dataclass(frozen=True, slots=True)
class Command:
    """A request and the id the proposer uses to match its completion."""

    request_id: int
    request: Request


class _Writer:
    __slots__ = ("buf",)

    def __init__(self) -> None:
        self.buf = bytearray()

    def uint(self, n: int) -> None:
        if n < 0:
            raise ValueError(f"negative value {n} for an unsigned field")
        buf = self.buf
        while n >= 0x80:
            buf.append((n & 0x7F) | 0x80)
            n >>= 7
        buf.append(n)

    def sint(self, n: int) -> None:
        self.uint(n * 2 if n >= 0 else -n * 2 - 1)

    def blob(self, b: bytes) -> None:
        self.uint(len(b))
        self.buf += b

    def flags(self, *bits: bool) -> None:
        self.buf.append(sum(1 << i for i, bit in enumerate(bits) if bit))


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def uint(self) -> int:
        data, pos, shift, n = self.data, self.pos, 0, 0
        while True:
            if pos >= len(data):
                raise CorruptionError("truncated command")
            b = data[pos]
            pos += 1
            n |= (b & 0x7F) << shift
            if b < 0x80:
                self.pos = pos
                return n
            shift += 7

    def sint(self) -> int:
        n = self.uint()
        return n >> 1 if n % 2 == 0 else -((n + 1) >> 1)

    def blob(self) -> bytes:
        n = self.uint()
        end = self.pos + n
        if end > len(self.data):
            raise CorruptionError("truncated command")
        out = self.data[self.pos : end]
        self.pos = end
        return out

    def flags(self, count: int) -> list[bool]:
        b = self.byte()
        return [bool(b >> i & 1) for i in range(count)]

    def byte(self) -> int:
        if self.pos >= len(self.data):
            raise CorruptionError("truncated command")
        self.pos += 1
        return self.data[self.pos - 1]


def _put_request(w: _Writer, req: Request) -> None:
    if isinstance(req, PutRequest):
        w.buf.append(_PUT)
        w.blob(req.key)
        w.blob(req.value)
        w.sint(req.lease)
        w.flags(req.prev_kv, req.ignore_value, req.ignore_lease)
    elif isinstance(req, DeleteRangeRequest):
        w.buf.append(_DELETE)
        w.blob(req.key)
        w.blob(req.range_end)
        w.flags(req.prev_kv)
    elif isinstance(req, RangeRequest):
        w.buf.append(_RANGE)
        w.blob(req.key)
        w.blob(req.range_end)
        for n in (req.limit, req.revision, req.sort_order, req.sort_target):
            w.sint(n)
        for n in (req.min_mod_revision, req.max_mod_revision):
            w.sint(n)
        for n in (req.min_create_revision, req.max_create_revision):
            w.sint(n)
        w.flags(req.serializable, req.keys_only, req.count_only)
    elif isinstance(req, TxnRequest):
        w.buf.append(_TXN)
        w.uint(len(req.compare))
        for c in req.compare:
            w.buf.append(c.result)
            w.buf.append(c.target)
            w.blob(c.key)
            w.blob(c.range_end)
            if c.target == CompareTarget.VALUE:
                w.blob(c.value)
            else:
                w.sint(_compare_number(c))
        for branch in (req.success, req.failure):
            w.uint(len(branch))
            for op in branch:
                _put_request(w, op)
    elif isinstance(req, CompactionRequest):
        w.buf.append(_COMPACT)
        w.sint(req.revision)
        w.flags(req.physical)
    elif isinstance(req, LeaseGrantRequest):
        w.buf.append(_LEASE_GRANT)
        w.sint(req.id)
        w.sint(req.ttl)
    elif isinstance(req, LeaseRevokeRequest):
        w.buf.append(_LEASE_REVOKE)
        w.sint(req.id)
        w.uint(req.term)
    else:
        raise TypeError(f"not a KV request: {req!r}")


def _compare_number(c: Compare) -> int:
    if c.target == CompareTarget.VERSION:
        return c.version
    if c.target == CompareTarget.CREATE:
        return c.create_revision
    if c.target == CompareTarget.MOD:
        return c.mod_revision
    return c.lease


def _get_request(r: _Reader) -> Request:
    tag = r.byte()
    if tag == _PUT:
        key, value, lease = r.blob(), r.blob(), r.sint()
        prev_kv, ignore_value, ignore_lease = r.flags(3)
        return PutRequest(key, value, lease, prev_kv, ignore_value, ignore_lease)
    if tag == _DELETE:
        key, end = r.blob(), r.blob()
        return DeleteRangeRequest(key, end, r.flags(1)[0])
    if tag == _RANGE:
        key, end = r.blob(), r.blob()
        limit, rev, order, target = r.sint(), r.sint(), r.sint(), r.sint()
        nums = [r.sint() for _ in range(4)]
        serializable, keys_only, count_only = r.flags(3)
        return RangeRequest(
            key, end, limit, rev, SortOrder(order), SortTarget(target),
            serializable, keys_only, count_only, *nums,
        )  # fmt: skip
    if tag == _TXN:
        return _get_txn(r)
    if tag == _COMPACT:
        rev = r.sint()
        return CompactionRequest(rev, r.flags(1)[0])
    if tag == _LEASE_GRANT:
        lease = r.sint()
        return LeaseGrantRequest(lease, r.sint())
    if tag == _LEASE_REVOKE:
        lease = r.sint()
        return LeaseRevokeRequest(lease, r.uint())
    raise CorruptionError(f"unknown request tag {tag}")


def _numeric_compare(
    result: CompareResult, target: CompareTarget, key: bytes, end: bytes, n: int
) -> Compare:
    if target == CompareTarget.VERSION:
        return Compare(result, target, key, version=n, range_end=end)
    if target == CompareTarget.CREATE:
        return Compare(result, target, key, create_revision=n, range_end=end)
    if target == CompareTarget.MOD:
        return Compare(result, target, key, mod_revision=n, range_end=end)
    return Compare(result, target, key, lease=n, range_end=end)


def _get_txn(r: _Reader) -> TxnRequest:
    compares: list[Compare] = []
    for _ in range(r.uint()):
        result, target = CompareResult(r.byte()), CompareTarget(r.byte())
        key, end = r.blob(), r.blob()
        if target == CompareTarget.VALUE:
            compares.append(Compare(result, target, key, value=r.blob(), range_end=end))
            continue
        compares.append(_numeric_compare(result, target, key, end, r.sint()))
    branches: list[tuple[RequestOp, ...]] = []
    for _ in range(2):
        ops: list[RequestOp] = []
        for _ in range(r.uint()):
            op = _get_request(r)
            if isinstance(op, CompactionRequest | LeaseGrantRequest | LeaseRevokeRequest):
                raise CorruptionError(f"{type(op).__name__} inside a txn")
            ops.append(op)
        branches.append(tuple(ops))
    return TxnRequest(tuple(compares), branches[0], branches[1])


def encode_request(req: Request) -> bytes:
    w = _Writer()
    _put_request(w, req)
    return bytes(w.buf)


def decode_request(data: bytes) -> Request:
    r = _Reader(data)
    req = _get_request(r)
    if r.pos != len(data):
        raise CorruptionError("trailing bytes after a command")
    return req


def encode_command(cmd: Command) -> bytes:
    w = _Writer()
    w.buf += MAGIC
    w.uint(cmd.request_id)
    _put_request(w, cmd.request)
    return bytes(w.buf)


def is_put_command(data: bytes) -> bool:
    """Whether ``data`` is a command whose request is a plain Put, from its tag byte alone (no
    decoding: a caller on a hot path only needs to know what kind of work it is)."""
    if data[:2] != MAGIC:
        return False
    pos, end = 2, len(data)
    while pos < end and data[pos] & 0x80:  # the request id, a varint
        pos += 1
    return pos + 1 < end and data[pos + 1] == _PUT


def decode_command(data: bytes) -> Command:
    """Raises CorruptionError on anything that is not a well-formed command."""
    if data[:2] != MAGIC:
        raise CorruptionError("not a KV command (bad magic)")
    r = _Reader(bytes(data))
    r.pos = 2
    try:
        rid = r.uint()
        req = _get_request(r)
    except ValueError as exc:  # an enum out of range
        raise CorruptionError(f"malformed command: {exc}") from exc
    if r.pos != len(data):
        raise CorruptionError("trailing bytes after a command")
    return Command(rid, req)
