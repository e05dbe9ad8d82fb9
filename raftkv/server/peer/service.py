"""The receiving side: :class:`PeerService`, the servicer of ``raftkv.peer.v1.Raft``.

``Stream`` decodes each batch and hands its Raft messages to the member's
:class:`~raftkv.server.peer.handler.PeerHandler`, in order; it proposes a batch's forwarded
writes at once and answers only when the member turns them down (the refusal rides an ack sent
at once). An accepted write gets no answer: the forwarding member learns its fate from the
entries the leader replicates to it. Acks are cumulative: the first batch of a stream, every
:data:`~raftkv.server.peer.options.ACK_EVERY`-th, and any batch the sender asks about.

``Snapshot`` is :class:`~raftkv.server.peer.snapshot_receiver.SnapshotReceiver`'s.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
from grpc import aio

from raftkv.pb.peer import peer_pb2, peer_pb2_grpc
from raftkv.raft.messages import Message
from raftkv.server.peer.handler import PeerHandler
from raftkv.server.peer.options import ACK_EVERY, CLUSTER_ID_MISMATCH
from raftkv.server.peer.snapshot_receiver import SnapshotReceiver
from raftkv.server.peer.wire import message_from_pb, refusal_to_pb

__all__ = ["PeerService"]

log = logging.getLogger(__name__)


class PeerService(peer_pb2_grpc.RaftServicer):
    """The ``raftkv.peer.v1.Raft`` servicer of one member; register on its peer gRPC server.

    Received snapshots are kept in ``snap_dir`` (see
    :func:`~raftkv.server.peer.snapshot_receiver.snapshot_path`).
    """

    def __init__(
        self, *, member_id: int, cluster_id: int, handler: PeerHandler, snap_dir: Path
    ) -> None:
        self._member_id = member_id
        self._cluster_id = cluster_id
        self._handler = handler
        self._snapshots = SnapshotReceiver(
            member_id=member_id, cluster_id=cluster_id, snap_dir=snap_dir, handler=handler
        )
        # Counters, for tests and status pages.
        self.batches_received = 0
        self.messages_received = 0
        self._streams: set[asyncio.Task[object]] = set()
        self._closing = False

    async def close(self) -> None:
        """End every inbound stream normally, before the server stops: a stream the server
        cancels instead is reported by gRPC as an unhandled error, traceback and all."""
        self._closing = True
        for task in tuple(self._streams):
            task.cancel()
        await asyncio.sleep(0)  # let the handlers return

    async def Stream(  # noqa: N802 (the generated servicer's name)
        self,
        request_iterator: AsyncIterator[peer_pb2.MessageBatch],
        context: aio.ServicerContext[peer_pb2.MessageBatch, peer_pb2.StreamAck],
    ) -> AsyncIterator[peer_pb2.StreamAck]:
        task = asyncio.current_task()
        if task is None or self._closing:
            return
        self._streams.add(task)
        try:
            async for ack in self._stream(request_iterator, context):
                yield ack
        except asyncio.CancelledError:
            if not self._closing:
                raise
        finally:
            self._streams.discard(task)

    async def _stream(
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
                    self._handler.deliver(messages)
            rejected = self._propose_forwards(batch) if batch.forwards else []
            if rejected or batch.ack_requested or batch.seq == 1 or batch.seq % ACK_EVERY == 0:
                yield peer_pb2.StreamAck(seq=batch.seq, forward_results=rejected)

    def _propose_forwards(self, batch: peer_pb2.MessageBatch) -> list[peer_pb2.ForwardResult]:
        """Hand the batch's forwarded writes to the member; the refusals to answer, if any."""
        refusal = self._handler.handle_forwards([f.command for f in batch.forwards])
        if refusal is None:
            return []
        refusal_pb = refusal_to_pb(refusal)
        return [peer_pb2.ForwardResult(id=f.id, refusal=refusal_pb) for f in batch.forwards]

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
        return await self._snapshots.receive(request_iterator, context)
