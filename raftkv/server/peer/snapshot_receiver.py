"""Receiving snapshots (the ``Snapshot`` RPC) into files named by their index and term.

A snapshot arrives as a header chunk, its data in order, and a last chunk with the SHA-256 of
all the data. The receiver writes it to a temporary file, verifies it, makes it durable under
:func:`snapshot_path` and only then hands its member an InstallSnapshot whose ``data`` is empty:
as in etcd's snap package, the member finds the file from the snapshot's metadata, with
:class:`ReceivedSnapshots`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO

import grpc
from grpc import aio

from raftkv.pb.peer import peer_pb2
from raftkv.raft.messages import InstallSnapshot
from raftkv.raft.types import Snapshot, SnapshotMeta
from raftkv.server.peer.handler import PeerHandler
from raftkv.server.peer.options import CLUSTER_ID_MISMATCH
from raftkv.server.peer.wire import snapshot_meta_from_pb

__all__ = ["ReceivedSnapshots", "SnapshotReceiver", "snapshot_path"]

log = logging.getLogger(__name__)

_Context = aio.ServicerContext[peer_pb2.SnapshotChunk, peer_pb2.SnapshotAck]


def snapshot_path(snap_dir: Path, index: int, term: int) -> Path:
    """Where a received snapshot at ``index`` and ``term`` is kept until its member restores it."""
    return snap_dir / f"{index:016x}-{term:016x}.snap"


class ReceivedSnapshots:
    """The member's side of the snapshot directory: received images, found by their meta."""

    def __init__(self, snap_dir: Path) -> None:
        self.snap_dir = snap_dir

    def open(self, meta: SnapshotMeta) -> IO[bytes] | None:
        """The received image for ``meta``, open for reading; None if there is none."""
        try:
            return snapshot_path(self.snap_dir, meta.index, meta.term).open("rb")
        except FileNotFoundError:
            return None

    def remove(self, meta: SnapshotMeta) -> None:
        """Delete the image for ``meta`` (once restored); nothing if there is none."""
        snapshot_path(self.snap_dir, meta.index, meta.term).unlink(missing_ok=True)


class SnapshotReceiver:
    """Serves the ``Snapshot`` RPC for :class:`~raftkv.server.peer.service.PeerService`."""

    def __init__(
        self, *, member_id: int, cluster_id: int, snap_dir: Path, handler: PeerHandler
    ) -> None:
        self._member_id = member_id
        self._cluster_id = cluster_id
        self._snap_dir = snap_dir
        self._handler = handler
        self._receiving: dict[Path, _Slot] = {}

    async def receive(
        self, request_iterator: AsyncIterator[peer_pb2.SnapshotChunk], context: _Context
    ) -> peer_pb2.SnapshotAck:
        chunks = aiter(request_iterator)
        first = await anext(chunks, None)
        if first is None or not first.HasField("header"):
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "snapshot stream must start with a header"
            )
        header = first.header
        meta = await self._check_header(header, context)
        final_path = snapshot_path(self._snap_dir, meta.index, meta.term)
        # A retry of the same snapshot waits for the previous transfer to finish its cleanup.
        slot = self._receiving.get(final_path)
        if slot is None:
            slot = self._receiving[final_path] = _Slot()
        slot.users += 1
        try:
            async with slot.lock:
                received = await _receive(first, chunks, final_path, header, context)
        finally:
            slot.users -= 1
            if slot.users == 0:
                del self._receiving[final_path]
        log.info(
            "received snapshot at index %d term %d from member %x: %d bytes",
            meta.index,
            meta.term,
            header.src,
            received,
        )
        # The image stays in its file: the member finds it by meta (ReceivedSnapshots).
        snapshot = Snapshot(meta=meta, data=b"")
        self._handler.deliver([InstallSnapshot(header.src, header.dst, header.term, snapshot)])
        return peer_pb2.SnapshotAck(received_bytes=received)

    async def _check_header(
        self, header: peer_pb2.SnapshotHeader, context: _Context
    ) -> SnapshotMeta:
        if header.cluster_id != self._cluster_id:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, CLUSTER_ID_MISMATCH)
        if header.dst != self._member_id or header.src == 0:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"snapshot from {header.src:x} for member {header.dst:x}"
                f" reached {self._member_id:x}",
            )
        try:
            return snapshot_meta_from_pb(header.meta)
        except ValueError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"bad snapshot meta: {exc}")


async def _receive(
    first: peer_pb2.SnapshotChunk,
    chunks: AsyncIterator[peer_pb2.SnapshotChunk],
    final_path: Path,
    header: peer_pb2.SnapshotHeader,
    context: _Context,
) -> int:
    """Write the chunks to a temporary file, verify, and rename it to ``final_path``; delete it
    on any failure. Returns the bytes received."""
    loop = asyncio.get_running_loop()
    # One thread per transfer runs every file operation in order, so the cleanup after a
    # failure or a cancellation always comes after the last write.
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="raft-snapshot-recv")
    file = _SnapshotFile(final_path.with_name(final_path.name + ".tmp"), final_path)
    received = 0
    digest = b""
    done = False
    refused: _Refused | None = None
    try:
        chunk: peer_pb2.SnapshotChunk | None = first
        while True:
            if chunk is None:
                raise _Refused("snapshot stream ended without a checksum")
            if chunk.offset != received:
                raise _Refused(f"snapshot chunk at offset {chunk.offset}, expected {received}")
            if chunk.data:
                await loop.run_in_executor(executor, file.write, chunk.data)
                received += len(chunk.data)
            if chunk.sha256:
                digest = chunk.sha256
                break
            chunk = await anext(chunks, None)
        if header.total_bytes and header.total_bytes != received:
            raise _Refused(f"snapshot has {received} bytes, header said {header.total_bytes}")
        if digest != file.sha256.digest():
            raise _Refused("snapshot sha256 mismatch")
        await loop.run_in_executor(executor, file.commit)
        done = True
    except _Refused as exc:
        refused = exc
    finally:
        if not done:
            # Shielded: a second cancellation must not leave the file open or in place.
            await asyncio.shield(loop.run_in_executor(executor, file.discard))
        executor.shutdown(wait=False)
    if refused is not None:
        # Only now, with the partial file gone: the sender may look, or send again, at once.
        await context.abort(grpc.StatusCode.DATA_LOSS, str(refused))
    return received


class _Refused(Exception):
    """A transfer turned down as DATA_LOSS, once its partial file has been discarded."""


class _Slot:
    """Transfers of one snapshot (by file): they run one at a time."""

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
