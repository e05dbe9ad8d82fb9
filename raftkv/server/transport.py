"""The peer transport over gRPC: Raft messages, snapshots and forwarded writes between members.

Sending side, :class:`GrpcTransport`:

- ``send()`` never blocks and never awaits. It appends each message to its destination's bounded
  queue; a full queue drops the message and reports the peer unreachable (once per burst of
  drops). Raft retransmits whatever is lost, so dropping is always safe, while waiting on a slow
  peer would stall the leader for everyone.
- One sender task per peer keeps one long-lived ``Stream`` call open. It waits until the queue is
  non-empty, then takes everything queued (up to ``batch_max_msgs`` messages or about
  ``batch_max_bytes``) into one ``MessageBatch``. At most ``max_unacked_batches`` may be
  unacknowledged, which bounds what is in flight, and a slow receiver makes the batches larger
  rather than more numerous. The receiver acknowledges cumulatively: the first batch of a stream,
  every ``ACK_EVERY``-th, and any batch the sender asks about (one that fills its window). An ack
  per batch would double the stream operations, each a trip through gRPC's poller.
- When the stream breaks (or cannot be opened: the peer is down), the task reports the peer
  unreachable, drops everything queued before the failure, and tries again after an exponential
  backoff with jitter. Messages queued during the backoff go out on the next attempt, or are
  dropped if it fails too: a dead peer never holds more than ``max_queue_msgs`` messages.
- An InstallSnapshot message starts a snapshot send on its own connection (at most one per peer at
  a time): a header chunk, the state machine's dump in chunks, and a last chunk with the SHA-256
  of all the data. The result is reported with ``on_snapshot_status``.

Receiving side, :class:`PeerService`, the servicer of ``raftkv.peer.v1.Raft``: decodes batches
and hands them to the driver, receives snapshots into files, and proposes forwarded writes.

Forwarded writes (a follower's clients' writes, for the leader) ride the same stream, fire and
forget, as etcd forwards a proposal: a batch carries the commands queued by ``forward()`` besides
its Raft messages, the receiver proposes them at once and answers only when it turns them down
(it is not the leader, or cannot take proposals now): that answer rides an ack sent at once. An
accepted command gets no answer: the forwarding member learns its fate from the entries the
leader replicates to it. Answering every forward cost an ack (a stream write and read) per batch
of forwards, and a unary RPC per forward cost as much again as the stream operations it replaces.

The peer gRPC server should be created with :data:`PEER_SERVER_OPTIONS`, which matches the
message size limit and the keepalive pings of :data:`PEER_CHANNEL_OPTIONS`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import random
from collections import deque
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterator,
    Mapping,
    Sequence,
)
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any, Final

import grpc
from grpc import aio

from raftkv.pb.peer import peer_pb2, peer_pb2_grpc
from raftkv.raft.messages import AppendEntries, InstallSnapshot, Message
from raftkv.raft.types import Snapshot
from raftkv.server.wire import (
    message_from_pb,
    message_to_pb,
    snapshot_meta_from_pb,
    snapshot_meta_to_pb,
)

__all__ = [
    "PEER_CHANNEL_OPTIONS",
    "PEER_SERVER_OPTIONS",
    "GrpcTransport",
    "PeerService",
    "SnapshotSource",
]

log = logging.getLogger(__name__)

SnapshotSource = Callable[[], Iterator[bytes]]
"""A consistent state-machine dump, in chunks. Called, and iterated, in one worker thread."""

MAX_MESSAGE_BYTES: Final = 64 * 1024 * 1024
"""gRPC message limit on peer links: a 4 MiB batch of large entries, or a snapshot chunk, fits."""

CLUSTER_ID_MISMATCH: Final = "etcdserver: cluster ID mismatch"

ACK_EVERY: Final = 8
"""The receiver acknowledges every this many batches even when the sender did not ask."""

_MESSAGE_SIZE_OPTIONS: Final[tuple[tuple[str, Any], ...]] = (
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
)

PEER_CHANNEL_OPTIONS: Final[tuple[tuple[str, Any], ...]] = (
    *_MESSAGE_SIZE_OPTIONS,
    # A peer that vanished (power loss, partition) is noticed within ~15 s even on an idle link.
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.http2.max_pings_without_data", 0),
    # gRPC's own reconnect backoff must not outlast ours (its default grows to 120 s): a peer that
    # comes back is reached within about two seconds.
    ("grpc.initial_reconnect_backoff_ms", 50),
    ("grpc.min_reconnect_backoff_ms", 50),
    ("grpc.max_reconnect_backoff_ms", 2_000),
)
"""Options of the channels GrpcTransport opens to its peers."""

PEER_SERVER_OPTIONS: Final[tuple[tuple[str, Any], ...]] = (
    *_MESSAGE_SIZE_OPTIONS,
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    # Accept the clients' keepalive pings (every 10 s, also on a link with no data for a while);
    # gRPC's default policy answers pings more often than every 5 minutes with GOAWAY.
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
    ("grpc.http2.max_ping_strikes", 0),
    # gRPC binds with SO_REUSEPORT by default: two members misconfigured with one peer port would
    # then share it silently, and on Linux even a port-0 bind may land on a port in use.
    ("grpc.so_reuseport", 0),
)
"""Options for the ``grpc.aio.server`` that serves :class:`PeerService`."""

# A snapshot goes over a connection of its own, so that megabytes of snapshot data never queue
# in front of heartbeats on the message stream (channels with equal options share connections).
_SNAPSHOT_CHANNEL_OPTIONS: Final = (*PEER_CHANNEL_OPTIONS, ("grpc.use_local_subchannel_pool", 1))


def _approx_size(msg: Message) -> int:
    """A cheap estimate of a message's encoded size, to bound batches."""
    if type(msg) is AppendEntries:
        return 48 + sum([len(e.data) for e in msg.entries]) + 24 * len(msg.entries)
    return 64  # the other kinds are small (a read-index context is a few bytes)


