"""The sending side: :class:`GrpcTransport`, one long-lived ``Stream`` call per peer.

- ``send()`` never blocks and never awaits. It appends each message to its destination's bounded
  queue; a full queue drops the message and reports the peer unreachable (once per burst of
  drops). Raft retransmits whatever is lost, so dropping is always safe, while waiting on a slow
  peer would stall the leader for everyone.
- One sender task per peer keeps one long-lived ``Stream`` call open. It waits until the queue is
  non-empty, then takes everything queued (up to ``batch_max_msgs`` messages or about
  ``batch_max_bytes``) into one ``MessageBatch``. At most ``max_unacked_batches`` may be
  unacknowledged, which bounds what is in flight, and a slow receiver makes the batches larger
  rather than more numerous. The receiver acknowledges cumulatively (see
  :mod:`raftkv.server.peer.service`): an ack per batch would double the stream operations, each a
  trip through gRPC's poller.
- When the stream breaks (or cannot be opened: the peer is down), the task reports the peer
  unreachable, drops everything queued before the failure, and tries again after an exponential
  backoff with jitter. Messages queued during the backoff go out on the next attempt, or are
  dropped if it fails too: a dead peer never holds more than ``max_queue_msgs`` messages.
- An InstallSnapshot message starts a snapshot send on its own connection (at most one per peer at
  a time, :mod:`raftkv.server.peer.snapshot_sender`); the result goes to the handler's
  ``report_snapshot``.
- ``forward()`` queues a follower's client write for the leader, to ride the next batch, fire and
  forget, as etcd forwards a proposal. The receiver answers only to turn writes down; the handler
  hears of those (``forwards_rejected``) and of writes lost with a broken stream
  (``forwards_lost``). Answering every forward cost an ack (a stream write and read) per batch of
  forwards, and a unary RPC per forward cost as much again as the stream operations it replaces.
- With ``credentials`` (a callable giving ``grpc.ChannelCredentials``), every link and snapshot
  connection is TLS. The callable is asked again before each new stream attempt; when it gives
  other credentials (the certificate files were replaced), the old channel is closed and the
  next attempt dials with the new ones. A healthy stream keeps its connection: TLS sessions are
  not cut short by a rotation, and a peer that stops accepting the old certificate breaks the
  stream, which reconnects with the new one.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence

import grpc
from grpc import aio

from raftkv.pb.peer import peer_pb2, peer_pb2_grpc
from raftkv.raft.messages import AppendEntries, InstallSnapshot, Message
from raftkv.server.peer.handler import PeerHandler, Refusal
from raftkv.server.peer.options import MAX_MESSAGE_BYTES, PEER_CHANNEL_OPTIONS
from raftkv.server.peer.snapshot_sender import send_snapshot
from raftkv.server.peer.wire import message_to_pb, refusal_from_pb

__all__ = ["ChannelCredentials", "GrpcTransport"]

ChannelCredentials = Callable[[], grpc.ChannelCredentials]
"""Gives the credentials to dial peers with; the same object until they change."""

log = logging.getLogger(__name__)


def _approx_size(msg: Message) -> int:
    """A cheap estimate of a message's encoded size, to bound batches."""
    if type(msg) is AppendEntries:
        return 48 + sum([len(e.data) for e in msg.entries]) + 24 * len(msg.entries)
    return 64  # the other kinds are small (a read-index context is a few bytes)


