"""Hostile and malformed requests (issue 25): raftkv must answer as etcd 3.4 does.

Every scenario runs twice, against raftkv's client services (over a FakeNode, on a real
in-process gRPC server) and against a real etcd (Debian's etcd-server 3.4, skipped when it is
not installed), with the same expectations: the etcd run is what proves an expectation is etcd's.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from raftkv_cli.real_etcd import ETCD, real_etcd

from raftkv.pb.etcdserverpb import rpc_pb2 as pb
from raftkv.pb.etcdserverpb import rpc_pb2_grpc
from raftkv.server.fake_node import FakeNode
from raftkv.server.grpc_server import add_client_services, client_server_options
from raftkv.server.kv_service import DEFAULT_MAX_REQUEST_BYTES

C = grpc.StatusCode
UNARY_PREFIX = "grpc: error unmarshalling request: "
STREAM_PREFIX = "grpc: failed to unmarshal the received message "
LEASE_NOT_FOUND = (C.NOT_FOUND, "etcdserver: requested lease not found")
KEY_NOT_FOUND = (C.INVALID_ARGUMENT, "etcdserver: key not found")
TOO_MANY_OPS = (C.INVALID_ARGUMENT, "etcdserver: too many operations in txn request")
COMPACTED = (C.OUT_OF_RANGE, "etcdserver: mvcc: required revision has been compacted")
FUTURE = (C.OUT_OF_RANGE, "etcdserver: mvcc: required revision is a future revision")
_CHANNEL_OPTIONS = [("grpc.max_send_message_length", 64 << 20)]


def _identity(b: bytes) -> bytes:
    return b


@dataclass
class Target:
    channel: grpc.aio.Channel
    node: FakeNode | None  # None for etcd
    prefix: bytes = field(default_factory=lambda: uuid.uuid4().hex.encode() + b"/")

    @property
    def kv(self) -> rpc_pb2_grpc.KVAsyncStub:
        return rpc_pb2_grpc.KVStub(self.channel)

    @property
    def maintenance(self) -> rpc_pb2_grpc.MaintenanceAsyncStub:
        return rpc_pb2_grpc.MaintenanceStub(self.channel)

    def raw(self, method: str) -> Any:
        return self.channel.unary_unary(
            method, request_serializer=_identity, response_deserializer=_identity
        )

    def raw_watch(self, requests: AsyncIterator[bytes]) -> Any:
        call = self.channel.stream_stream(
            "/etcdserverpb.Watch/Watch",
            request_serializer=_identity,
            response_deserializer=pb.WatchResponse.FromString,
        )
        return call(requests)


Scenario = Callable[[Target], Awaitable[None]]


@pytest.fixture(scope="module")
def etcd_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if ETCD is None:
        pytest.skip("etcd is not installed")
    with real_etcd(tmp_path_factory.mktemp("etcd")) as endpoint:
        yield endpoint


@contextlib.asynccontextmanager
async def _raftkv() -> AsyncIterator[Target]:
    node = FakeNode()
    server = grpc.aio.server(options=client_server_options(DEFAULT_MAX_REQUEST_BYTES))
    add_client_services(server, node)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=_CHANNEL_OPTIONS) as ch:
            yield Target(ch, node)
    finally:
        await server.stop(None)


@pytest.fixture(params=["raftkv", "etcd"])
def run(request: pytest.FixtureRequest) -> Callable[[Scenario], None]:
    endpoint = request.getfixturevalue("etcd_endpoint") if request.param == "etcd" else None

    def go(scenario: Scenario) -> None:
        async def main() -> None:
            if endpoint is None:
                async with _raftkv() as target:
                    await asyncio.wait_for(scenario(target), 60)
                return
            async with grpc.aio.insecure_channel(endpoint, options=_CHANNEL_OPTIONS) as ch:
                await asyncio.wait_for(scenario(Target(ch, None)), 60)

        asyncio.run(main())

    return go


async def status_of(call: Awaitable[Any]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value.code(), info.value.details() or ""


def put_op(key: bytes, **kw: Any) -> pb.RequestOp:
    return pb.RequestOp(request_put=pb.PutRequest(key=key, **kw))


def get_op(key: bytes, **kw: Any) -> pb.RequestOp:
    return pb.RequestOp(request_range=pb.RangeRequest(key=key, **kw))


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def field_bytes(number: int, payload: bytes) -> bytes:
    """One length-delimited field on the wire."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def nested_txn(depth: int, leaf: bytes) -> bytes:
    """A TxnRequest nested ``depth`` levels deep (success[0].request_txn, ...); the innermost
    txn's success holds ``leaf`` (a RequestOp on the wire), or nothing if ``leaf`` is empty.
    Built on the wire: upb cannot build or copy messages nested past 100 levels."""
    txn = field_bytes(2, leaf) if leaf else b""
    for _ in range(depth - 1):
        txn = field_bytes(2, field_bytes(4, txn))  # success: RequestOp{request_txn}
    return txn


