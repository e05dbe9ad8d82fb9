"""etcd's ``etcdserverpb.KV`` service over a :class:`~raftkv.server.api.NodeApi`.

Thin (docs/decisions.md §3): convert the request, run etcd's input checks, then

* Range: a serializable read is served from the local store; a linearizable one first awaits
  ``node.linearizable_barrier`` (one ReadIndex round shared by concurrent readers).
* Txn: a txn whose every op is a Range is a read (etcd's isTxnReadonly): served like Range,
  never proposed. Any other txn is proposed.
* Put, DeleteRange, Compact and writing txns: ``node.propose`` (the node forwards to the leader).

Every limit is enforced before proposing, so bad input costs no log entry. Every call has a
deadline: the client's (``context.time_remaining()``) capped by ``request_timeout_s`` (etcd:
5 s + 2 x election timeout), and a local timer backs the node's own deadline, so no call can
hang. Errors go through the one table in ``raftkv.server.status``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TypeVar

import grpc
from google.protobuf.message import Message

from raftkv.errors import InternalError
from raftkv.kv.backend import ReadTxn
from raftkv.kv.compare import evaluate_compare
from raftkv.kv.keys import validate_request
from raftkv.kv.mvcc import MVCCStore, range_in
from raftkv.kv.types import (
    CompactionResponse,
    DeleteRangeResponse,
    PutResponse,
    RangeRequest,
    Request,
    Response,
    ResponseOp,
    TxnRequest,
    TxnResponse,
)
from raftkv.pb.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from raftkv.server import convert
from raftkv.server.api import NodeApi
from raftkv.server.errors import RequestTooLargeError
from raftkv.server.status import Context, unary_rpc

__all__ = [
    "DEFAULT_MAX_REQUEST_BYTES",
    "DEFAULT_REQUEST_TIMEOUT_S",
    "KVService",
    "call_timeout_s",
]

DEFAULT_MAX_REQUEST_BYTES = 1536 * 1024
"""etcd's --max-request-bytes default: 1.5 MiB."""

DEFAULT_REQUEST_TIMEOUT_S = 7.0
"""etcd's request timeout at default settings: 5 s + 2 x the 1 s election timeout."""

GRACE_S = 0.25
"""How long past its own deadline the node may take to answer before the servicer gives up."""

_ENVELOPE_BYTES = 13
"""etcd measures the InternalRaftRequest it proposes, not the client's message: a
RequestHeader{ID} (about 13 bytes) plus the request's field tag and length. Matching that puts
the limit where etcd's is (a put of 1.5 MiB - 10 bytes of value is already too large)."""

_R = TypeVar("_R", PutResponse, DeleteRangeResponse, TxnResponse, CompactionResponse)


def call_timeout_s(context: Context, request_timeout_s: float) -> float:
    """The time this call may take: the client's deadline, capped by the server's timeout."""
    remaining: float | None = context.time_remaining()
    if remaining is None:
        return request_timeout_s
    return max(0.0, min(remaining, request_timeout_s))


def _read_only(txn: TxnRequest) -> bool:
    return all(
        isinstance(op, RangeRequest) or (isinstance(op, TxnRequest) and _read_only(op))
        for op in (*txn.success, *txn.failure)
    )


def _serializable(txn: TxnRequest) -> bool:
    """Every read in the txn is serializable (etcd's isTxnSerializable): no barrier needed."""
    for op in (*txn.success, *txn.failure):
        if isinstance(op, RangeRequest):
            if not op.serializable:
                return False
        elif not (isinstance(op, TxnRequest) and _serializable(op)):
            return False
    return True


def _read_txn(txn: ReadTxn, req: TxnRequest, cur: int, compacted: int) -> TxnResponse:
    """Run a read-only txn in one read transaction, as the apply path would at revision cur."""
    ok = all(evaluate_compare(txn, c, cur) for c in req.compare)
    out: list[ResponseOp] = []
    for op in req.success if ok else req.failure:
        if isinstance(op, TxnRequest):
            out.append(_read_txn(txn, op, cur, compacted))
        elif isinstance(op, RangeRequest):
            out.append(range_in(txn, op, cur, cur, compacted))
        else:
            raise InternalError(f"write {type(op).__name__} in a read-only txn")
    return TxnResponse(cur, ok, tuple(out))


async def _unimplemented_stream(
    context: Context, details: str
) -> tuple[rpc_pb2.RangeStreamResponse, ...]:
    await context.abort(grpc.StatusCode.UNIMPLEMENTED, details)