def _describe(error: BaseException | None) -> str:
    if isinstance(error, aio.AioRpcError):
        return f"{error.code().name} {error.details()}"
    return repr(error) if error is not None else "closed"


class _Peer:
    """Sending state for one peer. Only touched on the event loop."""

    __slots__ = (
        "addr",
        "channel",
        "dropping",
        "failures",
        "forwards",
        "id",
        "queue",
        "snapshot_task",
        "stub",
        "task",
        "wakeup",
    )

    def __init__(self, member_id: int, addr: str) -> None:
        self.id = member_id
        self.addr = addr
        self.queue: deque[Message] = deque()
        self.forwards: deque[tuple[int, bytes]] = deque()
        """Forwarded commands (id, command) waiting for the next batch."""
        self.wakeup = asyncio.Event()
        """Set by send(), by an ack, and when the stream breaks."""
        self.dropping = False
        """Messages were dropped on a full queue; cleared once the sender drains it."""
        self.failures = 0
        """Consecutive failed stream attempts (for logging)."""
        self.channel: aio.Channel | None = None
        self.stub: peer_pb2_grpc.RaftAsyncStub | None = None
        self.task: asyncio.Task[None] | None = None
        self.snapshot_task: asyncio.Task[None] | None = None

    def take_forwards(self) -> list[int]:
        """Drop every forward not yet sent and return their ids: they never reached the peer."""
        ids = [forward_id for forward_id, _ in self.forwards]
        self.forwards.clear()
        return ids


class _StreamState:
    """One attempt at the Stream call: batches sent and acknowledged."""

    __slots__ = ("acked", "broken", "error", "forwards", "sent")

    def __init__(self) -> None:
        self.sent = 0
        self.acked = 0
        self.broken = False
        self.error: BaseException | None = None
        self.forwards: deque[tuple[int, list[int]]] = deque()
        """(seq, forward ids) of batches with forwards, sent and not yet acknowledged."""


