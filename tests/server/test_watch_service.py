"""The Watch service against a FakeNode, over a real in-process grpc.aio server."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest

from raftkv.kv.types import (
    CompactionRequest,
    DeleteRangeRequest,
    PutRequest,
    RequestOp,
    TxnRequest,
)
from raftkv.pb.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from raftkv.server.fake_node import FakeNode
from raftkv.server.watch_service import (
    CANCEL_COMPACTED,
    CANCEL_DUPLICATE_ID,
    add_watch_service,
)

T = 5.0


class Harness:
    def __init__(self, node: FakeNode, port: int, service: Any) -> None:
        self.node = node
        self.port = port
        self.service = service
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        self.stub = rpc_pb2_grpc.WatchStub(self.channel)

    async def put(self, key: bytes, value: bytes = b"v") -> int:
        r = await self.node.propose(PutRequest(key, value), timeout_s=1)
        return r.revision

    async def delete(self, key: bytes) -> None:
        await self.node.propose(DeleteRangeRequest(key), timeout_s=1)

    def open(self, metadata: Any = None) -> Stream:
        q: asyncio.Queue[rpc_pb2.WatchRequest | None] = asyncio.Queue()

        async def reqs() -> Any:
            while True:
                r = await q.get()
                if r is None:
                    return
                yield r

        call = self.stub.Watch(reqs(), metadata=metadata)
        return Stream(call, q)


class Stream:
    def __init__(self, call: Any, q: asyncio.Queue[Any]) -> None:
        self.call = call
        self.q = q

    async def create(self, key: bytes, **kw: Any) -> rpc_pb2.WatchResponse:
        await self.q.put(
            rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(key=key, **kw))
        )
        return await self.recv()

    async def send(self, **kw: Any) -> None:
        await self.q.put(rpc_pb2.WatchRequest(**kw))

    async def recv(self, timeout: float = T) -> rpc_pb2.WatchResponse:
        return await asyncio.wait_for(self.call.read(), timeout)

    async def events(self, n: int, timeout: float = T) -> list[tuple[int, Any]]:
        out: list[tuple[int, Any]] = []
        while len(out) < n:
            r = await self.recv(timeout)
            out.extend((r.watch_id, e) for e in r.events)
        return out


def run(body: Callable[[Harness], Awaitable[None]], **opts: Any) -> None:
    async def main() -> None:
        node = FakeNode()
        server = grpc.aio.server()
        service = add_watch_service(server, node, **opts)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        h = Harness(node, port, service)
        try:
            await asyncio.wait_for(body(h), 30)
        finally:
            await h.channel.close()
            await server.stop(0)
            await service.close()

    asyncio.run(main())


def test_create_then_live_events_in_order() -> None:
    async def body(h: Harness) -> None:
        await h.put(b"a")  # rev 2
        s = h.open()
        r = await s.create(b"a", range_end=b"b")
        assert r.created and r.watch_id == 0 and r.header.revision == 2
        assert r.header.member_id == h.node.member_id and r.header.cluster_id
        for i in range(5):
            await h.put(b"a%d" % i, b"x%d" % i)
        await h.put(b"zz")  # outside
        await h.delete(b"a1")
        evs = await s.events(6)
        revs = [e.kv.mod_revision for _, e in evs]
        assert revs == [3, 4, 5, 6, 7, 9]
        assert evs[-1][1].type == 1 and evs[-1][1].kv.key == b"a1"

    run(body)


def test_history_prev_kv_filters_and_txn_atomic() -> None:
    async def body(h: Harness) -> None:
        await h.put(b"k", b"1")  # 2
        await h.put(b"k", b"2")  # 3
        await h.delete(b"k")  # 4
        await h.node.propose(
            TxnRequest(
                (),
                (PutRequest(b"t1", b"a"), PutRequest(b"t2", b"b"), DeleteRangeRequest(b"k")),
                (),
            ),
            timeout_s=1,
        )  # 5
        s = h.open()
        r = await s.create(b"k", start_revision=2, prev_kv=True)
        assert r.created
        evs = await s.events(3)
        assert [e.kv.mod_revision for _, e in evs] == [2, 3, 4]
        assert evs[1][1].prev_kv.value == b"1" and evs[2][1].prev_kv.value == b"2"
        r = await s.create(b"k", start_revision=1, filters=[rpc_pb2.WatchCreateRequest.NOPUT])
        wid = r.watch_id
        evs = await s.events(1)
        assert evs == [(wid, evs[0][1])] and evs[0][1].type == 1
        # a txn's events come in one response, in op order
        r = await s.create(b"t", range_end=b"u", start_revision=1)
        resp = await s.recv()
        assert [e.kv.key for e in resp.events] == [b"t1", b"t2"]
        await h.node.propose(
            TxnRequest((), (PutRequest(b"t3", b"a"), PutRequest(b"t4", b"b")), ()), timeout_s=1
        )
        resp = await s.recv()
        assert [e.kv.key for e in resp.events] == [b"t3", b"t4"]

    run(body)


def test_cancel_duplicate_id_and_client_ids() -> None:
    async def body(h: Harness) -> None:
        s = h.open()
        r = await s.create(b"a", watch_id=7)
        assert r.created and r.watch_id == 7
        r = await s.create(b"a", watch_id=7)
        assert r.created and r.canceled and r.cancel_reason == CANCEL_DUPLICATE_ID
        r = await s.create(b"b")
        assert r.watch_id == 0
        await s.send(cancel_request=rpc_pb2.WatchCancelRequest(watch_id=7))
        r = await s.recv()
        assert r.canceled and r.watch_id == 7
        await h.put(b"a")
        await h.put(b"b")
        evs = await s.events(1)
        assert evs[0][0] == 0 and evs[0][1].kv.key == b"b"

    run(body)


def test_compacted_start_revision_and_negative() -> None:
    async def body(h: Harness) -> None:
        for _ in range(5):
            await h.put(b"c")
        await h.node.propose(CompactionRequest(4), timeout_s=1)
        s = h.open()
        r = await s.create(b"c", start_revision=2)
        assert r.created
        r = await s.recv()
        assert r.canceled and r.compact_revision == 4 and r.cancel_reason == CANCEL_COMPACTED
        r = await s.create(b"c", start_revision=4)
        evs = await s.events(3)
        assert [e.kv.mod_revision for _, e in evs] == [4, 5, 6]
        r = await s.create(b"c", start_revision=-1)
        assert r.created
        r = await s.recv()
        assert r.canceled and r.cancel_reason == CANCEL_COMPACTED

    run(body)


def test_progress_request_and_notify() -> None:
    async def body(h: Harness) -> None:
        s = h.open()
        await s.create(b"p", progress_notify=True)
        await h.put(b"other")
        await asyncio.sleep(0.05)
        await s.send(progress_request=rpc_pb2.WatchProgressRequest())
        while True:
            r = await s.recv()
            if r.watch_id == -1:
                break
        assert not r.events and r.header.revision == 2
        r = await s.recv(2)
        assert r.watch_id == 0 and not r.events and not r.created

    run(body, progress_notify_interval_s=0.3)


def test_require_leader() -> None:
    async def body(h: Harness) -> None:
        h.node.leader = 0
        s = h.open(metadata=(("hasleader", "true"),))
        await s.send(create_request=rpc_pb2.WatchCreateRequest(key=b"a"))
        with pytest.raises(grpc.aio.AioRpcError) as ei:
            await s.recv()
        assert ei.value.code() == grpc.StatusCode.UNAVAILABLE
        assert ei.value.details() == "etcdserver: no leader"
        # without the metadata the watch is served
        s2 = h.open()
        r = await s2.create(b"a")
        assert r.created
        # a require-leader stream is cut when the leader goes away
        h.node.leader = h.node.member_id
        s3 = h.open(metadata=(("hasleader", "true"),))
        assert (await s3.create(b"a")).created
        h.node.leader = 0
        with pytest.raises(grpc.aio.AioRpcError) as ei:
            await s3.recv(3)
        assert ei.value.details() == "etcdserver: no leader"

    run(body, leader_check_interval_s=0.05)


def test_fragment() -> None:
    async def body(h: Harness) -> None:
        ops: tuple[RequestOp, ...] = tuple(PutRequest(b"f%d" % i, b"x" * 1000) for i in range(10))
        await h.node.propose(TxnRequest((), ops, ()), timeout_s=1)
        s = h.open()
        await s.create(b"f", range_end=b"g", start_revision=1, fragment=True)
        got = []
        while True:
            r = await s.recv()
            got.append(r)
            if not r.fragment:
                break
        assert len(got) >= 3
        assert sum(len(r.events) for r in got) == 10

    run(body, max_response_bytes=3000)


def test_slow_stream_catches_up_from_history_without_loss() -> None:
    """A tiny send queue: the hub drops the watcher to catch-up mode; nothing is lost."""

    async def body(h: Harness) -> None:
        s = h.open()
        await s.create(b"s", range_end=b"t")
        await s.create(b"s", range_end=b"t", prev_kv=True)
        n = 300
        for i in range(n):
            await h.put(b"s%03d" % (i % 17), b"%d" % i)
            if i % 50 == 0:
                await asyncio.sleep(0)
        evs = await s.events(2 * n)
        for wid in (0, 1):
            revs = [e.kv.mod_revision for w, e in evs if w == wid]
            assert revs == list(range(2, n + 2))

    run(body, send_queue_items=4)


def test_many_watchers_one_prefix() -> None:
    async def body(h: Harness) -> None:
        streams = [h.open() for _ in range(5)]
        for s in streams:
            for _ in range(20):
                await s.create(b"m", range_end=b"n")
        for i in range(50):
            await h.put(b"m%d" % i)
        for s in streams:
            evs = await s.events(20 * 50)
            by: dict[int, list[int]] = {}
            for w, e in evs:
                by.setdefault(w, []).append(e.kv.mod_revision)
            assert len(by) == 20
            assert all(v == list(range(2, 52)) for v in by.values())

    run(body)
