"""etcd's protobuf messages <-> the pure ``raftkv.kv.types`` values, field by field.

Requests come in (``*_from_pb``), responses go out (``*_to_pb``). Conversion never validates
more than the wire forces it to: a sort option that has no ``raftkv.kv.types`` member fails
here with etcd's error, a compare's unnamed result or target becomes ``OTHER`` (etcd evaluates
those), and everything else is left to ``raftkv.kv.keys.validate_request``.

Headers: a top-level response carries the full header (cluster_id, member_id, revision,
raft_term), built by the caller. Inside a txn, etcd gives each Range, Put and DeleteRange
response a header with only the revision, and a nested txn's response an empty header; so do
we.
"""

from __future__ import annotations

from collections.abc import Sequence

from google.protobuf.internal.containers import RepeatedCompositeFieldContainer

from raftkv.kv.errors import InvalidSortOptionError, KeyNotFoundError
from raftkv.kv.types import (
    CompactionRequest,
    Compare,
    CompareResult,
    CompareTarget,
    DeleteRangeRequest,
    DeleteRangeResponse,
    KeyValue,
    PutRequest,
    PutResponse,
    RangeRequest,
    RangeResponse,
    RequestOp,
    ResponseOp,
    SortOrder,
    SortTarget,
    TxnRequest,
    TxnResponse,
)
from raftkv.pb.etcdserverpb import rpc_pb2
from raftkv.pb.mvccpb import kv_pb2

__all__ = [
    "compaction_request_from_pb",
    "compare_from_pb",
    "delete_range_request_from_pb",
    "delete_range_response_to_pb",
    "header",
    "kv_to_pb",
    "put_request_from_pb",
    "put_response_to_pb",
    "range_request_from_pb",
    "range_response_to_pb",
    "request_op_from_pb",
    "txn_request_from_pb",
    "txn_response_to_pb",
]

_SORT_ORDERS = tuple(SortOrder)
_SORT_TARGETS = tuple(SortTarget)
_COMPARE_RESULTS = {int(r): r for r in CompareResult if r is not CompareResult.OTHER}
_COMPARE_TARGETS = {int(t): t for t in CompareTarget if t is not CompareTarget.OTHER}


# -- requests -----------------------------------------------------------------------------------


def range_request_from_pb(m: rpc_pb2.RangeRequest) -> RangeRequest:
    order, target = m.sort_order, m.sort_target
    if not (0 <= order < len(_SORT_ORDERS) and 0 <= target < len(_SORT_TARGETS)):
        raise InvalidSortOptionError()
    return RangeRequest(
        m.key,
        m.range_end,
        m.limit,
        m.revision,
        _SORT_ORDERS[order],
        _SORT_TARGETS[target],
        m.serializable,
        m.keys_only,
        m.count_only,
        m.min_mod_revision,
        m.max_mod_revision,
        m.min_create_revision,
        m.max_create_revision,
    )


def put_request_from_pb(m: rpc_pb2.PutRequest) -> PutRequest:
    return PutRequest(m.key, m.value, m.lease, m.prev_kv, m.ignore_value, m.ignore_lease)


def delete_range_request_from_pb(m: rpc_pb2.DeleteRangeRequest) -> DeleteRangeRequest:
    return DeleteRangeRequest(m.key, m.range_end, m.prev_kv)


def compaction_request_from_pb(m: rpc_pb2.CompactionRequest) -> CompactionRequest:
    return CompactionRequest(m.revision, m.physical)


def compare_from_pb(m: rpc_pb2.Compare) -> Compare:
    result = _COMPARE_RESULTS.get(m.result, CompareResult.OTHER)
    target = _COMPARE_TARGETS.get(m.target, CompareTarget.OTHER)
    if target is CompareTarget.OTHER:
        # Nothing is compared: drop the operand, so equal compares encode equally.
        return Compare(result, target, m.key, range_end=m.range_end)
    # Unset members of the target_union oneof read as their zero value, which is what etcd
    # compares against when the union does not match the target.
    return Compare(
        result,
        target,
        m.key,
        m.version,
        m.create_revision,
        m.mod_revision,
        m.value,
        m.lease,
        m.range_end,
    )