class KVService(rpc_pb2_grpc.KVServicer):
    def __init__(
        self,
        node: NodeApi,
        *,
        max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
        request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S,
    ) -> None:
        self._node = node
        self._max_request_bytes = max_request_bytes
        self._request_timeout_s = request_timeout_s

    # -- helpers --------------------------------------------------------------------------------

    def _header(self, revision: int) -> rpc_pb2.ResponseHeader:
        node = self._node
        return convert.header(node.cluster_id, node.member_id, revision, node.raft_term)

    def _check_size(self, request: Message) -> None:
        n = request.ByteSize()
        if n + 1 + (max(n.bit_length(), 1) + 6) // 7 + _ENVELOPE_BYTES > self._max_request_bytes:
            raise RequestTooLargeError()

    async def _barrier(self, context: Context) -> None:
        timeout_s = call_timeout_s(context, self._request_timeout_s)
        async with asyncio.timeout(timeout_s + GRACE_S):
            await self._node.linearizable_barrier(timeout_s=timeout_s)

    async def _propose(self, request: Request, kind: type[_R], context: Context) -> _R:
        timeout_s = call_timeout_s(context, self._request_timeout_s)
        async with asyncio.timeout(timeout_s + GRACE_S):
            resp: Response = await self._node.propose(request, timeout_s=timeout_s)
        if not isinstance(resp, kind):
            raise InternalError(f"{type(request).__name__} answered with {type(resp).__name__}")
        return resp

    # -- the RPCs -------------------------------------------------------------------------------

    @unary_rpc
    async def Range(  # noqa: N802 (the generated servicer's name)
        self, request: rpc_pb2.RangeRequest, context: Context
    ) -> rpc_pb2.RangeResponse:
        req = convert.range_request_from_pb(request)
        validate_request(req)
        if not req.serializable:
            await self._barrier(context)
        resp = self._node.store.range(req)
        return convert.range_response_to_pb(resp, self._header(resp.revision))

    async def RangeStream(  # noqa: N802 (the generated servicer's name)
        self, request: rpc_pb2.RangeRequest, context: Context
    ) -> AsyncIterator[rpc_pb2.RangeStreamResponse]:
        for item in await _unimplemented_stream(
            context, "RangeStream is not implemented by raftkv"
        ):
            yield item

    @unary_rpc
    async def Put(  # noqa: N802 (the generated servicer's name)
        self, request: rpc_pb2.PutRequest, context: Context
    ) -> rpc_pb2.PutResponse:
        req = convert.put_request_from_pb(request)
        validate_request(req)
        self._check_size(request)
        resp = await self._propose(req, PutResponse, context)
        return convert.put_response_to_pb(resp, self._header(resp.revision))

    @unary_rpc
    async def DeleteRange(  # noqa: N802 (the generated servicer's name)
        self, request: rpc_pb2.DeleteRangeRequest, context: Context
    ) -> rpc_pb2.DeleteRangeResponse:
        req = convert.delete_range_request_from_pb(request)
        validate_request(req)
        self._check_size(request)
        resp = await self._propose(req, DeleteRangeResponse, context)
        return convert.delete_range_response_to_pb(resp, self._header(resp.revision))

    @unary_rpc
    async def Txn(  # noqa: N802 (the generated servicer's name)
        self, request: rpc_pb2.TxnRequest, context: Context
    ) -> rpc_pb2.TxnResponse:
        req = convert.txn_request_from_pb(request)
        validate_request(req)
        if _read_only(req):
            if not _serializable(req):
                await self._barrier(context)
            store = self._node.store
            with store.backend.read() as txn:
                cur = MVCCStore.current_revision_in(txn)
                compacted = MVCCStore.compacted_revision_in(txn)
                resp = _read_txn(txn, req, cur, compacted)
        else:
            self._check_size(request)
            resp = await self._propose(req, TxnResponse, context)
        return convert.txn_response_to_pb(resp, self._header(resp.revision))

    @unary_rpc
    async def Compact(  # noqa: N802 (the generated servicer's name)
        self, request: rpc_pb2.CompactionRequest, context: Context
    ) -> rpc_pb2.CompactionResponse:
        req = convert.compaction_request_from_pb(request)
        self._check_size(request)
        resp = await self._propose(req, CompactionResponse, context)
        return rpc_pb2.CompactionResponse(header=self._header(resp.revision))
