"""etcd's ``etcdserverpb.Maintenance`` service over a :class:`~raftkv.server.api.NodeApi`.

What etcdctl sees:

* Status (``endpoint status``): version, database size, leader, raft index/term/applied index,
  learner flag, and etcd's ``errors`` ("etcdserver: no leader", active alarms).
* Hash and HashKV (``endpoint hashkv``): CRC-32 of the MVCC key space. HashKV is comparable
  across members at the same revision; Hash is the same hash at the newest revision (etcd's
  Hash covers its whole bbolt file and is documented as test-only).
* Defragment (``defrag``), Alarm (``alarm list``), MoveLeader (``move-leader``).
* Snapshot (``snapshot save``): the node's snapshot stream, then one last message whose blob is
  the sha256 of every byte sent before it, as etcd does. etcdctl 3.4 refuses a download whose
  size is not 32 more than a multiple of 512 (its bbolt files are made of pages), so the data is
  padded with zero bytes to a multiple of 512 before the digest. raftkv's snapshot format is
  self-delimiting (an end record and a CRC-32), so a reader ignores the padding.

Headers follow etcd: Status, Hash, HashKV and Alarm carry the full header; Defragment and
MoveLeader answer with an empty one, as etcd does.
"""

from __future__ import annotations

import asyncio
import hashlib
import tempfile
from collections.abc import AsyncIterator, Sequence
from typing import Protocol, runtime_checkable

import grpc

from raftkv.pb.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from raftkv.server import convert
from raftkv.server.api import NodeApi
from raftkv.server.errors import NoLeaderError
from raftkv.server.kv_service import DEFAULT_REQUEST_TIMEOUT_S, GRACE_S, call_timeout_s
from raftkv.server.status import Context, stream_rpc, unary_rpc

__all__ = ["ETCD_VERSION", "AlarmSource", "MaintenanceService"]

ETCD_VERSION = "3.4.0"
"""The etcd version raftkv's API corresponds to; etcdctl prints it and clients parse it."""

SNAPSHOT_CHUNK_BYTES = 64 * 1024
_SNAPSHOT_PAGE_BYTES = 512
_SPOOL_MEMORY_BYTES = 32 << 20
_SPOOL_READ_BYTES = 1 << 20


@runtime_checkable
class AlarmSource(Protocol):
    """Optional on a node: the active alarms, as (member id, ``rpc_pb2.AlarmType`` value)."""

    def alarms(self) -> Sequence[tuple[int, int]]: ...


def _unimplemented_details(method: str) -> str:
    return f"etcdserverpb.Maintenance/{method} is not implemented by raftkv"