# -- 1. undecodable requests ----------------------------------------------------------------------

UNDECODABLE = b"\xff\xff\xff"  # etcd: "unexpected EOF"; upb: "Wire format was corrupt"


@pytest.mark.parametrize(
    "method",
    [
        "/etcdserverpb.KV/Range",
        "/etcdserverpb.KV/Put",
        "/etcdserverpb.KV/Txn",
        "/etcdserverpb.Maintenance/Status",
        "/etcdserverpb.Cluster/MemberList",
        "/grpc.health.v1.Health/Check",
    ],
)
def test_an_undecodable_unary_request_is_internal(
    run: Callable[[Scenario], None], method: str
) -> None:
    async def scenario(t: Target) -> None:
        code, details = await status_of(t.raw(method)(UNDECODABLE, timeout=5))
        assert code == C.INTERNAL and details.startswith(UNARY_PREFIX), details

    run(scenario)


def test_a_known_field_with_the_wrong_wire_type_is_undecodable(
    run: Callable[[Scenario], None],
) -> None:
    async def scenario(t: Target) -> None:
        key = t.prefix + b"w"
        raw = field_bytes(1, key) + b"\x10\x05"  # PutRequest.value (bytes) sent as a varint
        assert await status_of(t.raw("/etcdserverpb.KV/Put")(raw, timeout=5)) == (
            C.INTERNAL,
            UNARY_PREFIX + "proto: wrong wireType = 0 for field Value",
        )
        assert (await t.kv.Range(pb.RangeRequest(key=key))).count == 0

    run(scenario)


def test_an_undecodable_snapshot_request_is_internal(run: Callable[[Scenario], None]) -> None:
    async def scenario(t: Target) -> None:
        call = t.channel.unary_stream(
            "/etcdserverpb.Maintenance/Snapshot",
            request_serializer=_identity,
            response_deserializer=_identity,
        )

        async def drain() -> None:
            async for _ in call(UNDECODABLE, timeout=5):
                pass

        code, details = await status_of(drain())
        assert code == C.INTERNAL and details.startswith(STREAM_PREFIX), details

    run(scenario)


def test_a_watch_stream_ends_at_an_undecodable_message(run: Callable[[Scenario], None]) -> None:
    async def scenario(t: Target) -> None:
        sends: asyncio.Queue[bytes] = asyncio.Queue()

        async def requests() -> AsyncIterator[bytes]:
            while True:
                yield await sends.get()

        def create(key: bytes) -> bytes:
            req = pb.WatchRequest(create_request=pb.WatchCreateRequest(key=key))
            return req.SerializeToString()

        call = t.raw_watch(requests())
        await sends.put(create(t.prefix + b"a"))
        assert (await asyncio.wait_for(call.read(), 5)).created
        await sends.put(UNDECODABLE)
        await sends.put(create(t.prefix + b"b"))  # never answered: the stream is over
        code, details = await status_of(asyncio.wait_for(call.read(), 5))
        assert code == C.INTERNAL and details.startswith(STREAM_PREFIX), details
        if t.node is not None:  # and it let go of its watchers and tasks
            for _ in range(50):
                if not _watch_stream_tasks():
                    break
                await asyncio.sleep(0.05)
            assert _watch_stream_tasks() == []
            assert all(not hub.synced for hub in _watch_hubs())

    run(scenario)


def _watch_stream_tasks() -> list[str]:
    """The server's per-stream watch tasks still running (the hub's own task is shared)."""
    names = [getattr(t.get_coro(), "__qualname__", "") for t in asyncio.all_tasks()]
    return [n for n in names if n.startswith(("WatchService.", "_Stream."))]


def _watch_hubs() -> list[Any]:
    import gc

    from raftkv.server.watch_service import WatchHub

    return [o for o in gc.get_objects() if isinstance(o, WatchHub)]


# -- 2. leases: none exists -----------------------------------------------------------------------


