"""``AsyncWatch``: one watch that survives member failures, resuming where it stopped."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import grpc
from grpc import aio

from raftkv.client.errors import Unavailable, WatchCanceled, WatchCompacted
from raftkv.client.failover import DEFAULT_TIMEOUT_S
from raftkv.client.types import Event, EventType, Header, KeyValue, WatchResponse
from raftkv.pb.etcdserverpb import rpc_pb2

if TYPE_CHECKING:
    from raftkv.client.aio import AsyncClient

__all__ = ["AsyncWatch"]

logger = logging.getLogger(__name__)


def _event(e: Any) -> Event:
    kv = KeyValue.from_pb
    return Event(EventType(e.type), kv(e.kv), kv(e.prev_kv) if e.HasField("prev_kv") else None)


class AsyncWatch:
    """Async iterator of :class:`WatchResponse`.

    Tracks the next revision it needs (last delivered event + 1, or a progress notification's
    revision + 1, or the created response's revision + 1 for a watch "from now"). When the
    stream breaks, the member dies or loses its leader, it opens a new stream on any member from
    that revision: no event is lost or repeated. If that revision was compacted it raises
    :class:`WatchCompacted`. ``reconnect_timeout_s`` bounds how long it keeps trying.
    """

    def __init__(
        self,
        client: AsyncClient,
        create: rpc_pb2.WatchCreateRequest,
        reconnect_timeout_s: float = 60.0,
    ) -> None:
        self._client = client
        self._create = create
        self.next_revision = create.start_revision if create.start_revision > 0 else 0
        self.reconnect_timeout_s = reconnect_timeout_s
        self.endpoint: str | None = None
        self.resumes = 0
        self._call: Any = None
        self._closed = False
        self._frags: list[Any] = []
        self._created = asyncio.Event()

    def __aiter__(self) -> AsyncIterator[WatchResponse]:
        return self._iterate()

    async def __aenter__(self) -> AsyncWatch:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.cancel()

    async def cancel(self) -> None:
        self._closed = True
        if self._call is not None:
            self._call.cancel()
            self._call = None

    @property
    def closed(self) -> bool:
        return self._closed

    async def wait_created(self, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        """Wait until the server confirmed the watch (only while iterating)."""
        await asyncio.wait_for(self._created.wait(), timeout_s)

    def _request(self) -> rpc_pb2.WatchCreateRequest:
        req = rpc_pb2.WatchCreateRequest()
        req.CopyFrom(self._create)
        if self.next_revision > 0:
            req.start_revision = self.next_revision
        return req

    async def request_progress(self) -> None:
        if self._call is not None:
            await self._call.write(
                rpc_pb2.WatchRequest(progress_request=rpc_pb2.WatchProgressRequest())
            )

    async def _iterate(self) -> AsyncIterator[WatchResponse]:
        first = True
        while not self._closed:
            deadline = time.monotonic() + self.reconnect_timeout_s
            try:
                call, ep = await self._client._open_watch(self._request(), deadline)
            except Unavailable:
                raise
            self._call = call
            self.endpoint = ep.target
            if not first:
                self.resumes += 1
            first = False
            try:
                async for out in self._read(call):
                    yield out
            except (WatchCompacted, WatchCanceled):
                raise
            except aio.AioRpcError as e:
                if self.closed:
                    return
                logger.info(
                    "watch on %s broke (%s: %s); resuming from revision %d",
                    ep.target, e.code().name, e.details(), self.next_revision,
                )  # fmt: skip
                self._client._ring.mark_down(ep)
            finally:
                call.cancel()
                self._call = None
                self._frags = []
            if not self._closed:
                await asyncio.sleep(0.05)

    async def _read(self, call: Any) -> AsyncIterator[WatchResponse]:
        while True:
            r = await call.read()
            if r is aio.EOF:
                raise aio.AioRpcError(
                    grpc.StatusCode.UNAVAILABLE,
                    aio.Metadata(),
                    aio.Metadata(),
                    details="watch stream ended",
                )
            if r.created and not r.canceled:
                self._created.set()
                if self.next_revision <= 0:
                    # A watch "from now": anything after the creation revision is ours.
                    self.next_revision = r.header.revision + 1
                continue
            if r.canceled:
                if r.compact_revision:
                    raise WatchCompacted(r.compact_revision, self.next_revision)
                if "no leader" in r.cancel_reason:
                    raise aio.AioRpcError(
                        grpc.StatusCode.UNAVAILABLE,
                        aio.Metadata(),
                        aio.Metadata(),
                        details=r.cancel_reason,
                    )
                raise WatchCanceled(r.cancel_reason)
            if r.fragment:
                self._frags.append(r)
                continue
            if self._frags:
                parts = [*self._frags, r]
                self._frags = []
                events = [e for p in parts for e in p.events]
            else:
                events = list(r.events)
            hdr = Header.from_pb(r.header)
            if not events:
                if r.watch_id == -1 or not r.events:
                    # progress notification: everything up to header.revision was delivered
                    self.next_revision = max(self.next_revision, hdr.revision + 1)
                    yield WatchResponse(hdr, ())
                continue
            out = tuple(_event(e) for e in events if e.kv.mod_revision >= self.next_revision)
            if not out:
                continue
            self.next_revision = out[-1].kv.mod_revision + 1
            yield WatchResponse(hdr, out)
