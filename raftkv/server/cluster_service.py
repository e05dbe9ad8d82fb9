"""etcd's ``etcdserverpb.Cluster`` service: MemberList now; membership changes come later.

MemberList answers from the node's view of the membership, with a header that carries no
revision (etcd's membership calls do not read the KV store). ``linearizable=true`` (etcd 3.5)
first waits for a linearizable barrier. MemberAdd, MemberRemove, MemberUpdate and
MemberPromote answer UNIMPLEMENTED until raftkv supports configuration changes.
"""

from __future__ import annotations

import asyncio

import grpc

from raftkv.pb.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from raftkv.server.api import Member, NodeApi
from raftkv.server.kv_service import DEFAULT_REQUEST_TIMEOUT_S, GRACE_S, call_timeout_s
from raftkv.server.status import Context, unary_rpc

__all__ = ["ClusterService", "member_to_pb"]

_MEMBERSHIP_UNSUPPORTED = (
    "etcdserverpb.Cluster/{} is not supported by raftkv yet: membership is fixed by "
    "--initial-cluster"
)


def member_to_pb(m: Member) -> rpc_pb2.Member:
    return rpc_pb2.Member(
        ID=m.id,
        name=m.name,
        peerURLs=m.peer_urls,
        clientURLs=m.client_urls,
        isLearner=m.is_learner,
    )


class ClusterService(rpc_pb2_grpc.ClusterServicer):
    def __init__(self, node: NodeApi, *, request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S):
        self._node = node
        self._request_timeout_s = request_timeout_s

    def _header(self) -> rpc_pb2.ResponseHeader:
        node = self._node
        return rpc_pb2.ResponseHeader(
            cluster_id=node.cluster_id, member_id=node.member_id, raft_term=node.raft_term
        )

    @unary_rpc
    async def MemberList(  # noqa: N802 (the generated servicer's name)
        self, request: rpc_pb2.MemberListRequest, context: Context
    ) -> rpc_pb2.MemberListResponse:
        if request.linearizable:
            timeout_s = call_timeout_s(context, self._request_timeout_s)
            async with asyncio.timeout(timeout_s + GRACE_S):
                await self._node.linearizable_barrier(timeout_s=timeout_s)
        return rpc_pb2.MemberListResponse(
            header=self._header(),
            members=[member_to_pb(m) for m in self._node.members()],
        )

    async def MemberAdd(  # noqa: N802 (the generated servicer's name)
        self, request: rpc_pb2.MemberAddRequest, context: Context
    ) -> rpc_pb2.MemberAddResponse:
        await context.abort(
            grpc.StatusCode.UNIMPLEMENTED, _MEMBERSHIP_UNSUPPORTED.format("MemberAdd")
        )

    async def MemberRemove(  # noqa: N802 (the generated servicer's name)
        self, request: rpc_pb2.MemberRemoveRequest, context: Context
    ) -> rpc_pb2.MemberRemoveResponse:
        await context.abort(
            grpc.StatusCode.UNIMPLEMENTED, _MEMBERSHIP_UNSUPPORTED.format("MemberRemove")
        )

    async def MemberUpdate(  # noqa: N802 (the generated servicer's name)
        self, request: rpc_pb2.MemberUpdateRequest, context: Context
    ) -> rpc_pb2.MemberUpdateResponse:
        await context.abort(
            grpc.StatusCode.UNIMPLEMENTED, _MEMBERSHIP_UNSUPPORTED.format("MemberUpdate")
        )

    async def MemberPromote(  # noqa: N802 (the generated servicer's name)
        self, request: rpc_pb2.MemberPromoteRequest, context: Context
    ) -> rpc_pb2.MemberPromoteResponse:
        await context.abort(
            grpc.StatusCode.UNIMPLEMENTED, _MEMBERSHIP_UNSUPPORTED.format("MemberPromote")
        )