class GrpcTransport:
    """Sends Raft messages to peers over gRPC; see the module docstring for the behaviour.

    Callbacks are called on the event loop, never from inside ``send()`` or ``forward()``.
    ``on_forwards_rejected(ids, reason)`` reports forwarded commands that were certainly not
    proposed: ``reason`` is the receiver's answer, or None when they never left this member.
    ``on_forwards_lost(ids)`` reports those sent on a stream that broke before the receiver
    acknowledged them: they may or may not have been proposed.
    """

    def __init__(
        self,
        *,
        member_id: int,
        cluster_id: int,
        peers: Mapping[int, str],
        snapshot_source: SnapshotSource,
        on_unreachable: Callable[[int], None],
        on_snapshot_status: Callable[[int, bool], None],
        on_forwards_rejected: Callable[[Sequence[int], bytes | None], None] | None = None,
        on_forwards_lost: Callable[[Sequence[int]], None] | None = None,
        max_queue_msgs: int = 8192,
        rng: random.Random | None = None,
        batch_max_msgs: int = 1024,
        batch_max_bytes: int = 4 * 1024 * 1024,
        max_unacked_batches: int = 16,
        backoff_min_s: float = 0.05,
        backoff_max_s: float = 2.0,
        snapshot_chunk_bytes: int = 1024 * 1024,
    ) -> None:
        if max_queue_msgs < 1 or batch_max_msgs < 1 or max_unacked_batches < 1:
            raise ValueError("queue, batch and window limits must be positive")
        if not 0 < backoff_min_s <= backoff_max_s:
            raise ValueError("need 0 < backoff_min_s <= backoff_max_s")
        if not 0 < snapshot_chunk_bytes <= MAX_MESSAGE_BYTES // 2:
            raise ValueError("snapshot_chunk_bytes out of range")
        self._member_id = member_id
        self._cluster_id = cluster_id
        self._snapshot_source = snapshot_source
        self._on_unreachable = on_unreachable
        self._on_snapshot_status = on_snapshot_status
        self._on_forwards_rejected = on_forwards_rejected
        self._on_forwards_lost = on_forwards_lost
        self._max_queue = max_queue_msgs
        self._rng = rng if rng is not None else random.Random()
        self._batch_max_msgs = batch_max_msgs
        self._batch_max_bytes = batch_max_bytes
        self._window = max_unacked_batches
        self._backoff_min = backoff_min_s
        self._backoff_max = backoff_max_s
        self._chunk_bytes = snapshot_chunk_bytes
        self._peers: dict[int, _Peer] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        """Sender and snapshot tasks: cancelled by close()."""
        self._retiring: set[asyncio.Task[None]] = set()
        """Tasks shutting down removed peers: awaited by close()."""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._started = False
        self._closed = False
        self._close_done = asyncio.Event()
        # Counters, for tests and status pages.
        self.messages_sent = 0
        self.batches_sent = 0
        self.messages_dropped = 0
        for peer_id, addr in peers.items():
            if peer_id != member_id:
                self._peers[peer_id] = _Peer(peer_id, addr)

    # -- the driver's side ------------------------------------------------------------------------

    def send(self, messages: Sequence[Message]) -> None:
        """Enqueue ``messages`` for their destinations. Never blocks; see the module docstring."""
        if self._closed:
            return
        peers = self._peers
        for msg in messages:
            peer = peers.get(msg.dst)
            if peer is None:
                log.debug("dropping %s to unknown member %x", type(msg).__name__, msg.dst)
                continue
            if isinstance(msg, InstallSnapshot):
                self._start_snapshot(peer, msg)
                continue
            if len(peer.queue) >= self._max_queue:
                self.messages_dropped += 1
                if not peer.dropping:
                    peer.dropping = True
                    log.warning("send queue to member %x is full: dropping messages", peer.id)
                    self._report_unreachable(peer.id)
                continue
            peer.queue.append(msg)
            peer.wakeup.set()

    def set_peers(self, peers: Mapping[int, str]) -> None:
        """Apply a membership change: start links to new members, stop those to removed ones.

        A member whose address changed gets a fresh link (its queue is dropped).
        """
        if self._closed:
            return
        wanted = {pid: addr for pid, addr in peers.items() if pid != self._member_id}
        for pid, peer in list(self._peers.items()):
            if wanted.get(pid) != peer.addr:
                del self._peers[pid]
                self._retire(peer)
        for pid, addr in wanted.items():
            if pid not in self._peers:
                peer = _Peer(pid, addr)
                self._peers[pid] = peer
                if self._started and not self._closed:
                    self._start_sender(peer)

    async def start(self) -> None:
        if self._closed:
            raise RuntimeError("transport is closed")
        if self._started:
            return
        self._loop = asyncio.get_running_loop()
        self._started = True
        for peer in self._peers.values():
            self._start_sender(peer)

    async def close(self) -> None:
        """Cancel every task and close every channel. Idempotent; no callbacks after it starts."""
        if self._closed:
            await self._close_done.wait()
            return
        self._closed = True
        try:
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.gather(*list(self._retiring), return_exceptions=True)
            for peer in self._peers.values():
                peer.queue.clear()
                peer.forwards.clear()  # the callbacks have stopped; the driver is stopping too
                if peer.channel is not None:
                    await peer.channel.close()
                    peer.channel = None
        finally:
            self._close_done.set()

    def forward(self, to: int, forward_id: int, command: bytes) -> bool:
        """Queue ``command`` for member ``to``, to ride the next batch; never blocks.

        Fire and forget: the receiver proposes it and answers only to turn it down (reported
        with ``on_forwards_rejected``). Returns False, and sends nothing, when there is no link
        to ``to`` (an unknown member, or the transport is closed).
        """
        peer = self._peers.get(to)
        if peer is None or self._closed:
            return False
        peer.forwards.append((forward_id, command))
        peer.wakeup.set()
        return True

    # -- internals ------------------------------------------------------------------------------

    def _reject_unsent(self, peer: _Peer) -> None:
        ids = peer.take_forwards()
        if ids:
            loop = self._loop or asyncio.get_running_loop()
            loop.call_soon(self._fire_rejected, ids, None)

    def _fire_rejected(self, ids: Sequence[int], reason: bytes | None) -> None:
        if not self._closed and self._on_forwards_rejected is not None:
            self._on_forwards_rejected(ids, reason)

    def _report_unreachable(self, peer_id: int) -> None:
        loop = self._loop or asyncio.get_running_loop()
        loop.call_soon(self._fire_unreachable, peer_id)

    def _fire_unreachable(self, peer_id: int) -> None:
        if not self._closed:
            self._on_unreachable(peer_id)

    def _stub(self, peer: _Peer) -> peer_pb2_grpc.RaftAsyncStub:
        if peer.stub is None:
            peer.channel = aio.insecure_channel(peer.addr, options=PEER_CHANNEL_OPTIONS)
            peer.stub = peer_pb2_grpc.RaftStub(peer.channel)
        return peer.stub

    def _spawn(self, coro: Awaitable[None], name: str) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _start_sender(self, peer: _Peer) -> None:
        peer.task = self._spawn(self._run_sender(peer), f"raft-send-{peer.id:x}")

    def _retire(self, peer: _Peer) -> None:
        peer.queue.clear()
        self._reject_unsent(peer)
        if peer.task is None and peer.snapshot_task is None and peer.channel is None:
            return
        task = asyncio.get_running_loop().create_task(
            self._shutdown_peer(peer), name=f"raft-retire-{peer.id:x}"
        )
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def _shutdown_peer(self, peer: _Peer) -> None:
        tasks = [t for t in (peer.task, peer.snapshot_task) if t is not None]
        for task in tasks:
            task.cancel()
        try:
            await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            if peer.channel is not None:
                await peer.channel.close()
                peer.channel = None

    async def _run_sender(self, peer: _Peer) -> None:
        backoff = self._backoff_min
        while True:
            while not peer.queue and not peer.forwards:
                peer.wakeup.clear()
                await peer.wakeup.wait()
            healthy = await self._stream(peer)
            # The stream broke, or never came up. Raft retransmits what is lost; report the peer
            # so the leader probes it, and drop what queued before the failure.
            peer.failures += 1
            if healthy:
                backoff = self._backoff_min
            dropped = len(peer.queue)
            peer.queue.clear()
            self._reject_unsent(peer)
            peer.dropping = False
            self.messages_dropped += dropped
            self._report_unreachable(peer.id)
            delay = min(backoff * (0.5 + self._rng.random()), self._backoff_max)
            log.log(
                logging.WARNING if peer.failures == 1 else logging.DEBUG,
                "link to member %x at %s is down (%d queued messages dropped); retry in %.2fs",
                peer.id,
                peer.addr,
                dropped,
                delay,
            )
            await asyncio.sleep(delay)
            backoff = min(backoff * 2, self._backoff_max)

    async def _stream(self, peer: _Peer) -> bool:
        """Run one Stream call until it breaks; True if the peer acknowledged anything."""
        call = self._stub(peer).Stream()
        state = _StreamState()
        reader = asyncio.get_running_loop().create_task(
            self._read_acks(peer, call, state), name=f"raft-acks-{peer.id:x}"
        )
        try:
            while True:
                while not state.broken and (
                    (not peer.queue and not peer.forwards)
                    or state.sent - state.acked >= self._window
                ):
                    peer.wakeup.clear()
                    await peer.wakeup.wait()
                if state.broken:
                    break
                await call.write(self._take_batch(peer, state))
        except (grpc.RpcError, asyncio.InvalidStateError) as exc:
            state.error = state.error or exc
        except Exception:  # a bug; the link must survive it all the same
            log.exception("stream to member %x failed", peer.id)
        finally:
            call.cancel()
            reader.cancel()
            await asyncio.wait([reader])
            # Forwards sent and not acknowledged may or may not have been proposed.
            lost = [forward_id for _, ids in state.forwards for forward_id in ids]
            state.forwards.clear()
            if lost and not self._closed and self._on_forwards_lost is not None:
                self._on_forwards_lost(lost)
        if state.error is not None:
            log.debug("stream to member %x ended: %r", peer.id, state.error)
        return state.acked > 0

    async def _read_acks(
        self,
        peer: _Peer,
        call: aio.StreamStreamCall[peer_pb2.MessageBatch, peer_pb2.StreamAck],
        state: _StreamState,
    ) -> None:
        try:
            while True:
                ack = await call.read()
                if not isinstance(ack, peer_pb2.StreamAck):  # aio.EOF: the receiver hung up
                    break
                if ack.forward_results:
                    rejected: dict[bytes, list[int]] = {}
                    for result in ack.forward_results:
                        rejected.setdefault(result.result, []).append(result.id)
                    for reason, ids in rejected.items():
                        self._fire_rejected(ids, reason)
                if ack.seq > state.acked:
                    state.acked = ack.seq
                    unacked = state.forwards
                    while unacked and unacked[0][0] <= ack.seq:
                        unacked.popleft()
                    if peer.failures:
                        log.info("link to member %x at %s is up", peer.id, peer.addr)
                        peer.failures = 0
                peer.wakeup.set()
        except Exception as exc:  # grpc.RpcError, normally
            state.error = exc
        finally:
            state.broken = True
            peer.wakeup.set()

    def _take_batch(self, peer: _Peer, state: _StreamState) -> peer_pb2.MessageBatch:
        state.sent += 1
        batch = peer_pb2.MessageBatch(
            cluster_id=self._cluster_id, src=self._member_id, dst=peer.id, seq=state.sent
        )
        add = batch.messages.append
        queue = peer.queue
        size = count = 0
        while queue and count < self._batch_max_msgs:
            msg_size = _approx_size(queue[0])
            if count and size + msg_size > self._batch_max_bytes:
                break
            msg = queue.popleft()
            try:
                add(message_to_pb(msg))
            except ValueError:  # a value out of range for the wire: a bug upstream
                log.exception("cannot encode %r; dropped", msg)
                continue
            size += msg_size
            count += 1
        peer.dropping = False
        if peer.forwards:
            add_forward = batch.forwards.add
            for forward_id, command in peer.forwards:
                add_forward(id=forward_id, command=command)
            state.forwards.append((state.sent, [forward_id for forward_id, _ in peer.forwards]))
            peer.forwards.clear()
        batch.ack_requested = state.sent - state.acked >= self._window
        self.messages_sent += count
        self.batches_sent += 1
        return batch

    # -- snapshots ------------------------------------------------------------------------------

    def _start_snapshot(self, peer: _Peer, msg: InstallSnapshot) -> None:
        if peer.snapshot_task is not None and not peer.snapshot_task.done():
            log.info(
                "snapshot to member %x already in flight; not sending another (index %d)",
                peer.id,
                msg.snapshot.meta.index,
            )
            return
        peer.snapshot_task = self._spawn(
            self._send_snapshot(peer, msg), f"raft-snapshot-{peer.id:x}"
        )

    async def _send_snapshot(self, peer: _Peer, msg: InstallSnapshot) -> None:
        loop = asyncio.get_running_loop()
        meta = msg.snapshot.meta
        ok = False
        # One thread for the whole dump: a read transaction stays on the thread that opened it.
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="raft-snapshot")
        dump = _Dump(self._snapshot_source)
        channel = aio.insecure_channel(peer.addr, options=_SNAPSHOT_CHANNEL_OPTIONS)
        call: aio.StreamUnaryCall[peer_pb2.SnapshotChunk, peer_pb2.SnapshotAck] | None = None
        sent = 0
        try:
            chunk = await loop.run_in_executor(executor, dump.next_chunk)
            call = peer_pb2_grpc.RaftStub(channel).Snapshot()
            header = peer_pb2.SnapshotHeader(
                cluster_id=self._cluster_id,
                src=self._member_id,
                dst=peer.id,
                term=msg.term,
                meta=snapshot_meta_to_pb(meta),
                total_bytes=0,  # unknown: the dump is streamed; the last chunk's offset tells
            )
            await call.write(peer_pb2.SnapshotChunk(header=header))
            step = self._chunk_bytes
            while chunk is not None:
                for start in range(0, len(chunk), step):
                    piece = chunk[start : start + step] if len(chunk) > step else chunk
                    await call.write(peer_pb2.SnapshotChunk(offset=sent, data=piece))
                    sent += len(piece)
                chunk = await loop.run_in_executor(executor, dump.next_chunk)
            await call.write(peer_pb2.SnapshotChunk(offset=sent, sha256=dump.sha256.digest()))
            await call.done_writing()
            ack = await call
            if ack.received_bytes != sent:
                raise ConnectionError(f"peer acknowledged {ack.received_bytes} of {sent} bytes")
            ok = True
            log.info(
                "sent snapshot at index %d term %d to member %x: %d bytes",
                meta.index,
                meta.term,
                peer.id,
                sent,
            )
        except Exception as exc:
            log.warning("snapshot at index %d to member %x failed: %r", meta.index, peer.id, exc)
        finally:
            if call is not None:
                call.cancel()
            # After any next_chunk still running (if cancelled): the same thread, in order.
            executor.submit(dump.close)
            executor.shutdown(wait=False)
            await channel.close()
            if not self._closed:
                self._on_snapshot_status(peer.id, ok)