class MaintenanceService(rpc_pb2_grpc.MaintenanceServicer):
    def __init__(
        self,
        node: NodeApi,
        *,
        request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S,
        snapshot_chunk_bytes: int = SNAPSHOT_CHUNK_BYTES,
    ) -> None:
        self._node = node
        self._request_timeout_s = request_timeout_s
        self._chunk_bytes = snapshot_chunk_bytes

    def _header(self, revision: int) -> rpc_pb2.ResponseHeader:
        node = self._node
        return convert.header(node.cluster_id, node.member_id, revision, node.raft_term)

    def _alarms(self, alarm: int = rpc_pb2.NONE) -> list[rpc_pb2.AlarmMember]:
        node = self._node
        if not isinstance(node, AlarmSource):
            return []
        return [
            rpc_pb2.AlarmMember(memberID=member, alarm=rpc_pb2.AlarmType.ValueType(kind))
            for member, kind in node.alarms()
            if alarm == rpc_pb2.NONE or kind == alarm
        ]

    # -- the RPCs -------------------------------------------------------------------------------

    @unary_rpc
    async def Alarm(  # noqa: N802 (the generated servicer's name)
        self, request: rpc_pb2.AlarmRequest, context: Context
    ) -> rpc_pb2.AlarmResponse:
        # ACTIVATE and DEACTIVATE are accepted and change nothing: alarms are raised by the
        # node itself (NOSPACE when the backend quota is exceeded).
        alarm = request.alarm if request.action == rpc_pb2.AlarmRequest.GET else rpc_pb2.NONE
        return rpc_pb2.AlarmResponse(
            header=self._header(self._node.store.current_revision()),
            alarms=self._alarms(alarm),
        )

    @unary_rpc
    async def Status(  # noqa: N802 (the generated servicer's name)
        self, request: rpc_pb2.StatusRequest, context: Context
    ) -> rpc_pb2.StatusResponse:
        st = self._node.status()
        errors = [] if st.leader else [NoLeaderError.text]
        errors += [
            f"memberID:{a.memberID} alarm:{rpc_pb2.AlarmType.Name(a.alarm)} "
            for a in self._alarms()
        ]
        return rpc_pb2.StatusResponse(
            header=rpc_pb2.ResponseHeader(
                cluster_id=st.cluster_id,
                member_id=st.member_id,
                revision=st.revision,
                raft_term=st.raft_term,
            ),
            version=ETCD_VERSION,
            dbSize=st.db_size_bytes,
            leader=st.leader,
            raftIndex=st.raft_index,
            raftTerm=st.raft_term,
            raftAppliedIndex=st.raft_applied_index,
            errors=errors,
            dbSizeInUse=st.db_size_in_use_bytes,
            isLearner=st.is_learner,
        )

    @unary_rpc
    async def Defragment(  # noqa: N802 (the generated servicer's name)
        self, request: rpc_pb2.DefragmentRequest, context: Context
    ) -> rpc_pb2.DefragmentResponse:
        timeout_s = call_timeout_s(context, self._request_timeout_s)
        async with asyncio.timeout(timeout_s + GRACE_S):
            await self._node.defragment()
        return rpc_pb2.DefragmentResponse()

    @unary_rpc
    async def Hash(  # noqa: N802 (the generated servicer's name)
        self, request: rpc_pb2.HashRequest, context: Context
    ) -> rpc_pb2.HashResponse:
        result = self._node.store.hash_kv(0)
        return rpc_pb2.HashResponse(header=self._header(result.hash_revision), hash=result.hash)

    @unary_rpc
    async def HashKV(  # noqa: N802 (the generated servicer's name)
        self, request: rpc_pb2.HashKVRequest, context: Context
    ) -> rpc_pb2.HashKVResponse:
        result = self._node.store.hash_kv(request.revision)
        return rpc_pb2.HashKVResponse(
            header=self._header(result.hash_revision),
            hash=result.hash,
            compact_revision=result.compact_revision,
            hash_revision=result.hash_revision,
        )

    @stream_rpc
    async def Snapshot(  # noqa: N802 (the generated servicer's name)
        self, request: rpc_pb2.SnapshotRequest, context: Context
    ) -> AsyncIterator[rpc_pb2.SnapshotResponse]:
        header = self._header(self._node.store.current_revision())
        # Spool first: remaining_bytes must count down from the exact total, as etcd's does.
        with tempfile.SpooledTemporaryFile(max_size=_SPOOL_MEMORY_BYTES) as spool:
            total = 0
            async for chunk in self._node.snapshot_stream():
                await asyncio.to_thread(spool.write, chunk)
                total += len(chunk)
            pad = -total % _SNAPSHOT_PAGE_BYTES
            if pad:
                spool.write(bytes(pad))
                total += pad
            spool.seek(0)
            digest = hashlib.sha256()
            sent = 0
            first = True
            while sent < total:
                block = await asyncio.to_thread(spool.read, _SPOOL_READ_BYTES)
                if not block:
                    raise OSError("the snapshot spool file ended early")
                digest.update(block)
                for start in range(0, len(block), self._chunk_bytes):
                    blob = block[start : start + self._chunk_bytes]
                    sent += len(blob)
                    resp = rpc_pb2.SnapshotResponse(remaining_bytes=total - sent, blob=blob)
                    if first:  # the first message fixes the snapshot's point in time
                        resp.header.CopyFrom(header)
                        resp.version = ETCD_VERSION
                        first = False
                    yield resp
        yield rpc_pb2.SnapshotResponse(remaining_bytes=0, blob=digest.digest())

    @unary_rpc
    async def MoveLeader(  # noqa: N802 (the generated servicer's name)
        self, request: rpc_pb2.MoveLeaderRequest, context: Context
    ) -> rpc_pb2.MoveLeaderResponse:
        timeout_s = call_timeout_s(context, self._request_timeout_s)
        async with asyncio.timeout(timeout_s + GRACE_S):
            await self._node.move_leader(request.targetID, timeout_s=timeout_s)
        return rpc_pb2.MoveLeaderResponse()

    async def Downgrade(  # noqa: N802 (the generated servicer's name)
        self, request: rpc_pb2.DowngradeRequest, context: Context
    ) -> rpc_pb2.DowngradeResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, _unimplemented_details("Downgrade"))