def test_a_put_with_a_lease_is_refused_and_writes_nothing(run: Callable[[Scenario], None]) -> None:
    async def scenario(t: Target) -> None:
        k = t.prefix
        kv = t.kv
        for lease in (12345, -1):
            call = kv.Put(pb.PutRequest(key=k + b"a", value=b"v", lease=lease))
            assert await status_of(call) == LEASE_NOT_FOUND
        txn = pb.TxnRequest(success=[put_op(k + b"b", lease=7)])
        assert await status_of(kv.Txn(txn)) == LEASE_NOT_FOUND
        nested = pb.TxnRequest(
            success=[pb.RequestOp(request_txn=pb.TxnRequest(success=[put_op(k + b"c", lease=7)]))]
        )
        assert await status_of(kv.Txn(nested)) == LEASE_NOT_FOUND
        # Only the branch taken is checked.
        ok = pb.TxnRequest(success=[put_op(k + b"d")], failure=[put_op(k + b"e", lease=7)])
        assert (await kv.Txn(ok)).succeeded
        # etcd's Put looks the lease up before the key; a txn checks the key first...
        missing = pb.PutRequest(key=k + b"m", lease=7, ignore_value=True)
        assert await status_of(kv.Put(missing)) == LEASE_NOT_FOUND
        txn = pb.TxnRequest(success=[pb.RequestOp(request_put=missing)])
        assert await status_of(kv.Txn(txn)) == KEY_NOT_FOUND
        # ... and every put before any range.
        future = get_op(k + b"q", revision=10**9)
        txn = pb.TxnRequest(success=[future, put_op(k + b"f", lease=3)])
        assert await status_of(kv.Txn(txn)) == LEASE_NOT_FOUND
        txn = pb.TxnRequest(success=[future, put_op(k + b"m", ignore_value=True)])
        assert await status_of(kv.Txn(txn)) == KEY_NOT_FOUND
        got = await kv.Range(pb.RangeRequest(key=k, range_end=k[:-1] + b"0"))
        assert [kv.key for kv in got.kvs] == [k + b"d"]

    run(scenario)


# -- 3. compares with numbers etcd does not name --------------------------------------------------

R = pb.Compare.CompareResult.ValueType
T = pb.Compare.CompareTarget.ValueType


def _etcd_compare(exists: bool, result: int, target: int) -> bool:
    """etcd 3.4's compareKV against key "k" = "v" (version 1), or against no key: an unnamed
    target compares nothing (difference 0), an unnamed result is true, but VALUE fails on a
    missing key whatever the result."""
    if target == pb.Compare.VALUE and not exists:
        return False
    diffs: dict[int, int] = {pb.Compare.VERSION: 1 if exists else 0, pb.Compare.VALUE: 1}
    diff = diffs.get(target, 0)
    if result not in (0, 1, 2, 3):
        return True
    return [diff == 0, diff > 0, diff < 0, diff != 0][result]


@pytest.mark.parametrize("exists", [True, False])
def test_unnamed_compare_results_and_targets_are_evaluated(
    run: Callable[[Scenario], None], exists: bool
) -> None:
    async def scenario(t: Target) -> None:
        key = t.prefix + b"k"
        if exists:
            await t.kv.Put(pb.PutRequest(key=key, value=b"v"))
        got, want = [], []
        for result in (0, 1, 2, 3, 4, 9, -1):
            for target in (0, 3, 4, 5, -2):
                c = pb.Compare(key=key, result=R(result), target=T(target), value=b"")
                got.append((result, target, (await t.kv.Txn(pb.TxnRequest(compare=[c]))).succeeded))
                want.append((result, target, _etcd_compare(exists, result, target)))
        assert got == want
        # Over a range: every key passes an unnamed result, so the txn succeeds...
        c = pb.Compare(key=t.prefix, range_end=t.prefix[:-1] + b"0", result=R(7), target=T(7))
        assert (await t.kv.Txn(pb.TxnRequest(compare=[c]))).succeeded
        # ... but VALUE over an empty range fails, whatever the result.
        c = pb.Compare(key=t.prefix + b"none", range_end=t.prefix + b"nonf", result=R(7))
        c.target = pb.Compare.VALUE
        assert not (await t.kv.Txn(pb.TxnRequest(compare=[c]))).succeeded

    run(scenario)


# -- 4. nesting and unknown fields ----------------------------------------------------------------


