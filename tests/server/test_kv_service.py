"""etcd's KV service over gRPC, against a FakeNode: semantics, headers, limits, errors, deadlines.

The expected texts and codes were checked against a real etcd 3.4 (Debian's etcd-server).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest

from raftkv.errors import CorruptionError, NotLeader, OutcomeUnknown, ProposalDropped
from raftkv.kv import errors as kv_errors
from raftkv.kv.types import (
    Compare,
    CompareResult,
    CompareTarget,
    PutRequest,
    RangeRequest,
    SortOrder,
    SortTarget,
    TxnRequest,
)
from raftkv.pb.etcdserverpb import rpc_pb2 as pb
from raftkv.pb.etcdserverpb import rpc_pb2_grpc
from raftkv.pb.mvccpb import kv_pb2
from raftkv.server import convert
from raftkv.server import errors as server_errors
from raftkv.server.fake_node import FakeNode
from raftkv.server.grpc_server import add_client_services, client_server_options
from raftkv.server.kv_service import DEFAULT_MAX_REQUEST_BYTES
from raftkv.server.status import INTERNAL_ERROR_TEXT, status_of

C = grpc.StatusCode
Scenario = Callable[["rpc_pb2_grpc.KVAsyncStub", FakeNode], Awaitable[None]]


@contextlib.asynccontextmanager
async def serving(node: FakeNode, **options: Any) -> AsyncIterator[grpc.aio.Channel]:
    max_bytes = options.get("max_request_bytes", DEFAULT_MAX_REQUEST_BYTES)
    server = grpc.aio.server(options=client_server_options(max_bytes))
    add_client_services(server, node, **options)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield channel
    finally:
        await server.stop(None)


def run(scenario: Scenario, node: FakeNode | None = None, **options: Any) -> FakeNode:
    node = node or FakeNode()

    async def main() -> None:
        async with serving(node, **options) as channel:
            await scenario(rpc_pb2_grpc.KVStub(channel), node)

    asyncio.run(main())
    return node


async def expect_error(call: Awaitable[Any], code: grpc.StatusCode, details: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    assert (info.value.code(), info.value.details()) == (code, details)


def put(key: bytes, value: bytes = b"", **kw: Any) -> pb.RequestOp:
    return pb.RequestOp(request_put=pb.PutRequest(key=key, value=value, **kw))


def get(key: bytes, **kw: Any) -> pb.RequestOp:
    return pb.RequestOp(request_range=pb.RangeRequest(key=key, **kw))


def delete(key: bytes, range_end: bytes = b"") -> pb.RequestOp:
    return pb.RequestOp(request_delete_range=pb.DeleteRangeRequest(key=key, range_end=range_end))


def keys(resp: pb.RangeResponse) -> list[bytes]:
    return [kv.key for kv in resp.kvs]


# -- semantics and headers ----------------------------------------------------------------------


def test_put_and_range_fill_the_header_as_etcd() -> None:
    async def scenario(kv: rpc_pb2_grpc.KVAsyncStub, node: FakeNode) -> None:
        resp = await kv.Put(pb.PutRequest(key=b"foo", value=b"bar"))
        assert resp.header == pb.ResponseHeader(
            cluster_id=node.cluster_id, member_id=node.member_id, revision=2, raft_term=2
        )
        assert not resp.HasField("prev_kv")
        got = await kv.Range(pb.RangeRequest(key=b"foo"))
        assert got.header.revision == 2 and got.header.member_id == node.member_id
        assert got.count == 1 and not got.more
        assert got.kvs[0] == kv_pb2.KeyValue(
            key=b"foo", create_revision=2, mod_revision=2, version=1, value=b"bar"
        )
        assert node.barriers == 1  # linearizable by default
        await kv.Range(pb.RangeRequest(key=b"foo", serializable=True))
        assert node.barriers == 1  # a serializable read is local
        node.term = 5
        assert (await kv.Range(pb.RangeRequest(key=b"foo"))).header.raft_term == 5

    run(scenario)


def test_range_options() -> None:
    async def scenario(kv: rpc_pb2_grpc.KVAsyncStub, node: FakeNode) -> None:
        for k, v in [(b"a", b"3"), (b"b", b"1"), (b"c", b"2"), (b"d", b"0")]:
            await kv.Put(pb.PutRequest(key=k, value=v))  # revisions 2..5
        await kv.Put(pb.PutRequest(key=b"b", value=b"9"))  # rev 6, b version 2
        await kv.Put(pb.PutRequest(key=b"zz", value=b"z"))  # rev 7

        prefix = await kv.Range(pb.RangeRequest(key=b"z", range_end=b"{"))
        assert keys(prefix) == [b"zz"]
        from_key = await kv.Range(pb.RangeRequest(key=b"c", range_end=b"\0"))
        assert keys(from_key) == [b"c", b"d", b"zz"]
        everything = await kv.Range(pb.RangeRequest(key=b"\0", range_end=b"\0"))
        assert keys(everything) == [b"a", b"b", b"c", b"d", b"zz"]

        limited = await kv.Range(pb.RangeRequest(key=b"a", range_end=b"\0", limit=2))
        assert keys(limited) == [b"a", b"b"] and limited.more and limited.count == 5

        old = await kv.Range(pb.RangeRequest(key=b"b", revision=5))
        assert old.kvs[0].value == b"1" and old.header.revision == 7

        by_value = await kv.Range(
            pb.RangeRequest(
                key=b"a",
                range_end=b"e",
                sort_order=pb.RangeRequest.DESCEND,
                sort_target=pb.RangeRequest.VALUE,
            )
        )
        assert keys(by_value) == [b"b", b"a", b"c", b"d"]
        by_mod = await kv.Range(
            pb.RangeRequest(key=b"a", range_end=b"e", sort_target=pb.RangeRequest.MOD)
        )
        assert keys(by_mod) == [b"a", b"c", b"d", b"b"]  # NONE with a target means ASCEND
        by_key_desc = await kv.Range(
            pb.RangeRequest(key=b"a", range_end=b"e", sort_order=pb.RangeRequest.DESCEND)
        )
        assert keys(by_key_desc) == [b"d", b"c", b"b", b"a"]

        keys_only = await kv.Range(pb.RangeRequest(key=b"a", range_end=b"e", keys_only=True))
        assert keys(keys_only) == [b"a", b"b", b"c", b"d"]
        assert all(kv_.value == b"" for kv_ in keys_only.kvs)
        counted = await kv.Range(pb.RangeRequest(key=b"a", range_end=b"e", count_only=True))
        assert counted.count == 4 and not counted.kvs

        filtered = await kv.Range(
            pb.RangeRequest(key=b"a", range_end=b"\0", min_mod_revision=4, max_mod_revision=6)
        )
        assert keys(filtered) == [b"b", b"c", b"d"]
        created = await kv.Range(
            pb.RangeRequest(key=b"a", range_end=b"\0", min_create_revision=3, max_create_revision=4)
        )
        assert keys(created) == [b"b", b"c"]

    run(scenario)


def test_put_prev_kv_ignore_value_and_delete_prev_kv() -> None:
    async def scenario(kv: rpc_pb2_grpc.KVAsyncStub, node: FakeNode) -> None:
        # No lease exists (raftkv has none yet): etcd's NOT_FOUND, and nothing is written.
        await expect_error(
            kv.Put(pb.PutRequest(key=b"k", value=b"v0", lease=7)),
            C.NOT_FOUND,
            "etcdserver: requested lease not found",
        )
        await kv.Put(pb.PutRequest(key=b"k", value=b"v1"))
        resp = await kv.Put(pb.PutRequest(key=b"k", value=b"v2", prev_kv=True, ignore_lease=True))
        assert resp.prev_kv.value == b"v1" and resp.prev_kv.lease == 0
        resp = await kv.Put(pb.PutRequest(key=b"k", ignore_value=True, prev_kv=True))
        assert resp.prev_kv.value == b"v2"
        got = await kv.Range(pb.RangeRequest(key=b"k"))
        assert (got.kvs[0].value, got.kvs[0].lease, got.kvs[0].version) == (b"v2", 0, 3)

        await kv.Put(pb.PutRequest(key=b"k2", value=b"x"))
        deleted = await kv.DeleteRange(
            pb.DeleteRangeRequest(key=b"k", range_end=b"l", prev_kv=True)
        )
        assert deleted.deleted == 2 and [p.key for p in deleted.prev_kvs] == [b"k", b"k2"]
        assert deleted.header.revision == 6 and deleted.header.member_id == node.member_id
        nothing = await kv.DeleteRange(pb.DeleteRangeRequest(key=b"k"))
        assert nothing.deleted == 0 and nothing.header.revision == 6

    run(scenario)


def test_txn_branches_and_nested_headers() -> None:
    async def scenario(kv: rpc_pb2_grpc.KVAsyncStub, node: FakeNode) -> None:
        await kv.Put(pb.PutRequest(key=b"k1", value=b"v1"))  # rev 2
        cmp = pb.Compare(key=b"k1", target=pb.Compare.VALUE, result=pb.Compare.EQUAL, value=b"v1")
        inner = pb.TxnRequest(success=[put(b"n", b"x"), get(b"n")])
        resp = await kv.Txn(
            pb.TxnRequest(
                compare=[cmp], success=[put(b"k3", b"v3"), pb.RequestOp(request_txn=inner)]
            )
        )
        assert resp.succeeded and resp.header.revision == 3
        assert resp.header.cluster_id == node.cluster_id
        assert resp.responses[0].response_put.header == pb.ResponseHeader(revision=3)
        nested = resp.responses[1].response_txn
        assert nested.HasField("header") and nested.header == pb.ResponseHeader()
        assert nested.responses[1].response_range.kvs[0].value == b"x"
        assert nested.responses[1].response_range.header == pb.ResponseHeader(revision=3)

        cmp_fail = pb.Compare(
            key=b"k1", target=pb.Compare.VERSION, result=pb.Compare.GREATER, version=5
        )
        resp = await kv.Txn(
            pb.TxnRequest(compare=[cmp_fail], success=[put(b"s")], failure=[put(b"f")])
        )
        assert not resp.succeeded and resp.header.revision == 4
        assert (await kv.Range(pb.RangeRequest(key=b"f"))).count == 1
        assert (await kv.Range(pb.RangeRequest(key=b"s"))).count == 0

    run(scenario)


def test_read_only_txn_is_served_like_a_range_and_never_proposed() -> None:
    async def scenario(kv: rpc_pb2_grpc.KVAsyncStub, node: FakeNode) -> None:
        await kv.Put(pb.PutRequest(key=b"a", value=b"1"))
        proposals, barriers = len(node.proposals), node.barriers
        cmp = pb.Compare(key=b"a", target=pb.Compare.MOD, result=pb.Compare.LESS, mod_revision=9)
        resp = await kv.Txn(
            pb.TxnRequest(
                compare=[cmp],
                success=[get(b"a"), pb.RequestOp(request_txn=pb.TxnRequest(success=[get(b"a")]))],
            )
        )
        assert resp.succeeded and resp.responses[0].response_range.kvs[0].value == b"1"
        assert resp.header.revision == 2 and resp.header.member_id == node.member_id
        assert len(node.proposals) == proposals and node.barriers == barriers + 1
        await kv.Txn(pb.TxnRequest(success=[get(b"a", serializable=True)]))
        assert len(node.proposals) == proposals and node.barriers == barriers + 1
        empty = await kv.Txn(pb.TxnRequest())
        assert empty.succeeded and empty.header.revision == 2
        # A compacted revision fails the whole read-only txn, as etcd's does.
        await kv.Put(pb.PutRequest(key=b"a", value=b"2"))
        await kv.Compact(pb.CompactionRequest(revision=3))
        await expect_error(
            kv.Txn(pb.TxnRequest(success=[get(b"a", revision=2)])),
            C.OUT_OF_RANGE,
            "etcdserver: mvcc: required revision has been compacted",
        )

    run(scenario)


def test_compaction_and_reads_at_compacted_or_future_revisions() -> None:
    async def scenario(kv: rpc_pb2_grpc.KVAsyncStub, node: FakeNode) -> None:
        for i in range(3):
            await kv.Put(pb.PutRequest(key=b"k", value=b"%d" % i))  # revs 2..4
        resp = await kv.Compact(pb.CompactionRequest(revision=3, physical=True))
        assert resp.header.revision == 4 and resp.header.member_id == node.member_id
        compacted = "etcdserver: mvcc: required revision has been compacted"
        future = "etcdserver: mvcc: required revision is a future revision"
        await expect_error(
            kv.Range(pb.RangeRequest(key=b"k", revision=2)), C.OUT_OF_RANGE, compacted
        )
        await expect_error(kv.Range(pb.RangeRequest(key=b"k", revision=99)), C.OUT_OF_RANGE, future)
        await expect_error(kv.Compact(pb.CompactionRequest(revision=3)), C.OUT_OF_RANGE, compacted)
        await expect_error(kv.Compact(pb.CompactionRequest(revision=99)), C.OUT_OF_RANGE, future)
        assert (await kv.Range(pb.RangeRequest(key=b"k", revision=3))).kvs[0].value == b"1"

    run(scenario)


def test_range_stream_is_unimplemented() -> None:
    async def scenario(kv: rpc_pb2_grpc.KVAsyncStub, node: FakeNode) -> None:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            async for _ in kv.RangeStream(pb.RangeRequest(key=b"a")):
                pass
        assert info.value.code() == C.UNIMPLEMENTED

    run(scenario)


# -- etcd's input checks: the right error, and no data touched ----------------------------------

BAD_ORDER = pb.RangeRequest.SortOrder.ValueType(7)
BAD_TARGET = pb.RangeRequest.SortTarget.ValueType(9)
BAD_INPUT = [
    ("Put", pb.PutRequest(key=b"", value=b"v"), "etcdserver: key is not provided"),
    ("Range", pb.RangeRequest(key=b""), "etcdserver: key is not provided"),
    ("DeleteRange", pb.DeleteRangeRequest(key=b""), "etcdserver: key is not provided"),
    (
        "Put",
        pb.PutRequest(key=b"k", value=b"v", ignore_value=True),
        "etcdserver: value is provided",
    ),
    ("Put", pb.PutRequest(key=b"k", lease=5, ignore_lease=True), "etcdserver: lease is provided"),
    ("Range", pb.RangeRequest(key=b"k", sort_order=BAD_ORDER), "etcdserver: invalid sort option"),
    ("Range", pb.RangeRequest(key=b"k", sort_target=BAD_TARGET), "etcdserver: invalid sort option"),
    (
        "Txn",
        pb.TxnRequest(success=[put(b"k%d" % i) for i in range(129)]),
        "etcdserver: too many operations in txn request",
    ),
    (
        "Txn",
        pb.TxnRequest(failure=[put(b"k%d" % i) for i in range(129)]),
        "etcdserver: too many operations in txn request",
    ),
    (
        "Txn",
        pb.TxnRequest(compare=[pb.Compare(key=b"k")] * 129),
        "etcdserver: too many operations in txn request",
    ),
    (
        "Txn",
        pb.TxnRequest(success=[put(b"k"), put(b"k")]),
        "etcdserver: duplicate key given in txn request",
    ),
    (
        "Txn",
        pb.TxnRequest(success=[put(b"k1"), delete(b"k", b"l")]),
        "etcdserver: duplicate key given in txn request",
    ),
    ("Txn", pb.TxnRequest(success=[put(b"")]), "etcdserver: key is not provided"),
    ("Txn", pb.TxnRequest(compare=[pb.Compare(key=b"")]), "etcdserver: key is not provided"),
    ("Txn", pb.TxnRequest(success=[get(b"k", sort_order=5)]), "etcdserver: invalid sort option"),
    ("Txn", pb.TxnRequest(success=[pb.RequestOp()]), "etcdserver: key not found"),
    (
        "Put",
        pb.PutRequest(key=b"big", value=b"x" * (1536 * 1024)),
        "etcdserver: request is too large",
    ),
    (
        "Txn",
        pb.TxnRequest(success=[put(b"big", b"x" * (1536 * 1024))]),
        "etcdserver: request is too large",
    ),
]


@pytest.mark.parametrize(
    ("method", "request_", "details"),
    BAD_INPUT,
    ids=[f"{i}-{m}-{d.split(': ')[-1]}" for i, (m, _, d) in enumerate(BAD_INPUT)],
)
def test_bad_input_gets_etcds_error_and_costs_no_data(
    method: str, request_: Any, details: str
) -> None:
    async def scenario(kv: rpc_pb2_grpc.KVAsyncStub, node: FakeNode) -> None:
        await kv.Put(pb.PutRequest(key=b"k", value=b"keep"))
        proposals, revision = len(node.proposals), node.store.current_revision()
        await expect_error(getattr(kv, method)(request_), C.INVALID_ARGUMENT, details)
        assert len(node.proposals) == proposals  # refused before proposing
        assert node.store.current_revision() == revision
        assert (await kv.Range(pb.RangeRequest(key=b"k"))).kvs[0].value == b"keep"

    run(scenario)


def test_limits_sit_where_etcds_are() -> None:
    async def scenario(kv: rpc_pb2_grpc.KVAsyncStub, node: FakeNode) -> None:
        ok = await kv.Txn(pb.TxnRequest(success=[put(b"k%d" % i) for i in range(128)]))
        assert ok.succeeded and len(ok.responses) == 128
        # Measured on etcd 3.4 with the 1.5 MiB default: a 3-byte key with a value 100 bytes
        # short of 1.5 MiB is accepted, 10 bytes short is too large.
        limit = 1536 * 1024
        await kv.Put(pb.PutRequest(key=b"big", value=b"x" * (limit - 100)))
        await expect_error(
            kv.Put(pb.PutRequest(key=b"big", value=b"x" * (limit - 10))),
            C.INVALID_ARGUMENT,
            "etcdserver: request is too large",
        )
        # Past max_request_bytes + 512 KiB, gRPC itself refuses the message.
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await kv.Put(pb.PutRequest(key=b"huge", value=b"x" * (3 << 20)))
        assert info.value.code() == C.RESOURCE_EXHAUSTED
        assert (await kv.Range(pb.RangeRequest(key=b"huge"))).count == 0

    run(scenario)


def test_max_request_bytes_is_configurable() -> None:
    async def scenario(kv: rpc_pb2_grpc.KVAsyncStub, node: FakeNode) -> None:
        await kv.Put(pb.PutRequest(key=b"k", value=b"x" * 900))
        await expect_error(
            kv.Put(pb.PutRequest(key=b"k", value=b"x" * 1100)),
            C.INVALID_ARGUMENT,
            "etcdserver: request is too large",
        )

    run(scenario, max_request_bytes=1024)


def test_apply_time_errors_come_back_with_etcds_text() -> None:
    async def scenario(kv: rpc_pb2_grpc.KVAsyncStub, node: FakeNode) -> None:
        await expect_error(
            kv.Put(pb.PutRequest(key=b"missing", ignore_value=True)),
            C.INVALID_ARGUMENT,
            "etcdserver: key not found",
        )
        await kv.Put(pb.PutRequest(key=b"fill", value=b"x" * 2000))  # now over the quota
        await expect_error(
            kv.Put(pb.PutRequest(key=b"more", value=b"y")),
            C.RESOURCE_EXHAUSTED,
            "etcdserver: mvcc: database space exceeded",
        )
        await kv.DeleteRange(pb.DeleteRangeRequest(key=b"fill"))  # deletes are still allowed

    run(scenario, FakeNode(quota_bytes=1000))


# -- the node's failures, deadlines, and bugs ---------------------------------------------------


def test_no_leader() -> None:
    async def scenario(kv: rpc_pb2_grpc.KVAsyncStub, node: FakeNode) -> None:
        await kv.Put(pb.PutRequest(key=b"k", value=b"v"))
        node.leader = 0
        no_leader = "etcdserver: no leader"
        await expect_error(kv.Put(pb.PutRequest(key=b"k", value=b"w")), C.UNAVAILABLE, no_leader)
        await expect_error(kv.Range(pb.RangeRequest(key=b"k")), C.UNAVAILABLE, no_leader)
        await expect_error(kv.Txn(pb.TxnRequest(success=[get(b"k")])), C.UNAVAILABLE, no_leader)
        stale = await kv.Range(pb.RangeRequest(key=b"k", serializable=True))
        assert stale.kvs[0].value == b"v"

    run(scenario)


@pytest.mark.parametrize(
    ("error", "code", "details"),
    [
        (server_errors.LeaderChangedError(), C.UNAVAILABLE, "etcdserver: leader changed"),
        (server_errors.RequestTimeoutError(), C.UNAVAILABLE, "etcdserver: request timed out"),
        (
            server_errors.TooManyRequestsError(),
            C.RESOURCE_EXHAUSTED,
            "etcdserver: too many requests",
        ),
        (server_errors.ServerStoppedError(), C.UNAVAILABLE, "etcdserver: server stopped"),
    ],
)
def test_node_errors_map_to_etcds_statuses(
    error: Exception, code: grpc.StatusCode, details: str
) -> None:
    async def scenario(kv: rpc_pb2_grpc.KVAsyncStub, node: FakeNode) -> None:
        node.fail_with = error
        await expect_error(kv.Put(pb.PutRequest(key=b"k", value=b"v")), code, details)
        node.fail_with = error
        await expect_error(kv.Range(pb.RangeRequest(key=b"k")), code, details)

    run(scenario)


def test_a_stalled_node_cannot_hang_a_call() -> None:
    async def scenario(kv: rpc_pb2_grpc.KVAsyncStub, node: FakeNode) -> None:
        node.stalled = True
        timed_out = "etcdserver: request timed out"
        start = time.monotonic()
        await expect_error(kv.Put(pb.PutRequest(key=b"k", value=b"v")), C.UNAVAILABLE, timed_out)
        await expect_error(kv.Range(pb.RangeRequest(key=b"k")), C.UNAVAILABLE, timed_out)
        await expect_error(kv.Txn(pb.TxnRequest(success=[put(b"k")])), C.UNAVAILABLE, timed_out)
        await expect_error(kv.Compact(pb.CompactionRequest(revision=1)), C.UNAVAILABLE, timed_out)
        assert time.monotonic() - start < 4 * (0.2 + 0.25) + 1.0
        # The client's own deadline, when shorter, ends the call first.
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await kv.Put(pb.PutRequest(key=b"k", value=b"v"), timeout=0.1)
        assert info.value.code() == C.DEADLINE_EXCEEDED
        node.stalled = False
        assert (await kv.Put(pb.PutRequest(key=b"k", value=b"v"))).header.revision == 2

    run(scenario, request_timeout_s=0.2)


def test_an_unexpected_exception_is_unknown_logged_and_harmless(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario(kv: rpc_pb2_grpc.KVAsyncStub, node: FakeNode) -> None:
        node.fail_with = ZeroDivisionError("boom")
        with caplog.at_level(logging.ERROR, logger="raftkv.server.status"):
            await expect_error(kv.Put(pb.PutRequest(key=b"k")), C.UNKNOWN, INTERNAL_ERROR_TEXT)
        assert any("ZeroDivisionError" in (r.exc_text or "") for r in caplog.records)
        assert "boom" not in INTERNAL_ERROR_TEXT
        assert (await kv.Put(pb.PutRequest(key=b"k", value=b"v"))).header.revision == 2

    run(scenario)


# -- the status table and the converters, directly ----------------------------------------------


@pytest.mark.parametrize(
    ("exc", "code", "details"),
    [
        (
            kv_errors.CompactedRevisionError(),
            C.OUT_OF_RANGE,
            "etcdserver: mvcc: required revision has been compacted",
        ),
        (
            kv_errors.FutureRevisionError(),
            C.OUT_OF_RANGE,
            "etcdserver: mvcc: required revision is a future revision",
        ),
        (
            kv_errors.NoSpaceError(),
            C.RESOURCE_EXHAUSTED,
            "etcdserver: mvcc: database space exceeded",
        ),
        (kv_errors.EmptyKeyError(), C.INVALID_ARGUMENT, "etcdserver: key is not provided"),
        (kv_errors.LeaseNotFoundError(), C.NOT_FOUND, "etcdserver: requested lease not found"),
        (server_errors.NoLeaderError(), C.UNAVAILABLE, "etcdserver: no leader"),
        (server_errors.NotLeaderError(), C.FAILED_PRECONDITION, "etcdserver: not leader"),
        (
            server_errors.BadLeaderTransfereeError(),
            C.FAILED_PRECONDITION,
            "etcdserver: bad leader transferee",
        ),
        (server_errors.MemberNotFoundError(), C.NOT_FOUND, "etcdserver: member not found"),
        (
            server_errors.RequestTooLargeError(),
            C.INVALID_ARGUMENT,
            "etcdserver: request is too large",
        ),
        (TimeoutError(), C.UNAVAILABLE, "etcdserver: request timed out"),
        (OutcomeUnknown(), C.UNAVAILABLE, "etcdserver: request timed out"),
        (NotLeader(3), C.FAILED_PRECONDITION, "etcdserver: not leader"),
        (ProposalDropped(), C.UNAVAILABLE, "etcdserver: leader changed"),
        (CorruptionError("bad crc"), C.DATA_LOSS, "etcdserver: corrupt cluster"),
        (KeyError("x"), C.UNKNOWN, INTERNAL_ERROR_TEXT),
    ],
)
def test_status_table(exc: BaseException, code: grpc.StatusCode, details: str) -> None:
    assert status_of(exc) == (code, details)


def test_a_kv_error_with_a_bad_code_is_unknown() -> None:
    class Odd(kv_errors.KVError):
        code = "NOT_A_CODE"

    assert status_of(Odd()) == (C.UNKNOWN, INTERNAL_ERROR_TEXT)


def test_requests_convert_field_by_field() -> None:
    req = convert.range_request_from_pb(
        pb.RangeRequest(
            key=b"a",
            range_end=b"b",
            limit=3,
            revision=4,
            sort_order=pb.RangeRequest.DESCEND,
            sort_target=pb.RangeRequest.CREATE,
            serializable=True,
            keys_only=True,
            count_only=True,
            min_mod_revision=5,
            max_mod_revision=6,
            min_create_revision=7,
            max_create_revision=8,
        )
    )
    assert req == RangeRequest(
        b"a", b"b", 3, 4, SortOrder.DESCEND, SortTarget.CREATE, True, True, True, 5, 6, 7, 8
    )
    txn = convert.txn_request_from_pb(
        pb.TxnRequest(
            compare=[
                pb.Compare(
                    key=b"k",
                    range_end=b"l",
                    target=pb.Compare.LEASE,
                    result=pb.Compare.NOT_EQUAL,
                    lease=9,
                )
            ],
            success=[put(b"p", b"v", lease=1, prev_kv=True)],
            failure=[pb.RequestOp(request_txn=pb.TxnRequest(success=[get(b"g")]))],
        )
    )
    assert txn == TxnRequest(
        (Compare(CompareResult.NOT_EQUAL, CompareTarget.LEASE, b"k", lease=9, range_end=b"l"),),
        (PutRequest(b"p", b"v", 1, True),),
        (TxnRequest(success=(RangeRequest(b"g"),)),),
    )
    with pytest.raises(kv_errors.InvalidSortOptionError):
        convert.range_request_from_pb(
            pb.RangeRequest(key=b"a", sort_order=pb.RangeRequest.SortOrder.ValueType(-1))
        )
