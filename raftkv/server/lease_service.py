"""etcd's ``etcdserverpb.Lease`` service over a :class:`~raftkv.server.api.NodeApi`.

* LeaseGrant and LeaseRevoke are log entries (``node.propose``). A grant that names no id gets
  one from the receiving member (``node.new_lease_id``, etcd's id generator); its TTL is raised
  to the cluster's minimum (1.5 election timeouts, rounded up) before proposing. etcd raises it
  at apply: the same thing while members share their election timeout.
* LeaseKeepAlive and LeaseTimeToLive need the leader's lease clocks (``raftkv.driver.lessor``):
  the leader answers them itself, a follower sends them on to the leader's client URL
  (``raftkv.server.lease_proxy``). Until a new leader's lessor is primary, and while no leader is
  known, they are tried again until the call's deadline, as etcd retries its forwards.
* A keep-alive of an unknown or expired lease answers TTL 0, TimeToLive of an unknown lease
  TTL -1: neither is an error (etcd's v3rpc). The keep-alive's header is filled before the
  renewal, as etcd's.
* LeaseLeases lists the member's own lease table, by id (etcd answers it locally too; its order
  is by expiry, which only the leader knows).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

import grpc
from grpc import aio

from raftkv.errors import InternalError
from raftkv.kv.errors import KVError
from raftkv.kv.leases import attached_keys, lease_ttl, leases_in
from raftkv.kv.types import (
    LeaseGrantRequest,
    LeaseGrantResponse,
    LeaseRevokeRequest,
    LeaseRevokeResponse,
    Request,
    Response,
)
from raftkv.pb.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from raftkv.server import convert
from raftkv.server.api import NodeApi
from raftkv.server.decoding import RefusedRequest
from raftkv.server.errors import LeaderChangedError, NoLeaderError, NotLeaderError
from raftkv.server.kv_service import DEFAULT_REQUEST_TIMEOUT_S, GRACE_S, call_timeout_s
from raftkv.server.lease_proxy import FORWARDED_KEY, LeaderProxy
from raftkv.server.status import Context, abort, unary_rpc

__all__ = ["LeaseService"]

_RETRY_S = 0.05
"""Pause before trying the leader again (no leader known, or its lessor not primary yet)."""
_RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.FAILED_PRECONDITION)

_R = TypeVar("_R", LeaseGrantResponse, LeaseRevokeResponse)
_T = TypeVar("_T")


class LeaseService(rpc_pb2_grpc.LeaseServicer):
    def __init__(
        self,
        node: NodeApi,
        *,
        request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S,
        proxy: LeaderProxy | None = None,
    ) -> None:
        self._node = node
        self._request_timeout_s = request_timeout_s
        self._proxy = proxy or LeaderProxy()

    def _header(self, revision: int | None = None) -> rpc_pb2.ResponseHeader:
        node = self._node
        rev = node.store.current_revision() if revision is None else revision
        return convert.header(node.cluster_id, node.member_id, rev, node.raft_term)

    async def _propose(self, request: Request, kind: type[_R], context: Context) -> _R:
        timeout_s = call_timeout_s(context, self._request_timeout_s)
        async with asyncio.timeout(timeout_s + GRACE_S):
            resp: Response = await self._node.propose(request, timeout_s=timeout_s)
        if not isinstance(resp, kind):
            raise InternalError(f"{type(request).__name__} answered with {type(resp).__name__}")
        return resp

    async def _on_leader(
        self,
        context: Context,
        local: Callable[[float], Awaitable[_T]],
        remote: Callable[[str, float], Awaitable[_T]],
    ) -> _T:
        """Run ``local`` if this member leads, else ``remote`` with the leader's client URL,
        trying again until the call's deadline while there is no primary lessor to ask."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + call_timeout_s(context, self._request_timeout_s)
        forwarded = any(k == FORWARDED_KEY for k, _ in context.invocation_metadata() or ())
        error: KVError = NoLeaderError()
        while (left := deadline - loop.time()) > 0:
            leader = self._node.status().leader
            try:
                if leader == self._node.member_id:
                    return await local(left)
                url = self._client_url(leader)
                if forwarded:
                    error = NotLeaderError()  # the sender tries again; never sent on twice
                elif url is not None:
                    return await remote(url, left)
            except (NotLeaderError, LeaderChangedError) as exc:
                error = exc
            except aio.AioRpcError as exc:
                if exc.code() not in _RETRYABLE:
                    await context.abort(exc.code(), exc.details() or "")
                error = NoLeaderError()
            await asyncio.sleep(min(_RETRY_S, max(0.0, left)))
        raise error

    def _client_url(self, member_id: int) -> str | None:
        for member in self._node.members():
            if member.id == member_id and member.client_urls:
                return member.client_urls[0]
        return None

    # -- the RPCs -------------------------------------------------------------------------------

    @unary_rpc
    async def LeaseGrant(  # noqa: N802 (the generated servicer's name)
        self, request: rpc_pb2.LeaseGrantRequest, context: Context
    ) -> rpc_pb2.LeaseGrantResponse:
        node = self._node
        lease_id = request.ID or node.new_lease_id()
        req = LeaseGrantRequest(lease_id, max(request.TTL, node.min_lease_ttl_s))
        resp = await self._propose(req, LeaseGrantResponse, context)
        return rpc_pb2.LeaseGrantResponse(
            header=self._header(resp.revision), ID=resp.id, TTL=resp.ttl
        )

    @unary_rpc
    async def LeaseRevoke(  # noqa: N802 (the generated servicer's name)
        self, request: rpc_pb2.LeaseRevokeRequest, context: Context
    ) -> rpc_pb2.LeaseRevokeResponse:
        resp = await self._propose(LeaseRevokeRequest(request.ID), LeaseRevokeResponse, context)
        return rpc_pb2.LeaseRevokeResponse(header=self._header(resp.revision))

    async def LeaseKeepAlive(  # noqa: N802 (the generated servicer's name)
        self, request_iterator: AsyncIterator[rpc_pb2.LeaseKeepAliveRequest], context: Context
    ) -> AsyncIterator[rpc_pb2.LeaseKeepAliveResponse]:
        try:
            async for request in request_iterator:
                header = self._header()  # before the renewal, as etcd's
                ttl = await self._keep_alive(request.ID, context)
                yield rpc_pb2.LeaseKeepAliveResponse(header=header, ID=request.ID, TTL=ttl)
        except RefusedRequest as exc:  # etcd ends the stream with grpc-go's decoding error
            await context.abort(exc.refused.code, exc.refused.details)
        except aio.AbortError:
            raise
        except Exception as exc:
            await abort(context, exc)

    async def _keep_alive(self, lease_id: int, context: Context) -> int:
        async def local(left: float) -> int:
            return await self._node.lease_keep_alive(lease_id, timeout_s=left)

        async def remote(url: str, left: float) -> int:
            return (await self._proxy.keep_alive(url, lease_id, left)).TTL

        return await self._on_leader(context, local, remote)

    @unary_rpc
    async def LeaseTimeToLive(  # noqa: N802 (the generated servicer's name)
        self, request: rpc_pb2.LeaseTimeToLiveRequest, context: Context
    ) -> rpc_pb2.LeaseTimeToLiveResponse:
        async def local(left: float) -> rpc_pb2.LeaseTimeToLiveResponse:
            ttl = await self._node.lease_time_to_live(request.ID, timeout_s=left)
            return self._time_to_live(request, ttl)

        async def remote(url: str, left: float) -> rpc_pb2.LeaseTimeToLiveResponse:
            resp = await self._proxy.time_to_live(url, request, left)
            resp.header.CopyFrom(self._header(resp.header.revision))
            return resp

        return await self._on_leader(context, local, remote)

    def _time_to_live(
        self, request: rpc_pb2.LeaseTimeToLiveRequest, ttl: int
    ) -> rpc_pb2.LeaseTimeToLiveResponse:
        store = self._node.store
        with store.backend.read() as txn:
            revision = store.current_revision_in(txn)
            granted = lease_ttl(txn, request.ID)
            keys = attached_keys(txn, request.ID) if request.keys and granted else []
        header = self._header(revision)
        if ttl < 0 or granted is None:
            return rpc_pb2.LeaseTimeToLiveResponse(header=header, ID=request.ID, TTL=-1)
        return rpc_pb2.LeaseTimeToLiveResponse(
            header=header, ID=request.ID, TTL=ttl, grantedTTL=granted, keys=keys
        )

    @unary_rpc
    async def LeaseLeases(  # noqa: N802 (the generated servicer's name)
        self, request: rpc_pb2.LeaseLeasesRequest, context: Context
    ) -> rpc_pb2.LeaseLeasesResponse:
        store = self._node.store
        with store.backend.read() as txn:
            revision = store.current_revision_in(txn)
            leases = [rpc_pb2.LeaseStatus(ID=lease) for lease, _ in leases_in(txn)]
        return rpc_pb2.LeaseLeasesResponse(header=self._header(revision), leases=leases)
