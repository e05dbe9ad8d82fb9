"""etcd's ``etcdserverpb.Watch`` service over a :class:`~raftkv.server.api.NodeApi`.

The servicer: one stream per ``Watch`` call, its receive, progress and leader-check tasks, and the
status it ends with. The machinery it drives (the hub that reads new history once per applied
batch, the per-stream send queue, catch-up from history) is in :mod:`raftkv.server.watch_hub`,
whose docstring describes its shape.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc

from raftkv.pb.etcdserverpb import rpc_pb2
from raftkv.server.api import NodeApi
from raftkv.server.decoding import RefusedRequest, guard
from raftkv.server.rpc_stats import RpcStats, counted
from raftkv.server.status import Context
from raftkv.server.watch_hub import (
    CANCEL_COMPACTED,
    CANCEL_DUPLICATE_ID,
    CANCEL_EMPTY_RANGE,
    WatchHub,
    _SendQueue,
    _Stream,
)

__all__ = [
    "CANCEL_COMPACTED",
    "CANCEL_DUPLICATE_ID",
    "CANCEL_EMPTY_RANGE",
    "DEFAULT_PROGRESS_NOTIFY_INTERVAL_S",
    "WatchHub",
    "WatchService",
    "add_watch_service",
]

logger = logging.getLogger(__name__)

DEFAULT_PROGRESS_NOTIFY_INTERVAL_S = 600.0
"""etcd's --watch-progress-notify-interval default: 10 minutes."""

NO_LEADER = "etcdserver: no leader"

_MAX_NO_LEADER_CHECKS = 3
"""etcd's maxNoLeaderCnt: a require-leader stream is cut after this many failed checks."""


class WatchService:
    """The Watch servicer. One hub per service (a service serves one node)."""

    def __init__(
        self,
        node: NodeApi,
        *,
        progress_notify_interval_s: float = DEFAULT_PROGRESS_NOTIFY_INTERVAL_S,
        max_response_bytes: int = 1536 * 1024,
        send_queue_items: int = 256,
        send_queue_bytes: int = 8 << 20,
        leader_check_interval_s: float = 1.0,
    ) -> None:
        self.node = node
        self.progress_notify_interval_s = progress_notify_interval_s
        self.max_response_bytes = max_response_bytes
        self.send_queue_items = send_queue_items
        self.send_queue_bytes = send_queue_bytes
        self.leader_check_interval_s = leader_check_interval_s
        self._hub: WatchHub | None = None

    @property
    def hub(self) -> WatchHub:
        if self._hub is None:
            self._hub = WatchHub(self.node)
            self._hub.start()
        return self._hub

    async def close(self) -> None:
        if self._hub is not None:
            await self._hub.close()
            self._hub = None

    async def Watch(  # noqa: N802 (gRPC method name)
        self, request_iterator: AsyncIterator[rpc_pb2.WatchRequest], context: Context
    ) -> AsyncIterator[bytes]:
        require_leader = any(
            k == "hasleader" and v == "true" for k, v in context.invocation_metadata() or ()
        )
        if require_leader and self.node.status().leader == 0:
            await context.abort(grpc.StatusCode.UNAVAILABLE, NO_LEADER)
        stream = _Stream(
            self.hub,
            _SendQueue(self.send_queue_items, self.send_queue_bytes),
            self.progress_notify_interval_s,
            self.max_response_bytes,
        )
        # The status the stream must end with (a lost leader, a request it could not decode).
        end: asyncio.Future[tuple[grpc.StatusCode, str]] = (
            asyncio.get_running_loop().create_future()
        )
        tasks = [
            asyncio.create_task(self._recv(stream, request_iterator, end)),
            asyncio.create_task(self._progress(stream)),
        ]
        if require_leader:
            tasks.append(asyncio.create_task(self._monitor_leader(end)))
        get: asyncio.Task[bytes] | None = None
        try:
            while True:
                get = asyncio.create_task(stream.queue.get())
                waiting: set[asyncio.Future[Any]] = {get, end}
                done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                if get in done:
                    yield get.result()
                    continue
                get.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await get
                if get.done() and not get.cancelled():
                    yield get.result()
                await context.abort(*end.result())
        finally:
            stream.close()  # drops every watcher of the stream and cancels its catch-ups
            end.cancel()
            if get is not None:
                get.cancel()
            for t in tasks:
                t.cancel()

    async def _recv(
        self,
        stream: _Stream,
        requests: AsyncIterator[rpc_pb2.WatchRequest],
        end: asyncio.Future[tuple[grpc.StatusCode, str]],
    ) -> None:
        try:
            async for req in requests:
                await stream.queue.wait_room()
                which = req.WhichOneof("request_union")
                if which == "create_request":
                    stream.create(req.create_request)
                elif which == "cancel_request":
                    stream.cancel(req.cancel_request.watch_id)
                elif which == "progress_request":
                    stream.request_progress()
        except asyncio.CancelledError:
            raise
        except RefusedRequest as exc:  # etcd ends the stream with grpc-go's decoding error
            if not end.done():
                end.set_result((exc.refused.code, exc.refused.details))
        except Exception as exc:  # the client went away; the send side ends with the call
            logger.debug("watch stream receive ended: %r", exc)

    async def _progress(self, stream: _Stream) -> None:
        while True:
            await asyncio.sleep(stream.progress_interval_s)
            stream.notify_progress()

    async def _monitor_leader(self, end: asyncio.Future[tuple[grpc.StatusCode, str]]) -> None:
        fails = 0
        while True:
            await asyncio.sleep(self.leader_check_interval_s)
            if self.node.status().leader == 0:
                fails += 1
                if fails >= _MAX_NO_LEADER_CHECKS:
                    if not end.done():
                        end.set_result((grpc.StatusCode.UNAVAILABLE, NO_LEADER))
                    return
            else:
                fails = 0


def _serialize(msg: bytes | rpc_pb2.WatchResponse) -> bytes:
    return msg if isinstance(msg, bytes) else msg.SerializeToString()


def add_watch_service(
    server: grpc.aio.Server, node: NodeApi, *, rpc_stats: RpcStats | None = None, **options: Any
) -> WatchService:
    """Register etcd's Watch service for ``node``; responses go out pre-serialized, requests
    are decoded as etcd decodes them (``raftkv.server.decoding``), calls are counted in
    ``rpc_stats`` if given."""
    service = WatchService(node, **options)
    watch = grpc.stream_stream_rpc_method_handler(
        service.Watch,
        request_deserializer=rpc_pb2.WatchRequest.FromString,
        response_serializer=_serialize,
    )
    watch = guard(watch)
    if rpc_stats is not None:
        watch = counted(watch, rpc_stats, "etcdserverpb.Watch", "Watch")
    handler = grpc.method_handlers_generic_handler("etcdserverpb.Watch", {"Watch": watch})
    server.add_generic_rpc_handlers((handler,))
    return service
