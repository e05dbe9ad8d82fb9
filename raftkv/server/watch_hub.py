"""The watch machinery behind etcd's ``etcdserverpb.Watch`` service: the hub, streams, catch-up.

Shape (after etcd's watchable store, server/storage/mvcc/watchable_store.go):

* One :class:`WatchHub` per node. After every applied batch (``add_apply_listener``) it reads
  the new history once, for all keys, in a worker thread (``MVCCStore.events``), and hands each
  *synced* watcher the events in its range. ``hub.rev`` is the revision up to which every synced
  watcher has been given its events. The apply path only sets an ``asyncio.Event``.
* A watcher that is not synced (a start revision in the past, or a stream whose send queue is
  full) catches up from history on its own, in batches, with a worker-thread read per batch, and
  joins the synced set once its next revision is past ``hub.rev``. Each watcher's ``next_rev``
  filters what the hub gives it, so joining "ahead" of the hub repeats nothing, and joining is
  only allowed when nothing between is missing.
* Each stream has one bounded send queue (responses and bytes). The hub never waits: when the
  queue is full the watcher drops out of the synced set and catches up from history later, so a
  slow client costs history reads rather than memory. Catch-up reads on a stream are serialized
  and wait for queue space before reading.
* Responses are serialized once per group of equal watchers: the events part of a
  ``WatchResponse`` is encoded once and concatenated with each watcher's header and id
  (protobuf's merge-by-concatenation), so many watchers on one prefix cost little.
* All events of one revision travel in one response (``MVCCStore.events`` never splits a
  revision); ``fragment`` splits only a response larger than ``max_response_bytes``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from raftkv.kv.keys import normalize_end
from raftkv.kv.mvcc import MVCCStore
from raftkv.kv.types import Event, EventType, WatchBatch
from raftkv.pb.etcdserverpb import rpc_pb2
from raftkv.pb.mvccpb import kv_pb2
from raftkv.server import convert
from raftkv.server.api import NodeApi

# _Stream, _SendQueue and _Watcher keep their underscores: they are internal to the Watch service
# (watch_service.py builds the streams), and tests/server/test_bad_input.py finds leftover stream
# tasks by the qualname "_Stream.".
__all__ = [
    "CANCEL_COMPACTED",
    "CANCEL_DUPLICATE_ID",
    "CANCEL_EMPTY_RANGE",
    "WatchHub",
]

logger = logging.getLogger(__name__)

CANCEL_COMPACTED = "mvcc: required revision has been compacted"
CANCEL_DUPLICATE_ID = "mvcc: duplicate watch ID provided on the WatchStream"
CANCEL_EMPTY_RANGE = "mvcc: watcher range is empty"

_ALL_KEY, _ALL_END = b"\0", b"\0"
_HUB_BATCH_EVENTS = 2048
_CATCHUP_BATCH_EVENTS = 512


def _event_to_pb(ev: Event, with_prev: bool) -> kv_pb2.Event:
    out = kv_pb2.Event(type=int(ev.type), kv=convert.kv_to_pb(ev.kv))  # type: ignore[arg-type]
    if with_prev and ev.prev_kv is not None:
        out.prev_kv.CopyFrom(convert.kv_to_pb(ev.prev_kv))
    return out


@dataclass(eq=False)
class _Watcher:
    id: int
    stream: _Stream
    key: bytes
    range_end: bytes
    next_rev: int
    prev_kv: bool
    no_put: bool
    no_delete: bool
    progress_notify: bool
    fragment: bool
    start: bytes = b""
    end: bytes | None = None
    canceled: bool = False
    catch_up: asyncio.Task[None] | None = None

    def __post_init__(self) -> None:
        self.start, self.end = normalize_end(self.key, self.range_end)

    @property
    def group(self) -> tuple[bytes, bytes | None, bool, bool, bool]:
        return (self.start, self.end, self.prev_kv, self.no_put, self.no_delete)

    def wants(self, ev: Event) -> bool:
        k = ev.kv.key
        if k < self.start or (self.end is not None and k >= self.end):
            return False
        if ev.type is EventType.PUT:
            return not self.no_put
        return not self.no_delete


class WatchHub:
    """Reads new history once per applied batch and feeds every synced watcher of a node."""

    def __init__(self, node: NodeApi) -> None:
        self.node = node
        self.store: MVCCStore = node.store
        self.rev = self.store.current_revision()
        self.synced: set[_Watcher] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self.reads = 0

    def start(self) -> None:
        if self._task is None:
            self._unsubscribe = self.node.add_apply_listener(self._wake.set)
            self._task = asyncio.get_running_loop().create_task(self._run(), name="watch-hub")
            self._wake.set()

    async def close(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def header(self, revision: int) -> rpc_pb2.ResponseHeader:
        return convert.header(
            self.node.cluster_id, self.node.member_id, revision, self.node.raft_term
        )

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self._drain()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("watch hub: reading new history failed; retrying")
                await asyncio.sleep(0.1)
                self._wake.set()

    async def _drain(self) -> None:
        while True:
            if not self.synced:
                # Nobody to feed: just follow the store (joiners compare against hub.rev).
                self.rev = max(self.rev, self.store.current_revision())
                return
            want_prev = any(w.prev_kv for w in self.synced)
            start = self.rev + 1
            batch = await asyncio.to_thread(
                self.store.events,
                start,
                _ALL_KEY,
                _ALL_END,
                prev_kv=want_prev,
                max_events=_HUB_BATCH_EVENTS,
            )
            self.reads += 1
            if batch.compact_revision:
                self._compacted(batch.compact_revision)
                continue
            if batch.next_revision <= start:
                return  # nothing new
            self._dispatch(batch, start, want_prev)
            self.rev = batch.next_revision - 1

    def _compacted(self, compact_revision: int) -> None:
        for w in list(self.synced):
            if w.next_rev < compact_revision:
                self.synced.discard(w)
                w.stream.cancel_compacted(w, compact_revision)
        self.rev = max(self.rev, compact_revision - 1)

    def _dispatch(self, batch: WatchBatch, start: int, have_prev: bool) -> None:
        top = batch.next_revision - 1
        hdr = self.header(top).SerializeToString()
        cache: dict[tuple[Any, ...], tuple[list[Event], bytes]] = {}
        for w in list(self.synced):
            if w.prev_kv and not have_prev:
                # Joined while the batch was read without prev_kv: take it from history.
                self.synced.discard(w)
                w.stream.start_catch_up(w)
                continue
            gkey: tuple[Any, ...] = w.group
            if w.next_rev > start:
                gkey = (*gkey, w.next_rev)
            hit = cache.get(gkey)
            if hit is None:
                evs = [e for e in batch.events if e.kv.mod_revision >= w.next_rev and w.wants(e)]
                body = (
                    rpc_pb2.WatchResponse(
                        events=[_event_to_pb(e, w.prev_kv) for e in evs]
                    ).SerializeToString()
                    if evs
                    else b""
                )
                hit = cache[gkey] = (evs, body)
            evs, body = hit
            if evs and not w.stream.deliver_events(w, evs, hdr, body, top):
                self.synced.discard(w)
                w.stream.start_catch_up(w)
                continue
            w.next_rev = max(w.next_rev, top + 1)

    def join(self, w: _Watcher) -> bool:
        """Make ``w`` synced if nothing between it and the hub is missing."""
        if w.canceled:
            return True
        if w.next_rev > self.rev:
            self.synced.add(w)
            self._wake.set()
            return True
        return False


class _SendQueue:
    """Bounded by count and bytes; ``put`` never blocks (the caller checks ``has_room``)."""

    def __init__(self, max_items: int, max_bytes: int) -> None:
        self.items: deque[bytes] = deque()
        self.bytes = 0
        self.max_items = max_items
        self.max_bytes = max_bytes
        self._nonempty = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()

    def has_room(self, size: int = 0) -> bool:
        return len(self.items) < self.max_items and self.bytes + size <= self.max_bytes

    def put(self, data: bytes) -> None:
        self.items.append(data)
        self.bytes += len(data)
        self._nonempty.set()
        if not self.has_room():
            self._room.clear()

    async def get(self) -> bytes:
        while not self.items:
            self._nonempty.clear()
            await self._nonempty.wait()
        data = self.items.popleft()
        self.bytes -= len(data)
        if self.has_room():
            self._room.set()
        return data

    async def wait_room(self) -> None:
        while not self.has_room():
            self._room.clear()
            await self._room.wait()


@dataclass(eq=False)
class _Stream:
    hub: WatchHub
    queue: _SendQueue
    progress_interval_s: float
    max_response_bytes: int
    watchers: dict[int, _Watcher] = field(default_factory=dict)
    next_id: int = 0
    progress_pending: bool = False
    catch_up_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    closed: bool = False

    # -- outgoing ---------------------------------------------------------------------------

    def _send(self, msg: rpc_pb2.WatchResponse) -> None:
        self.queue.put(msg.SerializeToString())

    def deliver_events(
        self, w: _Watcher, evs: Sequence[Event], hdr: bytes, body: bytes, top: int
    ) -> bool:
        """Queue one response of hub events; False (nothing queued) if the queue is full."""
        if w.canceled or self.closed:
            return True
        if w.fragment and len(body) > self.max_response_bytes:
            if not self.queue.has_room(len(body)):
                return False
            self._send_fragments(w, evs, top)
            return True
        head = rpc_pb2.WatchResponse(watch_id=w.id).SerializeToString()
        data = b"\n" + _varint(len(hdr)) + hdr + head + body
        if not self.queue.has_room(len(data)):
            return False
        self.queue.put(data)
        return True

    def _send_fragments(self, w: _Watcher, evs: Sequence[Event], top: int) -> None:
        chunks: list[list[kv_pb2.Event]] = [[]]
        size = 0
        for e in evs:
            pe = _event_to_pb(e, w.prev_kv)
            n = pe.ByteSize() + 8
            if chunks[-1] and size + n > self.max_response_bytes:
                chunks.append([])
                size = 0
            chunks[-1].append(pe)
            size += n
        hdr = self.hub.header(top)
        for i, chunk in enumerate(chunks):
            last = i == len(chunks) - 1
            self._send(
                rpc_pb2.WatchResponse(header=hdr, watch_id=w.id, events=chunk, fragment=not last)
            )

    def cancel_compacted(self, w: _Watcher, compact_revision: int) -> None:
        if w.canceled:
            return
        self._drop(w)
        self._send(
            rpc_pb2.WatchResponse(
                header=self.hub.header(self.hub.store.current_revision()),
                watch_id=w.id,
                canceled=True,
                compact_revision=compact_revision,
                cancel_reason=CANCEL_COMPACTED,
            )
        )
        self._check_progress()

    def _drop(self, w: _Watcher) -> None:
        w.canceled = True
        self.hub.synced.discard(w)
        self.watchers.pop(w.id, None)
        if w.catch_up is not None and w.catch_up is not asyncio.current_task():
            w.catch_up.cancel()

    # -- catching up ------------------------------------------------------------------------

    def start_catch_up(self, w: _Watcher) -> None:
        if w.canceled or self.closed:
            return
        if w.catch_up is None or w.catch_up.done():
            w.catch_up = asyncio.get_running_loop().create_task(self._catch_up(w))

    async def _catch_up(self, w: _Watcher) -> None:
        try:
            while not w.canceled:
                if self.hub.join(w):
                    self._check_progress()
                    return
                async with self.catch_up_lock:
                    await self.queue.wait_room()
                    if _gone(w):
                        return
                    batch = await asyncio.to_thread(
                        self.hub.store.events,
                        w.next_rev,
                        w.key,
                        w.range_end,
                        prev_kv=w.prev_kv,
                        max_events=_CATCHUP_BATCH_EVENTS,
                    )
                if _gone(w):
                    return
                if batch.compact_revision:
                    self.cancel_compacted(w, batch.compact_revision)
                    return
                evs = [e for e in batch.events if e.kv.mod_revision >= w.next_rev and w.wants(e)]
                top = batch.next_revision - 1
                if evs:
                    msg = rpc_pb2.WatchResponse(
                        header=self.hub.header(top),
                        watch_id=w.id,
                        events=[_event_to_pb(e, w.prev_kv) for e in evs],
                    )
                    if w.fragment and msg.ByteSize() > self.max_response_bytes:
                        self._send_fragments(w, evs, top)
                    else:
                        self._send(msg)
                w.next_rev = max(w.next_rev, batch.next_revision)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("watch %d: catching up failed", w.id)
            if not w.canceled:
                self._drop(w)
                self._send(
                    rpc_pb2.WatchResponse(
                        header=self.hub.header(self.hub.rev),
                        watch_id=w.id,
                        canceled=True,
                        cancel_reason="etcdserver: internal error",
                    )
                )

    # -- progress ---------------------------------------------------------------------------

    def all_synced(self) -> bool:
        return all(w in self.hub.synced for w in self.watchers.values())

    def _check_progress(self) -> None:
        if self.progress_pending and self.all_synced():
            self.progress_pending = False
            self._send(rpc_pb2.WatchResponse(header=self.hub.header(self.hub.rev), watch_id=-1))

    def request_progress(self) -> None:
        self.progress_pending = True
        self._check_progress()

    def notify_progress(self) -> None:
        """The periodic progress_notify: an empty response for each synced watcher."""
        hdr = self.hub.header(self.hub.rev)
        for w in list(self.watchers.values()):
            if w.progress_notify and w in self.hub.synced:
                self._send(rpc_pb2.WatchResponse(header=hdr, watch_id=w.id))

    # -- incoming ---------------------------------------------------------------------------

    def create(self, req: rpc_pb2.WatchCreateRequest) -> None:
        store = self.hub.store
        current = store.current_revision()
        hdr = self.hub.header(current)
        key = req.key or b"\0"  # etcd's watch server: "\0" is the smallest key
        if req.range_end and req.range_end != b"\0" and key >= req.range_end:
            self._send(
                rpc_pb2.WatchResponse(
                    header=hdr, watch_id=-1, created=True, canceled=True,
                    cancel_reason=CANCEL_EMPTY_RANGE,
                )
            )  # fmt: skip
            return
        if req.watch_id != 0:
            if req.watch_id in self.watchers:
                self._send(
                    rpc_pb2.WatchResponse(
                        header=hdr, watch_id=-1, created=True, canceled=True,
                        cancel_reason=CANCEL_DUPLICATE_ID,
                    )
                )  # fmt: skip
                return
            wid = req.watch_id
        else:
            while self.next_id in self.watchers:
                self.next_id += 1
            wid = self.next_id
            self.next_id += 1
        filters = set(req.filters)
        w = _Watcher(
            id=wid,
            stream=self,
            key=key,
            range_end=req.range_end,
            next_rev=req.start_revision if req.start_revision != 0 else current + 1,
            prev_kv=req.prev_kv,
            no_put=rpc_pb2.WatchCreateRequest.NOPUT in filters,
            no_delete=rpc_pb2.WatchCreateRequest.NODELETE in filters,
            progress_notify=req.progress_notify,
            fragment=req.fragment,
        )
        self.watchers[wid] = w
        self._send(rpc_pb2.WatchResponse(header=hdr, watch_id=wid, created=True))
        if w.next_rev < 0:
            # etcd rejects a negative start revision like a compacted one.
            self.cancel_compacted(w, store.compacted_revision())
            return
        self.start_catch_up(w)

    def cancel(self, watch_id: int) -> None:
        w = self.watchers.get(watch_id)
        if w is None:
            return  # etcd: cancelling an unknown id is silently ignored
        self._drop(w)
        self._send(
            rpc_pb2.WatchResponse(
                header=self.hub.header(self.hub.rev), watch_id=watch_id, canceled=True
            )
        )
        self._check_progress()

    def close(self) -> None:
        self.closed = True
        for w in list(self.watchers.values()):
            w.canceled = True
            self.hub.synced.discard(w)
            if w.catch_up is not None:
                w.catch_up.cancel()
        self.watchers.clear()


def _gone(w: _Watcher) -> bool:
    """``w.canceled``, read after an await (a function call keeps mypy from narrowing it)."""
    return w.canceled


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)