def test_txns_nest_as_deep_as_etcds_op_budget(run: Callable[[Scenario], None]) -> None:
    async def scenario(t: Target) -> None:
        txn = t.raw("/etcdserverpb.KV/Txn")
        leaf = field_bytes(2, field_bytes(1, t.prefix + b"deep"))  # RequestOp{request_put}
        resp = pb.TxnResponse.FromString(await txn(nested_txn(40, leaf), timeout=10))
        assert resp.succeeded and resp.header.revision > 0
        for depth in (50, 51, 128):  # (this client's upb cannot decode answers this deep)
            assert await txn(nested_txn(depth, leaf), timeout=10)
        # Level 129 is reachable only empty: every level above spent one op of the 128.
        await txn(nested_txn(129, b""), timeout=10)
        for depth in (129, 200, 100_000):
            assert await status_of(txn(nested_txn(depth, leaf), timeout=10)) == TOO_MANY_OPS
        # The budget: a nested txn gets what its parents' largest op counts left.
        puts = [put_op(t.prefix + b"n%d" % i) for i in range(128)]
        inner = pb.TxnRequest(success=puts)
        for outer in (
            pb.TxnRequest(success=[pb.RequestOp(request_txn=inner)]),
            pb.TxnRequest(success=[put_op(t.prefix + b"x")], failure=[
                pb.RequestOp(request_txn=inner)
            ]),
        ):  # fmt: skip
            assert await status_of(t.kv.Txn(outer)) == TOO_MANY_OPS
        inner = pb.TxnRequest(success=puts[:127])
        ok = await t.kv.Txn(pb.TxnRequest(success=[pb.RequestOp(request_txn=inner)]))
        assert ok.succeeded and len(ok.responses[0].response_txn.responses) == 127
        two = [pb.Compare(key=b"a"), pb.Compare(key=b"b")]
        too_many = pb.TxnRequest(compare=two, success=[pb.RequestOp(request_txn=inner)])
        assert await status_of(t.kv.Txn(too_many)) == TOO_MANY_OPS

    run(scenario)


def test_unknown_fields_are_ignored_up_to_grpcs_limit(run: Callable[[Scenario], None]) -> None:
    async def scenario(t: Target) -> None:
        key = t.prefix + b"u"
        put = t.raw("/etcdserverpb.KV/Put")
        good = pb.PutRequest(key=key, value=b"v").SerializeToString()
        # Past max-request-bytes (1.5 MiB) but under gRPC's limit (+ 512 KiB): etcd drops the
        # unknown field before measuring the request.
        await put(good + field_bytes(100, b"x" * (1900 * 1024)), timeout=10)
        assert (await t.kv.Range(pb.RangeRequest(key=key))).kvs[0].value == b"v"
        nested = field_bytes(2, field_bytes(2, field_bytes(1, key) + field_bytes(99, b"y" * 999)))
        await t.raw("/etcdserverpb.KV/Txn")(nested, timeout=10)
        code, _ = await status_of(put(good + field_bytes(100, b"x" * (2100 * 1024)), timeout=10))
        assert code == C.RESOURCE_EXHAUSTED

    run(scenario)


# -- 5. the empty key in a watch; HashKV at the compacted revision --------------------------------


def test_a_watch_on_the_empty_key_watches_the_nul_key(run: Callable[[Scenario], None]) -> None:
    async def scenario(t: Target) -> None:
        sends: asyncio.Queue[pb.WatchRequest] = asyncio.Queue()

        async def requests() -> AsyncIterator[pb.WatchRequest]:
            while True:
                yield await sends.get()

        watch: Any = rpc_pb2_grpc.WatchStub(t.channel)
        call = watch.Watch(requests())
        await sends.put(pb.WatchRequest(create_request=pb.WatchCreateRequest(key=b"")))
        assert (await asyncio.wait_for(call.read(), 5)).created
        await t.kv.Put(pb.PutRequest(key=b"\0\0", value=t.prefix))  # not watched
        await t.kv.Put(pb.PutRequest(key=b"\0", value=t.prefix))
        resp = await asyncio.wait_for(call.read(), 5)
        assert [(e.kv.key, e.kv.value) for e in resp.events] == [(b"\0", t.prefix)]
        call.cancel()

    run(scenario)


def test_hashkv_at_the_compacted_revision_is_compacted(run: Callable[[Scenario], None]) -> None:
    async def scenario(t: Target) -> None:
        rev = (await t.kv.Put(pb.PutRequest(key=t.prefix + b"h", value=b"1"))).header.revision
        await t.kv.Compact(pb.CompactionRequest(revision=rev))
        hash_kv = t.maintenance.HashKV
        assert await status_of(hash_kv(pb.HashKVRequest(revision=rev))) == COMPACTED
        assert await status_of(hash_kv(pb.HashKVRequest(revision=rev - 1))) == COMPACTED
        assert await status_of(hash_kv(pb.HashKVRequest(revision=rev + 1))) == FUTURE
        # Revision 0 is the current one, even when that is the compacted one.
        assert (await hash_kv(pb.HashKVRequest(revision=0))).compact_revision == rev
        rev2 = (await t.kv.Put(pb.PutRequest(key=t.prefix + b"h", value=b"2"))).header.revision
        assert (await hash_kv(pb.HashKVRequest(revision=rev2))).header.revision == rev2

    run(scenario)
