"""Per-method gRPC call counts, kept as plain integers for ``/metrics``.

etcd exports go-grpc-prometheus' ``grpc_server_started_total`` and ``grpc_server_handled_total``
(labels: type, service, method, and the status code for handled), with every method and every
code present at zero from the start so that ``rate()`` has series before the first call.
:func:`counted` wraps a method handler so that each call adds one to two integers on the event
loop, with no lock and no Prometheus object on the call path; the HTTP side turns the numbers
into metric families when it is scraped (``raftkv.server.http.metrics``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

from raftkv.server.status import Context

__all__ = ["CODES", "MethodStats", "RpcStats", "counted"]

CODES: tuple[grpc.StatusCode, ...] = tuple(sorted(grpc.StatusCode, key=lambda c: c.value[0]))
"""Every gRPC status code, indexed by its number (OK is 0, UNAUTHENTICATED 16)."""

_CANCELLED = grpc.StatusCode.CANCELLED.value[0]
_UNKNOWN = grpc.StatusCode.UNKNOWN.value[0]


class MethodStats:
    __slots__ = ("handled", "kind", "method", "service", "started")

    def __init__(self, service: str, method: str, kind: str) -> None:
        self.service = service
        self.method = method
        self.kind = kind
        """go-grpc-prometheus' grpc_type: unary, client_stream, server_stream or bidi_stream."""
        self.started = 0
        self.handled = [0] * len(CODES)
        """Calls that ended, by status code number."""


class RpcStats:
    """The counters of one gRPC server; methods are added as they are registered."""

    def __init__(self) -> None:
        self.methods: list[MethodStats] = []

    def method(self, service: str, method: str, kind: str) -> MethodStats:
        stats = MethodStats(service, method, kind)
        self.methods.append(stats)
        return stats


def _kind(handler: grpc.RpcMethodHandler[Any, Any]) -> str:
    if handler.unary_unary is not None:
        return "unary"
    if handler.unary_stream is not None:
        return "server_stream"
    if handler.stream_stream is not None:
        return "bidi_stream"
    return "client_stream"


def _code(context: Context, exc: BaseException) -> int:
    """The status a call that raised ``exc`` ends with: the one given to ``context.abort``, else
    CANCELLED for a call the client went away from, else gRPC's UNKNOWN."""
    code: grpc.StatusCode | None = context.code()  # None at run time when no code was set
    if code is not None:
        return int(code.value[0])
    if isinstance(exc, asyncio.CancelledError):
        return _CANCELLED
    return _UNKNOWN


def counted(
    handler: grpc.RpcMethodHandler[Any, Any], stats: RpcStats, service: str, method: str
) -> grpc.RpcMethodHandler[Any, Any]:
    """``handler`` with its calls counted in ``stats`` (async behaviours only, as raftkv's)."""
    kind = _kind(handler)
    m = stats.method(service, method, kind)
    des, ser = handler.request_deserializer, handler.response_serializer
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(
            _unary(handler.unary_unary, m), request_deserializer=des, response_serializer=ser
        )
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(
            _stream(handler.unary_stream, m), request_deserializer=des, response_serializer=ser
        )
    if handler.stream_stream is not None:
        return grpc.stream_stream_rpc_method_handler(
            _stream(handler.stream_stream, m), request_deserializer=des, response_serializer=ser
        )
    raise TypeError("etcd's client API has no stream-unary methods to count")


def _unary(fn: Callable[..., Any], m: MethodStats) -> Callable[[Any, Context], Any]:
    async def behaviour(request: Any, context: Context) -> Any:
        m.started += 1
        try:
            response = await fn(request, context)
        except BaseException as exc:
            m.handled[_code(context, exc)] += 1
            raise
        m.handled[0] += 1
        return response

    return behaviour


def _stream(fn: Callable[..., Any], m: MethodStats) -> Callable[[Any, Context], AsyncIterator[Any]]:
    # An async generator, so that gRPC runs it on the loop (see raftkv.server.decoding).
    async def behaviour(request: Any, context: Context) -> AsyncIterator[Any]:
        m.started += 1
        try:
            async for item in fn(request, context):
                yield item
        except BaseException as exc:
            m.handled[_code(context, exc)] += 1
            raise
        m.handled[0] += 1

    return behaviour