def request_op_from_pb(m: rpc_pb2.RequestOp) -> RequestOp:
    which = m.WhichOneof("request")
    if which == "request_range":
        return range_request_from_pb(m.request_range)
    if which == "request_put":
        return put_request_from_pb(m.request_put)
    if which == "request_delete_range":
        return delete_range_request_from_pb(m.request_delete_range)
    if which == "request_txn":
        return txn_request_from_pb(m.request_txn)
    raise KeyNotFoundError()  # an empty op: etcd's checkRequestOp answers "key not found"


def txn_request_from_pb(m: rpc_pb2.TxnRequest) -> TxnRequest:
    return TxnRequest(
        tuple(compare_from_pb(c) for c in m.compare),
        tuple(request_op_from_pb(op) for op in m.success),
        tuple(request_op_from_pb(op) for op in m.failure),
    )


# -- responses ----------------------------------------------------------------------------------


def header(
    cluster_id: int, member_id: int, revision: int, raft_term: int
) -> rpc_pb2.ResponseHeader:
    return rpc_pb2.ResponseHeader(
        cluster_id=cluster_id, member_id=member_id, revision=revision, raft_term=raft_term
    )


def kv_to_pb(kv: KeyValue) -> kv_pb2.KeyValue:
    return kv_pb2.KeyValue(
        key=kv.key,
        create_revision=kv.create_revision,
        mod_revision=kv.mod_revision,
        version=kv.version,
        value=kv.value,
        lease=kv.lease,
    )


def _add_kvs(
    field: RepeatedCompositeFieldContainer[kv_pb2.KeyValue], kvs: Sequence[KeyValue]
) -> None:
    """Append to a repeated KeyValue field; attribute stores are about twice as fast as keyword
    construction, and zero fields (a keys-only value, no lease) are skipped."""
    add = field.add
    for kv in kvs:
        m = add()
        m.key = kv.key
        m.create_revision = kv.create_revision
        m.mod_revision = kv.mod_revision
        m.version = kv.version
        if kv.value:
            m.value = kv.value
        if kv.lease:
            m.lease = kv.lease


def range_response_to_pb(r: RangeResponse, hdr: rpc_pb2.ResponseHeader) -> rpc_pb2.RangeResponse:
    out = rpc_pb2.RangeResponse(header=hdr, more=r.more, count=r.count)
    _add_kvs(out.kvs, r.kvs)
    return out


def put_response_to_pb(r: PutResponse, hdr: rpc_pb2.ResponseHeader) -> rpc_pb2.PutResponse:
    if r.prev_kv is None:
        return rpc_pb2.PutResponse(header=hdr)
    return rpc_pb2.PutResponse(header=hdr, prev_kv=kv_to_pb(r.prev_kv))


def delete_range_response_to_pb(
    r: DeleteRangeResponse, hdr: rpc_pb2.ResponseHeader
) -> rpc_pb2.DeleteRangeResponse:
    out = rpc_pb2.DeleteRangeResponse(header=hdr, deleted=r.deleted)
    _add_kvs(out.prev_kvs, r.prev_kvs)
    return out


def _fill_response_op(out: rpc_pb2.ResponseOp, r: ResponseOp) -> None:
    if isinstance(r, RangeResponse):
        hdr = rpc_pb2.ResponseHeader(revision=r.revision)
        out.response_range.CopyFrom(range_response_to_pb(r, hdr))
    elif isinstance(r, PutResponse):
        hdr = rpc_pb2.ResponseHeader(revision=r.revision)
        out.response_put.CopyFrom(put_response_to_pb(r, hdr))
    elif isinstance(r, DeleteRangeResponse):
        hdr = rpc_pb2.ResponseHeader(revision=r.revision)
        out.response_delete_range.CopyFrom(delete_range_response_to_pb(r, hdr))
    else:
        # etcd leaves a nested txn's header empty (present, with no fields set).
        _fill_txn_response(out.response_txn, r, rpc_pb2.ResponseHeader())


def _fill_txn_response(
    out: rpc_pb2.TxnResponse, r: TxnResponse, hdr: rpc_pb2.ResponseHeader
) -> None:
    # Built in place: passing a message to a constructor copies it through upb's decoder,
    # which refuses more than 100 levels (a txn nested 50 deep), and etcd allows 129.
    out.header.CopyFrom(hdr)
    out.succeeded = r.succeeded
    for op in r.responses:
        _fill_response_op(out.responses.add(), op)


def txn_response_to_pb(r: TxnResponse, hdr: rpc_pb2.ResponseHeader) -> rpc_pb2.TxnResponse:
    out = rpc_pb2.TxnResponse()
    _fill_txn_response(out, r, hdr)
    return out
