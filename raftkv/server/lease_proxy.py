"""Keep-alives and TimeToLive sent on from a follower to the leader, over the client API.

Only the leader's lessor keeps lease clocks, so a follower cannot answer these two calls. etcd
forwards them over its peer HTTP endpoints (``/leases``, ``/leases/internal``); raftkv sends
them to the leader's advertised client URL, as a client would, with the same Lease service on
the other end: no new peer message, and the leader's answer is exactly the one a client gets
there. A forwarded call carries ``FORWARDED_KEY`` in its metadata, so the member that receives
it never sends it on again (two members that disagree about the leader cannot bounce a call
between them): it answers, or refuses with "not leader" and the follower tries again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import grpc

from raftkv.pb.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from raftkv.server.config import host_port

if TYPE_CHECKING:
    from raftkv.pb.etcdserverpb.rpc_pb2_grpc import LeaseAsyncStub

__all__ = ["FORWARDED_KEY", "LeaderProxy"]

FORWARDED_KEY = "raftkv-lease-forwarded"


class LeaderProxy:
    """One channel per leader client URL, opened on first use and kept."""

    def __init__(self) -> None:
        self._stubs: dict[str, LeaseAsyncStub] = {}
        self._channels: list[grpc.aio.Channel] = []

    def _stub(self, url: str) -> LeaseAsyncStub:
        stub = self._stubs.get(url)
        if stub is None:
            channel = grpc.aio.insecure_channel(host_port(url))
            self._channels.append(channel)
            stub = rpc_pb2_grpc.LeaseStub(channel)
            self._stubs[url] = stub
        return stub

    async def keep_alive(
        self, url: str, lease_id: int, timeout_s: float
    ) -> rpc_pb2.LeaseKeepAliveResponse:
        """One renewal on a stream of its own (etcd posts one HTTP request per renewal)."""
        call = self._stub(url).LeaseKeepAlive(timeout=timeout_s, metadata=((FORWARDED_KEY, "1"),))
        try:
            await call.write(rpc_pb2.LeaseKeepAliveRequest(ID=lease_id))
            await call.done_writing()
            response = await call.read()
        finally:
            call.cancel()
        if not isinstance(response, rpc_pb2.LeaseKeepAliveResponse):  # the stream ended
            raise grpc.aio.AioRpcError(
                grpc.StatusCode.UNAVAILABLE,
                grpc.aio.Metadata(),
                grpc.aio.Metadata(),
                "the leader ended the keep-alive stream without an answer",
            )
        return response

    async def time_to_live(
        self, url: str, request: rpc_pb2.LeaseTimeToLiveRequest, timeout_s: float
    ) -> rpc_pb2.LeaseTimeToLiveResponse:
        return await self._stub(url).LeaseTimeToLive(
            request, timeout=timeout_s, metadata=((FORWARDED_KEY, "1"),)
        )

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close()
        self._channels.clear()
        self._stubs.clear()