class _Dump:
    """The state-machine dump being sent. Every method runs in the send's one worker thread."""

    def __init__(self, source: SnapshotSource) -> None:
        self._source = source
        self._chunks: Iterator[bytes] | None = None
        self.sha256 = hashlib.sha256()

    def next_chunk(self) -> bytes | None:
        if self._chunks is None:
            self._chunks = iter(self._source())
        return _next_chunk(self._chunks, self.sha256)

    def close(self) -> None:
        if self._chunks is not None:
            _close_source(self._chunks)


def _next_chunk(source: Iterator[bytes], hasher: Any) -> bytes | None:
    """The next non-empty chunk of the dump (hashed), or None at its end."""
    for chunk in source:
        if chunk:
            chunk = bytes(chunk)
            hasher.update(chunk)
            return chunk
    return None


def _close_source(source: Iterator[bytes]) -> None:
    close = getattr(source, "close", None)
    if close is not None:
        try:
            close()
        except Exception:
            log.exception("closing the snapshot source failed")


# ------------------------------------------------------------------------------------------------
# Receiving side
# ------------------------------------------------------------------------------------------------


class PeerService(peer_pb2_grpc.RaftServicer):
    """The ``raftkv.peer.v1.Raft`` servicer of one member; register on its peer gRPC server."""

    def __init__(
        self,
        *,
        member_id: int,
        cluster_id: int,
        deliver: Callable[[Sequence[Message]], None],
        snapshot_dir: Path,
        forward_handler: Callable[[list[bytes]], bytes | None],
    ) -> None:
        self._member_id = member_id
        self._cluster_id = cluster_id
        self._deliver = deliver
        self._snapshot_dir = snapshot_dir
        self._forward_handler = forward_handler
        self._receiving: dict[str, _Slot] = {}
        # Counters, for tests and status pages.
        self.batches_received = 0
        self.messages_received = 0

    async def Stream(  # noqa: N802 (the generated servicer's name)
        self,
        request_iterator: AsyncIterator[peer_pb2.MessageBatch],
        context: aio.ServicerContext[peer_pb2.MessageBatch, peer_pb2.StreamAck],
    ) -> AsyncIterator[peer_pb2.StreamAck]:
        warned = False
        async for batch in request_iterator:
            if batch.cluster_id != self._cluster_id:
                log.warning(
                    "stream from member %x: cluster id %x, want %x",
                    batch.src,
                    batch.cluster_id,
                    self._cluster_id,
                )
                await context.abort(grpc.StatusCode.FAILED_PRECONDITION, CLUSTER_ID_MISMATCH)
            if batch.dst != self._member_id:
                if not warned:
                    warned = True
                    log.warning(
                        "stream from member %x is for member %x, not this one (%x): ignored",
                        batch.src,
                        batch.dst,
                        self._member_id,
                    )
            else:
                messages = self._decode(batch)
                self.batches_received += 1
                self.messages_received += len(messages)
                if messages:
                    self._deliver(messages)
            rejected: list[peer_pb2.ForwardResult] = []
            if batch.forwards:
                reason = self._forward_handler([f.command for f in batch.forwards])
                if reason is not None:
                    rejected = [
                        peer_pb2.ForwardResult(id=f.id, result=reason) for f in batch.forwards
                    ]
            if rejected or batch.ack_requested or batch.seq == 1 or batch.seq % ACK_EVERY == 0:
                yield peer_pb2.StreamAck(seq=batch.seq, forward_results=rejected)

    def _decode(self, batch: peer_pb2.MessageBatch) -> list[Message]:
        messages: list[Message] = []
        for pb in batch.messages:
            try:
                msg = message_from_pb(pb)
            except ValueError as exc:
                log.warning("dropping a malformed message from member %x: %s", batch.src, exc)
                continue
            if msg.dst != self._member_id:
                log.warning("dropping a message for member %x from %x", msg.dst, msg.src)
                continue
            messages.append(msg)
        return messages

    async def Snapshot(  # noqa: N802 (the generated servicer's name)
        self,
        request_iterator: AsyncIterator[peer_pb2.SnapshotChunk],
        context: aio.ServicerContext[peer_pb2.SnapshotChunk, peer_pb2.SnapshotAck],
    ) -> peer_pb2.SnapshotAck:
        chunks = aiter(request_iterator)
        first = await anext(chunks, None)
        if first is None or not first.HasField("header"):
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "snapshot stream must start with a header"
            )
        header = first.header
        if header.cluster_id != self._cluster_id:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, CLUSTER_ID_MISMATCH)
        if header.dst != self._member_id or header.src == 0:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"snapshot from {header.src:x} for member {header.dst:x}"
                f" reached {self._member_id:x}",
            )
        try:
            meta = snapshot_meta_from_pb(header.meta)
        except ValueError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"bad snapshot meta: {exc}")
        name = f"{meta.index:016x}-{meta.term:016x}.snap"
        final_path = self._snapshot_dir / name
        tmp_path = self._snapshot_dir / (name + ".tmp")
        # A retry of the same snapshot waits for the previous transfer to finish its cleanup.
        slot = self._receiving.get(name)
        if slot is None:
            slot = self._receiving[name] = _Slot()
        slot.users += 1
        try:
            async with slot.lock:
                received = await self._receive(first, chunks, tmp_path, final_path, header, context)
        finally:
            slot.users -= 1
            if slot.users == 0:
                del self._receiving[name]
        log.info(
            "received snapshot at index %d term %d from member %x: %d bytes",
            meta.index,
            meta.term,
            header.src,
            received,
        )
        self._deliver(
            [
                InstallSnapshot(
                    src=header.src,
                    dst=header.dst,
                    term=header.term,
                    snapshot=Snapshot(meta=meta, data=str(final_path).encode()),
                )
            ]
        )
        return peer_pb2.SnapshotAck(received_bytes=received)

    async def _receive(
        self,
        first: peer_pb2.SnapshotChunk,
        chunks: AsyncIterator[peer_pb2.SnapshotChunk],
        tmp_path: Path,
        final_path: Path,
        header: peer_pb2.SnapshotHeader,
        context: aio.ServicerContext[peer_pb2.SnapshotChunk, peer_pb2.SnapshotAck],
    ) -> int:
        """Write the chunks to ``tmp_path``, verify, and rename; delete it on any failure."""
        loop = asyncio.get_running_loop()
        # One thread per transfer runs every file operation in order, so the cleanup after a
        # failure or a cancellation always comes after the last write.
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="raft-snapshot-recv")
        file = _SnapshotFile(tmp_path, final_path)
        received = 0
        digest = b""
        done = False
        try:
            chunk: peer_pb2.SnapshotChunk | None = first
            while True:
                if chunk is None:
                    await context.abort(
                        grpc.StatusCode.DATA_LOSS, "snapshot stream ended without a checksum"
                    )
                if chunk.offset != received:
                    await context.abort(
                        grpc.StatusCode.DATA_LOSS,
                        f"snapshot chunk at offset {chunk.offset}, expected {received}",
                    )
                if chunk.data:
                    await loop.run_in_executor(executor, file.write, chunk.data)
                    received += len(chunk.data)
                if chunk.sha256:
                    digest = chunk.sha256
                    break
                chunk = await anext(chunks, None)
            if header.total_bytes and header.total_bytes != received:
                await context.abort(
                    grpc.StatusCode.DATA_LOSS,
                    f"snapshot has {received} bytes, header said {header.total_bytes}",
                )
            if digest != file.sha256.digest():
                await context.abort(grpc.StatusCode.DATA_LOSS, "snapshot sha256 mismatch")
            await loop.run_in_executor(executor, file.commit)
            done = True
        finally:
            if not done:
                # Shielded: a second cancellation must not leave the file open or in place.
                await asyncio.shield(loop.run_in_executor(executor, file.discard))
            executor.shutdown(wait=False)
        return received


class _Slot:
    """Transfers of one snapshot (by file name): they run one at a time."""

    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0


class _SnapshotFile:
    """A snapshot arriving in ``tmp_path``. Every method runs in the transfer's worker thread."""

    def __init__(self, tmp_path: Path, final_path: Path) -> None:
        self._tmp_path = tmp_path
        self._final_path = final_path
        self._file: IO[bytes] | None = None
        self.sha256 = hashlib.sha256()

    def _open(self) -> IO[bytes]:
        if self._file is None:
            self._tmp_path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self._tmp_path, "wb")  # noqa: SIM115  # closed by commit or discard
        return self._file

    def write(self, data: bytes) -> None:
        self._open().write(data)
        self.sha256.update(data)

    def commit(self) -> None:
        """Make the snapshot durable under its final name."""
        f = self._open()
        f.flush()
        os.fsync(f.fileno())
        f.close()
        os.replace(self._tmp_path, self._final_path)
        fd = os.open(self._final_path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def discard(self) -> None:
        if self._file is not None:
            self._file.close()
        self._tmp_path.unlink(missing_ok=True)
