"""etcd's Maintenance and Cluster services and gRPC health, over gRPC against a FakeNode."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest

from raftkv.kv.backend import MemoryBackend
from raftkv.kv.mvcc import MVCCStore
from raftkv.kv.state_machine import load_chunks
from raftkv.pb.etcdserverpb import rpc_pb2 as pb
from raftkv.pb.etcdserverpb import rpc_pb2_grpc
from raftkv.pb.health import health_pb2, health_pb2_grpc
from raftkv.server.api import Member
from raftkv.server.fake_node import FakeNode
from raftkv.server.grpc_server import add_client_services, client_server_options
from raftkv.server.maintenance_service import ETCD_VERSION, MaintenanceService

C = grpc.StatusCode
OTHER = Member(0x1234, "other", ("http://127.0.0.1:2480",), ("http://127.0.0.1:2479",))


@contextlib.asynccontextmanager
async def serving(node: FakeNode, **options: Any) -> AsyncIterator[grpc.aio.Channel]:
    server = grpc.aio.server(options=client_server_options(1536 * 1024))
    chunk = options.pop("snapshot_chunk_bytes", None)
    add_client_services(server, node, **options)
    if chunk is not None:  # registered again, small chunks: the last registration wins
        rpc_pb2_grpc.add_MaintenanceServicer_to_server(
            MaintenanceService(node, snapshot_chunk_bytes=chunk), server
        )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield channel
    finally:
        await server.stop(None)


def run(
    scenario: Callable[[grpc.aio.Channel, FakeNode], Awaitable[None]],
    node: FakeNode | None = None,
    **options: Any,
) -> None:
    node = node or FakeNode(other_members=[OTHER])

    async def main() -> None:
        async with serving(node, **options) as channel:
            await scenario(channel, node)

    asyncio.run(main())


async def expect_error(call: Awaitable[Any], code: grpc.StatusCode, details: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    assert (info.value.code(), info.value.details()) == (code, details)


async def fill(channel: grpc.aio.Channel, n: int, size: int = 10) -> None:
    kv = rpc_pb2_grpc.KVStub(channel)
    for i in range(n):
        await kv.Put(pb.PutRequest(key=b"key%04d" % i, value=b"v" * size))


# -- Maintenance ---------------------------------------------------------------------------------


def test_status() -> None:
    async def scenario(channel: grpc.aio.Channel, node: FakeNode) -> None:
        m = rpc_pb2_grpc.MaintenanceStub(channel)
        await fill(channel, 3)
        st = await m.Status(pb.StatusRequest())
        assert st.header == pb.ResponseHeader(
            cluster_id=node.cluster_id, member_id=node.member_id, revision=4, raft_term=2
        )
        assert st.version == ETCD_VERSION == "3.4.0"
        assert st.leader == node.member_id and st.raftTerm == 2
        assert st.raftIndex == st.raftAppliedIndex == node.index == 4
        assert st.dbSize == st.dbSizeInUse == node.backend.size_bytes() > 0
        assert not st.isLearner and list(st.errors) == []

        node.leader = 0
        node.alarm_list.append((node.member_id, pb.NOSPACE))
        st = await m.Status(pb.StatusRequest())
        assert st.leader == 0
        assert list(st.errors) == [
            "etcdserver: no leader",
            f"memberID:{node.member_id} alarm:NOSPACE ",
        ]

    run(scenario)


def test_alarm_list_activate_deactivate() -> None:
    async def scenario(channel: grpc.aio.Channel, node: FakeNode) -> None:
        m = rpc_pb2_grpc.MaintenanceStub(channel)
        resp = await m.Alarm(pb.AlarmRequest(action=pb.AlarmRequest.GET))
        assert list(resp.alarms) == [] and resp.header.member_id == node.member_id
        node.alarm_list.append((7, pb.CORRUPT))
        resp = await m.Alarm(pb.AlarmRequest(action=pb.AlarmRequest.GET))
        assert [(a.memberID, a.alarm) for a in resp.alarms] == [(7, pb.CORRUPT)]
        resp = await m.Alarm(pb.AlarmRequest(action=pb.AlarmRequest.GET, alarm=pb.NOSPACE))
        assert list(resp.alarms) == []
        for action in (pb.AlarmRequest.ACTIVATE, pb.AlarmRequest.DEACTIVATE):
            resp = await m.Alarm(pb.AlarmRequest(action=action, memberID=7, alarm=pb.NOSPACE))
            assert [(a.memberID, a.alarm) for a in resp.alarms] == [(7, pb.CORRUPT)]

    run(scenario)


def test_nospace_alarm_follows_the_quota() -> None:
    async def scenario(channel: grpc.aio.Channel, node: FakeNode) -> None:
        m = rpc_pb2_grpc.MaintenanceStub(channel)
        assert list((await m.Alarm(pb.AlarmRequest())).alarms) == []
        await fill(channel, 1, size=2000)
        resp = await m.Alarm(pb.AlarmRequest())
        assert [(a.memberID, a.alarm) for a in resp.alarms] == [(node.member_id, pb.NOSPACE)]

    run(scenario, FakeNode(quota_bytes=1000))


def test_hash_and_hashkv() -> None:
    async def scenario(channel: grpc.aio.Channel, node: FakeNode) -> None:
        m = rpc_pb2_grpc.MaintenanceStub(channel)
        kv = rpc_pb2_grpc.KVStub(channel)
        await fill(channel, 5)  # revisions 2..6
        latest = await m.HashKV(pb.HashKVRequest())
        assert latest.header.revision == latest.hash_revision == 6
        assert latest.header.member_id == node.member_id
        assert latest.hash == node.store.hash_kv(0).hash and latest.compact_revision == 0
        assert (await m.Hash(pb.HashRequest())).hash == latest.hash

        at4 = await m.HashKV(pb.HashKVRequest(revision=4))
        assert at4.header.revision == at4.hash_revision == 4 and at4.hash != latest.hash

        await kv.Compact(pb.CompactionRequest(revision=5))
        after = await m.HashKV(pb.HashKVRequest(revision=6))
        assert after.compact_revision == 5
        await expect_error(
            m.HashKV(pb.HashKVRequest(revision=4)),
            C.OUT_OF_RANGE,
            "etcdserver: mvcc: required revision has been compacted",
        )
        await expect_error(
            m.HashKV(pb.HashKVRequest(revision=60)),
            C.OUT_OF_RANGE,
            "etcdserver: mvcc: required revision is a future revision",
        )

    run(scenario)


def test_hashkv_agrees_across_members_with_the_same_history() -> None:
    hashes = []
    for member_id in (1, 2):

        async def scenario(channel: grpc.aio.Channel, node: FakeNode) -> None:
            await fill(channel, 20)
            m = rpc_pb2_grpc.MaintenanceStub(channel)
            hashes.append((await m.HashKV(pb.HashKVRequest(revision=15))).hash)

        run(scenario, FakeNode(member_id=member_id))
    assert hashes[0] == hashes[1]


def test_defragment() -> None:
    async def scenario(channel: grpc.aio.Channel, node: FakeNode) -> None:
        m = rpc_pb2_grpc.MaintenanceStub(channel)
        resp = await m.Defragment(pb.DefragmentRequest())
        assert node.defragments == 1 and not resp.HasField("header")  # as etcd

    run(scenario)


@pytest.mark.parametrize("chunk", [1000, 64 * 1024])
def test_snapshot_stream_ends_with_etcds_sha256(chunk: int) -> None:
    async def scenario(channel: grpc.aio.Channel, node: FakeNode) -> None:
        await fill(channel, 200, size=100)
        raw = b"".join(node.state_machine.snapshot_chunks())
        m = rpc_pb2_grpc.MaintenanceStub(channel)
        msgs = [msg async for msg in m.Snapshot(pb.SnapshotRequest())]
        data = b"".join(msg.blob for msg in msgs[:-1])
        digest = msgs[-1].blob
        # etcdctl 3.4: the download is data + sha256(data), data a whole number of 512-byte
        # pages (it checks size % 512 == 32).
        assert (len(data) + len(digest)) % 512 == 32
        assert digest == hashlib.sha256(data).digest()
        assert data[: len(raw)] == raw and data[len(raw) :] == bytes(len(data) - len(raw))
        assert len(data) - len(raw) < 512
        # remaining_bytes counts down to 0; the digest message says 0 too.
        remaining = [msg.remaining_bytes for msg in msgs]
        assert remaining[-2:] == [0, 0]
        sent = 0
        for msg in msgs[:-1]:
            sent += len(msg.blob)
            assert msg.remaining_bytes == len(data) - sent
            assert len(msg.blob) <= chunk
        if chunk == 1000:
            assert len(msgs) > 10
        # The first message fixes the point in time; the others carry no header.
        assert msgs[0].header.revision == 201 and msgs[0].header.member_id == node.member_id
        assert msgs[0].version == ETCD_VERSION
        assert not any(msg.HasField("header") for msg in msgs[1:])
        # The snapshot restores (a reader stops at the dump's end record: padding ignored).
        restored = MemoryBackend()
        load_chunks(restored, [raw])
        assert MVCCStore(restored).hash_kv(0) == node.store.hash_kv(0)

    run(scenario, snapshot_chunk_bytes=chunk)


def test_snapshot_of_a_fresh_node() -> None:
    async def scenario(channel: grpc.aio.Channel, node: FakeNode) -> None:
        m = rpc_pb2_grpc.MaintenanceStub(channel)
        msgs = [msg async for msg in m.Snapshot(pb.SnapshotRequest())]
        data = b"".join(msg.blob for msg in msgs[:-1])
        assert len(data) % 512 == 0 and msgs[-1].blob == hashlib.sha256(data).digest()

    run(scenario)


def test_move_leader() -> None:
    async def scenario(channel: grpc.aio.Channel, node: FakeNode) -> None:
        m = rpc_pb2_grpc.MaintenanceStub(channel)
        bad = "etcdserver: bad leader transferee"
        await expect_error(
            m.MoveLeader(pb.MoveLeaderRequest(targetID=42)), C.FAILED_PRECONDITION, bad
        )
        await expect_error(m.MoveLeader(pb.MoveLeaderRequest()), C.FAILED_PRECONDITION, bad)
        resp = await m.MoveLeader(pb.MoveLeaderRequest(targetID=OTHER.id))
        assert node.leader == OTHER.id and node.moves == [OTHER.id]
        assert not resp.HasField("header")  # as etcd
        await expect_error(
            m.MoveLeader(pb.MoveLeaderRequest(targetID=node.member_id)),
            C.FAILED_PRECONDITION,
            "etcdserver: not leader",
        )
        node.leader, node.stalled = node.member_id, True
        await expect_error(
            m.MoveLeader(pb.MoveLeaderRequest(targetID=OTHER.id)),
            C.UNAVAILABLE,
            "etcdserver: request timed out",
        )

    run(scenario, request_timeout_s=0.2)


def test_downgrade_is_unimplemented() -> None:
    async def scenario(channel: grpc.aio.Channel, node: FakeNode) -> None:
        m = rpc_pb2_grpc.MaintenanceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await m.Downgrade(pb.DowngradeRequest())
        assert info.value.code() == C.UNIMPLEMENTED

    run(scenario)


# -- Cluster --------------------------------------------------------------------------------------


def test_member_list() -> None:
    async def scenario(channel: grpc.aio.Channel, node: FakeNode) -> None:
        c = rpc_pb2_grpc.ClusterStub(channel)
        await fill(channel, 2)
        resp = await c.MemberList(pb.MemberListRequest())
        # etcd's membership calls leave the header's revision at 0.
        assert resp.header == pb.ResponseHeader(
            cluster_id=node.cluster_id, member_id=node.member_id, raft_term=2
        )
        assert [(m.ID, m.name, list(m.peerURLs), list(m.clientURLs)) for m in resp.members] == [
            (node.member_id, "default", ["http://localhost:2380"], ["http://localhost:2379"]),
            (OTHER.id, "other", ["http://127.0.0.1:2480"], ["http://127.0.0.1:2479"]),
        ]
        assert not any(m.isLearner for m in resp.members)
        barriers = node.barriers
        await c.MemberList(pb.MemberListRequest(linearizable=True))
        assert node.barriers == barriers + 1

    run(scenario)


def test_membership_changes_are_unimplemented() -> None:
    async def scenario(channel: grpc.aio.Channel, node: FakeNode) -> None:
        c = rpc_pb2_grpc.ClusterStub(channel)
        calls: list[Awaitable[Any]] = [
            c.MemberAdd(pb.MemberAddRequest(peerURLs=["http://127.0.0.1:1"])),
            c.MemberRemove(pb.MemberRemoveRequest(ID=OTHER.id)),
            c.MemberUpdate(pb.MemberUpdateRequest(ID=OTHER.id)),
            c.MemberPromote(pb.MemberPromoteRequest(ID=OTHER.id)),
        ]
        for name, call in zip(["Add", "Remove", "Update", "Promote"], calls, strict=True):
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await call
            assert info.value.code() == C.UNIMPLEMENTED
            assert f"Member{name} is not supported by raftkv yet" in (info.value.details() or "")
        assert len((await c.MemberList(pb.MemberListRequest())).members) == 2

    run(scenario)


# -- gRPC health ----------------------------------------------------------------------------------


def test_health_check() -> None:
    async def scenario(channel: grpc.aio.Channel, node: FakeNode) -> None:
        h = health_pb2_grpc.HealthStub(channel)
        resp = await h.Check(health_pb2.HealthCheckRequest())
        assert resp.status == health_pb2.HealthCheckResponse.SERVING
        node.leader = 0
        resp = await h.Check(health_pb2.HealthCheckRequest())
        assert resp.status == health_pb2.HealthCheckResponse.NOT_SERVING
        await expect_error(
            h.Check(health_pb2.HealthCheckRequest(service="etcdserverpb.KV")),
            C.NOT_FOUND,
            "unknown service",
        )

    run(scenario)


def test_health_watch_streams_changes() -> None:
    async def status_of(call: Any) -> int:
        msg = await asyncio.wait_for(call.read(), 5)
        assert isinstance(msg, health_pb2.HealthCheckResponse)
        return msg.status

    async def scenario(channel: grpc.aio.Channel, node: FakeNode) -> None:
        h = health_pb2_grpc.HealthStub(channel)
        call = h.Watch(health_pb2.HealthCheckRequest())
        assert await status_of(call) == health_pb2.HealthCheckResponse.SERVING
        node.leader = 0
        assert await status_of(call) == health_pb2.HealthCheckResponse.NOT_SERVING
        node.leader = node.member_id
        assert await status_of(call) == health_pb2.HealthCheckResponse.SERVING
        call.cancel()

        unknown = h.Watch(health_pb2.HealthCheckRequest(service="nope"))
        assert await status_of(unknown) == health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
        unknown.cancel()

    run(scenario, health_poll_interval_s=0.02)


# -- server options -------------------------------------------------------------------------------


def test_client_server_options_follow_etcd() -> None:
    opts = dict(client_server_options(1536 * 1024))
    assert opts["grpc.max_receive_message_length"] == 1536 * 1024 + 512 * 1024
    assert opts["grpc.http2.min_ping_interval_without_data_ms"] == 5000
    assert opts["grpc.http2.max_ping_strikes"] == 0
    assert opts["grpc.keepalive_permit_without_calls"] == 1
    assert opts["grpc.so_reuseport"] == 0
