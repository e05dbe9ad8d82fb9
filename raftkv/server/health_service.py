"""The standard ``grpc.health.v1.Health`` service, as etcd registers it.

Only the server as a whole (service ``""``) is known, as in etcd; any other name is NOT_FOUND
("unknown service") for Check and SERVICE_UNKNOWN for Watch, as grpc-go's health server
answers. The server is SERVING while its node knows a leader and NOT_SERVING otherwise.
Watch sends the status at once and then every change of it until the client goes away.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc

from raftkv.pb.health import health_pb2, health_pb2_grpc
from raftkv.server.api import NodeApi
from raftkv.server.status import Context, stream_rpc, unary_rpc

__all__ = ["HealthService"]


class HealthService(health_pb2_grpc.HealthServicer):
    def __init__(self, node: NodeApi, *, watch_poll_interval_s: float = 0.2) -> None:
        self._node = node
        self._poll_s = watch_poll_interval_s

    def _status(self, service: str) -> health_pb2.HealthCheckResponse.ServingStatus.ValueType:
        if service:
            return health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
        if self._node.status().leader:
            return health_pb2.HealthCheckResponse.SERVING
        return health_pb2.HealthCheckResponse.NOT_SERVING

    @unary_rpc
    async def Check(  # noqa: N802 (the generated servicer's name)
        self, request: health_pb2.HealthCheckRequest, context: Context
    ) -> health_pb2.HealthCheckResponse:
        status = self._status(request.service)
        if status == health_pb2.HealthCheckResponse.SERVICE_UNKNOWN:
            await context.abort(grpc.StatusCode.NOT_FOUND, "unknown service")
        return health_pb2.HealthCheckResponse(status=status)

    @stream_rpc
    async def Watch(  # noqa: N802 (the generated servicer's name)
        self, request: health_pb2.HealthCheckRequest, context: Context
    ) -> AsyncIterator[health_pb2.HealthCheckResponse]:
        last = None
        while True:
            status = self._status(request.service)
            if status != last:
                yield health_pb2.HealthCheckResponse(status=status)
                last = status
            await asyncio.sleep(self._poll_s)
