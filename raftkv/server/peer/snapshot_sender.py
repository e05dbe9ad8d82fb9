"""Sending one snapshot to a peer over the ``Snapshot`` RPC, on a connection of its own.

The stream is a header chunk, the state machine's image in chunks of at most ``chunk_bytes``,
and a last chunk with the SHA-256 of all the data. The image is produced by the member's
:meth:`~raftkv.server.peer.handler.PeerHandler.snapshot_chunks`, created and iterated in one
worker thread: a read transaction stays on the thread that opened it, and the loop never waits
on the disk.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
from grpc import aio

from raftkv.pb.peer import peer_pb2, peer_pb2_grpc
from raftkv.raft.messages import InstallSnapshot
from raftkv.server.peer.options import SNAPSHOT_CHANNEL_OPTIONS
from raftkv.server.peer.wire import snapshot_meta_to_pb

__all__ = ["send_snapshot"]

log = logging.getLogger(__name__)

_SnapshotCall = aio.StreamUnaryCall[peer_pb2.SnapshotChunk, peer_pb2.SnapshotAck]


async def send_snapshot(
    msg: InstallSnapshot,
    *,
    addr: str,
    cluster_id: int,
    chunks: Callable[[], Iterator[bytes]],
    chunk_bytes: int,
    credentials: grpc.ChannelCredentials | None = None,
) -> bool:
    """Stream ``msg``'s snapshot to the member at ``addr``; True once it acknowledged all of it.

    The connection is TLS with ``credentials``, plain without. Any failure is logged and
    returns False; a cancellation cleans up and propagates.
    """
    meta = msg.snapshot.meta
    # One thread for the whole dump: a read transaction stays on the thread that opened it.
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="raft-snapshot")
    dump = _Dump(chunks)
    channel = (
        aio.insecure_channel(addr, options=SNAPSHOT_CHANNEL_OPTIONS)
        if credentials is None
        else aio.secure_channel(addr, credentials, options=SNAPSHOT_CHANNEL_OPTIONS)
    )
    call: _SnapshotCall | None = None
    try:
        first = await asyncio.get_running_loop().run_in_executor(executor, dump.next_chunk)
        call = peer_pb2_grpc.RaftStub(channel).Snapshot()
        header = peer_pb2.SnapshotHeader(
            cluster_id=cluster_id,
            src=msg.src,
            dst=msg.dst,
            term=msg.term,
            meta=snapshot_meta_to_pb(meta),
            total_bytes=0,  # unknown: the dump is streamed; the last chunk's offset tells
        )
        await call.write(peer_pb2.SnapshotChunk(header=header))
        sent = await _stream_dump(call, first, dump, executor, chunk_bytes)
        ack = await call
        if ack.received_bytes != sent:
            raise ConnectionError(f"peer acknowledged {ack.received_bytes} of {sent} bytes")
    except Exception as exc:
        log.warning("snapshot at index %d to member %x failed: %r", meta.index, msg.dst, exc)
        return False
    finally:
        if call is not None:
            call.cancel()
        # After any next_chunk still running (if cancelled): the same thread, in order.
        executor.submit(dump.close)
        executor.shutdown(wait=False)
        await channel.close()
    log.info(
        "sent snapshot at index %d term %d to member %x: %d bytes",
        meta.index,
        meta.term,
        msg.dst,
        sent,
    )
    return True


async def _stream_dump(
    call: _SnapshotCall,
    chunk: bytes | None,
    dump: _Dump,
    executor: ThreadPoolExecutor,
    chunk_bytes: int,
) -> int:
    """Write the dump from ``chunk`` on, then its checksum; returns the bytes sent."""
    loop = asyncio.get_running_loop()
    sent = 0
    while chunk is not None:
        for start in range(0, len(chunk), chunk_bytes):
            piece = chunk[start : start + chunk_bytes] if len(chunk) > chunk_bytes else chunk
            await call.write(peer_pb2.SnapshotChunk(offset=sent, data=piece))
            sent += len(piece)
        chunk = await loop.run_in_executor(executor, dump.next_chunk)
    await call.write(peer_pb2.SnapshotChunk(offset=sent, sha256=dump.sha256.digest()))
    await call.done_writing()
    return sent


class _Dump:
    """The state-machine dump being sent. Every method runs in the send's one worker thread."""

    def __init__(self, source: Callable[[], Iterator[bytes]]) -> None:
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
