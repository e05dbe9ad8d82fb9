"""The client-facing gRPC server: channel options and service registration.

``client_server_options`` gives a ``grpc.aio.server`` the settings etcd's clients expect. The
limits are etcd's own: ``DefaultMaxRequestBytes`` and the keepalive defaults in
https://github.com/etcd-io/etcd/blob/main/server/embed/config.go, ``grpcOverheadBytes`` and
``maxSendBytes`` in https://github.com/etcd-io/etcd/blob/main/server/etcdserver/api/v3rpc/grpc.go:

* the receive limit is ``max_request_bytes`` plus 512 KiB, as etcd's; a larger message fails in
  gRPC (RESOURCE_EXHAUSTED), a smaller one that is still over ``max_request_bytes`` gets
  etcd's "etcdserver: request is too large" from the KV service;
* the send limit is unlimited (etcd: math.MaxInt32), so large ranges go out;
* the keepalive ping policy is etcd's, not gRPC core's 5-minute default: etcd clients ping
  every 10 s at most, and under the default policy an idle watch would be cut off with
  GOAWAY "too_many_pings";
* SO_REUSEPORT is off, so a second member on the same port fails loudly instead of sharing it.

Every method is registered through ``raftkv.server.decoding.guard``, so a request that cannot be
decoded gets etcd's INTERNAL status instead of gRPC Python's UNKNOWN. Given an ``RpcStats``,
every method is also counted (``raftkv.server.rpc_stats``) for etcd's grpc_server_* metrics.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import grpc

from raftkv.pb.etcdserverpb import rpc_pb2_grpc
from raftkv.pb.health import health_pb2_grpc
from raftkv.server.api import NodeApi
from raftkv.server.cluster_service import ClusterService
from raftkv.server.decoding import guard
from raftkv.server.health_service import HealthService
from raftkv.server.kv_service import (
    DEFAULT_MAX_REQUEST_BYTES,
    DEFAULT_REQUEST_TIMEOUT_S,
    KVService,
)
from raftkv.server.lease_service import LeaseService
from raftkv.server.maintenance_service import MaintenanceService
from raftkv.server.rpc_stats import RpcStats, counted
from raftkv.server.watch_service import add_watch_service

__all__ = ["GRPC_OVERHEAD_BYTES", "add_client_services", "client_server_options"]

GRPC_OVERHEAD_BYTES = 512 * 1024
"""etcd's grpcOverheadBytes: the gRPC receive limit is max-request-bytes plus this."""

_MAX_INT32 = 2**31 - 1


def client_server_options(max_request_bytes: int) -> list[tuple[str, Any]]:
    return [
        ("grpc.max_receive_message_length", max_request_bytes + GRPC_OVERHEAD_BYTES),
        ("grpc.max_send_message_length", _MAX_INT32),
        # etcd's --grpc-keepalive-min-time (5 s): pings this often are welcome, with or
        # without calls in flight, and never count as strikes.
        ("grpc.http2.min_ping_interval_without_data_ms", 5000),
        ("grpc.http2.max_ping_strikes", 0),
        ("grpc.keepalive_permit_without_calls", 1),
        # etcd's --grpc-keepalive-interval (2 h) and --grpc-keepalive-timeout (20 s).
        ("grpc.keepalive_time_ms", 2 * 60 * 60 * 1000),
        ("grpc.keepalive_timeout_ms", 20 * 1000),
        ("grpc.so_reuseport", 0),
    ]


_T = TypeVar("_T")


class _GuardingRegistrar:
    """Stands in for the server in a generated ``add_*Servicer_to_server`` function, which hands
    its method table to both calls below: the table is registered once, every handler guarded."""

    def __init__(self, server: grpc.aio.Server, stats: RpcStats | None) -> None:
        self._server = server
        self._stats = stats
        self.services: list[str] = []

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        pass  # the same methods come again, as a table, to add_registered_method_handlers

    def add_registered_method_handlers(
        self, service: str, handlers: Mapping[str, grpc.RpcMethodHandler[Any, Any]]
    ) -> None:
        guarded = {name: guard(h) for name, h in handlers.items()}
        if self._stats is not None:
            stats = self._stats
            guarded = {name: counted(h, stats, service, name) for name, h in guarded.items()}
        generic = grpc.method_handlers_generic_handler(service, guarded)
        self._server.add_generic_rpc_handlers((generic,))
        self._server.add_registered_method_handlers(service, guarded)
        self.services.append(service)


def _add_guarded(
    server: grpc.aio.Server,
    add: Callable[[_T, Any], None],
    servicer: _T,
    stats: RpcStats | None = None,
) -> None:
    registrar = _GuardingRegistrar(server, stats)
    add(servicer, registrar)
    if not registrar.services:  # a generator that no longer passes its table: fail loudly
        raise RuntimeError(f"{add.__name__} registered no method table")


def add_client_services(
    server: grpc.aio.Server,
    node: NodeApi,
    *,
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S,
    health_poll_interval_s: float = 0.2,
    watch_progress_notify_interval_s: float = 600.0,
    rpc_stats: RpcStats | None = None,
) -> None:
    """Register etcd's KV, Lease, Maintenance, Cluster and Watch services and gRPC health for
    ``node``; with ``rpc_stats``, every call of every method is counted there."""
    _add_guarded(
        server,
        rpc_pb2_grpc.add_KVServicer_to_server,
        KVService(node, max_request_bytes=max_request_bytes, request_timeout_s=request_timeout_s),
        rpc_stats,
    )
    _add_guarded(
        server,
        rpc_pb2_grpc.add_LeaseServicer_to_server,
        LeaseService(node, request_timeout_s=request_timeout_s),
    )
    _add_guarded(
        server,
        rpc_pb2_grpc.add_MaintenanceServicer_to_server,
        MaintenanceService(node, request_timeout_s=request_timeout_s),
        rpc_stats,
    )
    _add_guarded(
        server,
        rpc_pb2_grpc.add_ClusterServicer_to_server,
        ClusterService(node, request_timeout_s=request_timeout_s),
        rpc_stats,
    )
    _add_guarded(
        server,
        health_pb2_grpc.add_HealthServicer_to_server,
        HealthService(node, watch_poll_interval_s=health_poll_interval_s),
        rpc_stats,
    )
    add_watch_service(
        server,
        node,
        rpc_stats=rpc_stats,
        progress_notify_interval_s=watch_progress_notify_interval_s,
    )