class _Peer:
    """Sending state for one peer. Only touched on the event loop."""

    __slots__ = (
        "addr",
        "channel",
        "channel_credentials",
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
        self.channel_credentials: grpc.ChannelCredentials | None = None
        """The credentials ``channel`` was opened with (None: an insecure channel)."""
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

    ``handler`` is the member: it hears of unreachable peers, snapshot results and the fate of
    forwarded writes, always on the event loop and never from inside ``send()`` or ``forward()``,
    and never once ``close()`` has begun.
    """

    def __init__(
        self,
        *,
        member_id: int,
        cluster_id: int,
        peers: Mapping[int, str],
        handler: PeerHandler,
        max_queue_msgs: int = 8192,
        rng: random.Random | None = None,
        batch_max_msgs: int = 1024,
        batch_max_bytes: int = 4 * 1024 * 1024,
        max_unacked_batches: int = 16,
        backoff_min_s: float = 0.05,
        backoff_max_s: float = 2.0,
        snapshot_chunk_bytes: int = 1024 * 1024,
        credentials: ChannelCredentials | None = None,
    ) -> None:
        if max_queue_msgs < 1 or batch_max_msgs < 1 or max_unacked_batches < 1:
            raise ValueError("queue, batch and window limits must be positive")
        if not 0 < backoff_min_s <= backoff_max_s:
            raise ValueError("need 0 < backoff_min_s <= backoff_max_s")
        if not 0 < snapshot_chunk_bytes <= MAX_MESSAGE_BYTES // 2:
            raise ValueError("snapshot_chunk_bytes out of range")
        self._member_id = member_id
        self._cluster_id = cluster_id
        self._handler = handler
        self._max_queue = max_queue_msgs
        self._rng = rng if rng is not None else random.Random()
        self._batch_max_msgs = batch_max_msgs
        self._batch_max_bytes = batch_max_bytes
        self._window = max_unacked_batches
        self._backoff_min = backoff_min_s
        self._backoff_max = backoff_max_s
        self._chunk_bytes = snapshot_chunk_bytes
        self._credentials = credentials
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

    # -- the member's side ----------------------------------------------------------------------

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

    def peers_up(self) -> list[int]:
        """Peers whose link has not broken since it last carried an acknowledged batch (a
        member that stops asks, so as not to hand leadership to a peer that is gone)."""
        return [p.id for p in self._peers.values() if p.failures == 0]

    def forward(self, to: int, forward_id: int, command: bytes) -> bool:
        """Queue ``command`` for member ``to``, to ride the next batch; never blocks.

        Fire and forget: the receiver proposes it and answers only to turn it down (reported
        to the handler's ``forwards_rejected``). Returns False, and sends nothing, when there is
        no link to ``to`` (an unknown member, or the transport is closed).
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

    def _fire_rejected(self, ids: Sequence[int], refusal: Refusal | None) -> None:
        if not self._closed:
            self._handler.forwards_rejected(ids, refusal)

    def _report_unreachable(self, peer_id: int) -> None:
        loop = self._loop or asyncio.get_running_loop()
        loop.call_soon(self._fire_unreachable, peer_id)

    def _fire_unreachable(self, peer_id: int) -> None:
        if not self._closed:
            self._handler.report_unreachable(peer_id)

    def _stub(self, peer: _Peer) -> peer_pb2_grpc.RaftAsyncStub:
        if peer.stub is None:
            if self._credentials is None:
                peer.channel = aio.insecure_channel(peer.addr, options=PEER_CHANNEL_OPTIONS)
            else:
                peer.channel_credentials = self._credentials()
                peer.channel = aio.secure_channel(
                    peer.addr, peer.channel_credentials, options=PEER_CHANNEL_OPTIONS
                )
            peer.stub = peer_pb2_grpc.RaftStub(peer.channel)
        return peer.stub

    async def _drop_stale_channel(self, peer: _Peer) -> None:
        """Close ``peer``'s channel if the certificates changed since it was opened."""
        if self._credentials is None or peer.channel is None:
            return
        if self._credentials() is peer.channel_credentials:
            return
        log.info("link to member %x: certificates changed; reconnecting with the new ones", peer.id)
        channel, peer.channel, peer.stub = peer.channel, None, None
        await channel.close()

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
            await self._drop_stale_channel(peer)
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
            if lost and not self._closed:
                self._handler.forwards_lost(lost)
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
                    self._report_refusals(ack.forward_results)
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

    def _report_refusals(self, results: Sequence[peer_pb2.ForwardResult]) -> None:
        """Report the forwards the receiver turned down, grouped by its reason."""
        rejected: dict[Refusal | None, list[int]] = {}
        for result in results:
            rejected.setdefault(refusal_from_pb(result.refusal), []).append(result.id)
        for refusal, ids in rejected.items():
            self._fire_rejected(ids, refusal)

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
        ok = False
        try:
            ok = await send_snapshot(
                msg,
                addr=peer.addr,
                cluster_id=self._cluster_id,
                chunks=self._handler.snapshot_chunks,
                chunk_bytes=self._chunk_bytes,
                credentials=None if self._credentials is None else self._credentials(),
            )
        finally:
            # Also when cancelled (the peer was removed): the core must hear the send ended.
            if not self._closed:
                self._handler.report_snapshot(peer.id, ok)
