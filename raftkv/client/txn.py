"""A readable transaction builder: ``Txn().when(...).then(...).otherwise(...)``.

Comparisons read like Python: ``value(b"k") == b"v"``, ``version(b"k") > 0``,
``mod_revision(b"k") < 10``, ``create_revision(b"k") == 0`` (the key does not exist),
``lease(b"k") != 0``. Operations are ``put``, ``get``, ``delete`` and a nested ``Txn``::

    txn = (
        Txn()
        .when(version(b"lock") == 0)
        .then(put(b"lock", b"me"))
        .otherwise(get(b"lock"))
    )
    result = client.txn(txn)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeAlias

from raftkv.pb.etcdserverpb import rpc_pb2

__all__ = [
    "Compare",
    "Op",
    "Txn",
    "create_revision",
    "delete",
    "get",
    "lease",
    "mod_revision",
    "prefix_end",
    "put",
    "value",
    "version",
]


def prefix_end(prefix: bytes) -> bytes:
    """The range_end that selects every key starting with ``prefix``."""
    end = bytearray(prefix)
    while end:
        if end[-1] < 0xFF:
            end[-1] += 1
            return bytes(end)
        end.pop()
    return b"\0"


def _b(x: bytes | str) -> bytes:
    return x.encode() if isinstance(x, str) else x


_R = rpc_pb2.Compare
_TARGET_FIELD: dict[int, str] = {
    _R.VERSION: "version",
    _R.CREATE: "create_revision",
    _R.MOD: "mod_revision",
    _R.VALUE: "value",
    _R.LEASE: "lease",
}


@dataclass(frozen=True)
class Compare:
    """One comparison; build it with the target functions and a comparison operator."""

    target: int
    key: bytes
    range_end: bytes = b""
    result: int = _R.EQUAL
    operand: int | bytes = 0

    def _with(self, result: int, other: object) -> Compare:
        if not isinstance(other, (int, bytes, str)):
            raise TypeError(f"cannot compare with {type(other).__name__}")
        operand = _b(other) if isinstance(other, (bytes, str)) else other
        return Compare(self.target, self.key, self.range_end, result, operand)

    def __eq__(self, other: object) -> Compare:  # type: ignore[override]
        return self._with(_R.EQUAL, other)

    def __ne__(self, other: object) -> Compare:  # type: ignore[override]
        return self._with(_R.NOT_EQUAL, other)

    def __gt__(self, other: object) -> Compare:
        return self._with(_R.GREATER, other)

    def __lt__(self, other: object) -> Compare:
        return self._with(_R.LESS, other)

    __hash__ = None  # type: ignore[assignment]

    def to_pb(self) -> rpc_pb2.Compare:
        m = rpc_pb2.Compare(result=self.result, target=self.target, key=self.key)  # type: ignore[arg-type]
        if self.range_end:
            m.range_end = self.range_end
        setattr(m, _TARGET_FIELD[self.target], self.operand)
        return m


def _target(t: int, key: bytes | str, range_end: bytes | str | None, prefix: bool) -> Compare:
    k = _b(key)
    end = prefix_end(k) if prefix else _b(range_end or b"")
    return Compare(t, k, end)


def version(
    key: bytes | str, range_end: bytes | str | None = None, *, prefix: bool = False
) -> Compare:
    return _target(_R.VERSION, key, range_end, prefix)


def create_revision(
    key: bytes | str, range_end: bytes | str | None = None, *, prefix: bool = False
) -> Compare:
    return _target(_R.CREATE, key, range_end, prefix)


def mod_revision(
    key: bytes | str, range_end: bytes | str | None = None, *, prefix: bool = False
) -> Compare:
    return _target(_R.MOD, key, range_end, prefix)


def value(
    key: bytes | str, range_end: bytes | str | None = None, *, prefix: bool = False
) -> Compare:
    return _target(_R.VALUE, key, range_end, prefix)


def lease(
    key: bytes | str, range_end: bytes | str | None = None, *, prefix: bool = False
) -> Compare:
    return _target(_R.LEASE, key, range_end, prefix)


Op: TypeAlias = "rpc_pb2.RangeRequest | rpc_pb2.PutRequest | rpc_pb2.DeleteRangeRequest | Txn"


def put(
    key: bytes | str, val: bytes | str, *, lease: int = 0, prev_kv: bool = False
) -> rpc_pb2.PutRequest:
    return rpc_pb2.PutRequest(key=_b(key), value=_b(val), lease=lease, prev_kv=prev_kv)


def get(
    key: bytes | str,
    range_end: bytes | str | None = None,
    *,
    prefix: bool = False,
    limit: int = 0,
    revision: int = 0,
    keys_only: bool = False,
    count_only: bool = False,
) -> rpc_pb2.RangeRequest:
    k = _b(key)
    end = prefix_end(k) if prefix else _b(range_end or b"")
    return rpc_pb2.RangeRequest(
        key=k, range_end=end, limit=limit, revision=revision, keys_only=keys_only,
        count_only=count_only,
    )  # fmt: skip


def delete(
    key: bytes | str, range_end: bytes | str | None = None, *, prefix: bool = False,
    prev_kv: bool = False,
) -> rpc_pb2.DeleteRangeRequest:  # fmt: skip
    k = _b(key)
    end = prefix_end(k) if prefix else _b(range_end or b"")
    return rpc_pb2.DeleteRangeRequest(key=k, range_end=end, prev_kv=prev_kv)


@dataclass
class Txn:
    """compare -> then -> else. All comparisons must hold for ``then`` to run."""

    compares: list[Compare] = field(default_factory=list)
    success: list[Op] = field(default_factory=list)
    failure: list[Op] = field(default_factory=list)

    def when(self, *compares: Compare) -> Txn:
        self.compares.extend(compares)
        return self

    def then(self, *ops: Op) -> Txn:
        self.success.extend(ops)
        return self

    def otherwise(self, *ops: Op) -> Txn:
        self.failure.extend(ops)
        return self

    # etcd-style aliases
    if_ = when
    else_ = otherwise

    def to_pb(self) -> rpc_pb2.TxnRequest:
        return rpc_pb2.TxnRequest(
            compare=[c.to_pb() for c in self.compares],
            success=[_op_pb(op) for op in self.success],
            failure=[_op_pb(op) for op in self.failure],
        )


def _op_pb(op: Op) -> rpc_pb2.RequestOp:
    if isinstance(op, rpc_pb2.RangeRequest):
        return rpc_pb2.RequestOp(request_range=op)
    if isinstance(op, rpc_pb2.PutRequest):
        return rpc_pb2.RequestOp(request_put=op)
    if isinstance(op, rpc_pb2.DeleteRangeRequest):
        return rpc_pb2.RequestOp(request_delete_range=op)
    return rpc_pb2.RequestOp(request_txn=op.to_pb())
