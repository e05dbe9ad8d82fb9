"""etcd's MVCC behaviour, example by example, on the in-memory and the LMDB backend."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from raftkv_storage import LmdbBackend

from raftkv.kv import (
    Command,
    CompactionRequest,
    Compare,
    CompareResult,
    CompareTarget,
    DeleteRangeRequest,
    EventType,
    KVStateMachine,
    MemoryBackend,
    PutRequest,
    RangeRequest,
    SortOrder,
    SortTarget,
    TxnRequest,
    encode_command,
)
from raftkv.kv.backend import KVBackend
from raftkv.kv.codec import decode_command
from raftkv.kv.errors import KVError
from raftkv.kv.types import (
    CompactionResponse,
    DeleteRangeResponse,
    PutResponse,
    RangeResponse,
    Request,
    Response,
    TxnResponse,
)


class E:
    """A committed entry as the state machine sees it."""

    def __init__(self, index: int, data: bytes, kind: int = 0) -> None:
        self.index, self.term, self.data, self.kind = index, 1, data, kind


@pytest.fixture(params=["memory", "lmdb"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[KVBackend]:
    if request.param == "memory":
        yield MemoryBackend()
    else:
        b = LmdbBackend(tmp_path / "kv", quota_bytes=64 << 20)
        yield b
        b.close()


class Harness:
    def __init__(self, backend: KVBackend) -> None:
        self.sm = KVStateMachine(backend)
        self.index = 0

    def do(self, req: Request) -> Response | KVError:
        self.index += 1
        data = encode_command(Command(self.index, req))
        (res,) = self.sm.apply([E(self.index, data)])
        assert res.index == self.index and res.request_id == self.index
        return res.result

    def ok(self, req: Request) -> Response:
        out = self.do(req)
        assert not isinstance(out, KVError), out
        return out

    def get(self, req: RangeRequest) -> RangeResponse:
        return self.sm.store.range(req)


@pytest.fixture
def h(backend: KVBackend) -> Harness:
    return Harness(backend)


def test_revisions_start_at_one_and_count_writes(h: Harness) -> None:
    assert h.sm.store.current_revision() == 1
    assert h.get(RangeRequest(b"a")).revision == 1
    assert h.ok(PutRequest(b"a", b"1")) == PutResponse(2)
    assert h.ok(PutRequest(b"a", b"2", prev_kv=True)) == PutResponse(
        3, h.get(RangeRequest(b"a", revision=2)).kvs[0]
    )
    kv = h.get(RangeRequest(b"a")).kvs[0]
    assert (kv.create_revision, kv.mod_revision, kv.version, kv.value) == (2, 3, 2, b"2")
    # a delete of nothing does not move the revision
    assert h.ok(DeleteRangeRequest(b"zz")) == DeleteRangeResponse(3, 0)
    assert h.ok(DeleteRangeRequest(b"a", prev_kv=True)) == DeleteRangeResponse(4, 1, (kv,))
    assert h.get(RangeRequest(b"a")).kvs == ()
    h.ok(PutRequest(b"a", b"3"))
    kv = h.get(RangeRequest(b"a")).kvs[0]
    assert (kv.create_revision, kv.mod_revision, kv.version) == (5, 5, 1), "new generation"


def test_historical_reads_and_errors(h: Harness) -> None:
    for i in range(5):
        h.ok(PutRequest(b"k", b"v%d" % i))
    assert h.get(RangeRequest(b"k", revision=3)).kvs[0].value == b"v1"
    with pytest.raises(KVError, match=r"^mvcc: required revision is a future revision$"):
        h.get(RangeRequest(b"k", revision=7))
    assert h.ok(CompactionRequest(4)) == CompactionResponse(6)
    with pytest.raises(KVError, match=r"^mvcc: required revision has been compacted$"):
        h.get(RangeRequest(b"k", revision=3))
    assert h.get(RangeRequest(b"k", revision=4)).kvs[0].value == b"v2"
    assert str(h.do(CompactionRequest(4))) == "mvcc: required revision has been compacted"
    assert str(h.do(CompactionRequest(9))) == "mvcc: required revision is a future revision"


def test_range_options(h: Harness) -> None:
    for k, v in [(b"a", b"3"), (b"b", b"1"), (b"c", b"2"), (b"d", b"0")]:
        h.ok(PutRequest(k, v))
    h.ok(PutRequest(b"b", b"9"))
    every = RangeRequest(b"\0", b"\0")
    assert [kv.key for kv in h.get(every).kvs] == [b"a", b"b", b"c", b"d"]
    r = h.get(RangeRequest(b"a", b"z", limit=2))
    assert [kv.key for kv in r.kvs] == [b"a", b"b"] and r.more and r.count == 4
    r = h.get(RangeRequest(b"a", b"z", count_only=True))
    assert r.kvs == () and r.count == 4
    r = h.get(RangeRequest(b"a", b"z", keys_only=True))
    assert all(kv.value == b"" for kv in r.kvs)
    r = h.get(RangeRequest(b"b", b"\0"))
    assert [kv.key for kv in r.kvs] == [b"b", b"c", b"d"], "from-key"
    r = h.get(RangeRequest(b"a", b"z", sort_order=SortOrder.DESCEND))
    assert [kv.key for kv in r.kvs] == [b"d", b"c", b"b", b"a"]
    r = h.get(RangeRequest(b"a", b"z", sort_target=SortTarget.VALUE))
    assert [kv.value for kv in r.kvs] == [b"0", b"2", b"3", b"9"], "NONE + VALUE sorts ascending"
    r = h.get(RangeRequest(b"a", b"z", sort_order=SortOrder.DESCEND, sort_target=SortTarget.MOD))
    assert [kv.key for kv in r.kvs][:1] == [b"b"]
    r = h.get(RangeRequest(b"a", b"z", min_mod_revision=4, limit=1))
    assert [kv.key for kv in r.kvs] == [b"b"] and r.more and r.count == 4
    r = h.get(RangeRequest(b"a", b"z", max_create_revision=3))
    assert [kv.key for kv in r.kvs] == [b"a", b"b"]


def test_a_limited_range_with_order_none_sorts_only_what_it_fetched(h: Harness) -> None:
    # etcd 3.4 fetches limit + 1 keys in key order when the sort order is NONE, then sorts those
    # by the target. Checked against real etcd 3.4: `etcdctl get a --from-key --limit=1
    # --sort-by=VERSION` over a (version 3), b (2), c (1) answers b, not c.
    for key, versions in [(b"a", 3), (b"b", 2), (b"c", 1)]:
        for i in range(versions):
            h.ok(PutRequest(key, b"%d" % i))
    r = h.get(RangeRequest(b"a", b"\0", limit=1, sort_target=SortTarget.VERSION))
    assert [kv.key for kv in r.kvs] == [b"b"] and r.more and r.count == 3
    r = h.get(
        RangeRequest(
            b"a", b"\0", limit=1, sort_order=SortOrder.ASCEND, sort_target=SortTarget.VERSION
        )
    )
    assert [kv.key for kv in r.kvs] == [b"c"], "an explicit order fetches everything first"


def test_put_flags(h: Harness) -> None:
    assert str(h.do(PutRequest(b"x", ignore_value=True))) == "etcdserver: key not found"
    assert str(h.do(PutRequest(b"x", b"v", ignore_value=True))) == "etcdserver: value is provided"
    assert str(h.do(PutRequest(b"x", lease=5, ignore_lease=True))) == (
        "etcdserver: lease is provided"
    )
    assert str(h.do(PutRequest(b""))) == "etcdserver: key is not provided"
    # Lease 7 was never granted: etcd refuses the put, before looking for the key.
    assert str(h.do(PutRequest(b"x", b"v", lease=7))) == "etcdserver: requested lease not found"
    assert str(h.do(PutRequest(b"x", ignore_value=True, lease=8))) == (
        "etcdserver: requested lease not found"
    )
    assert h.sm.store.current_revision() == 1
    h.ok(PutRequest(b"x", b"v"))
    h.ok(PutRequest(b"x", ignore_value=True))
    kv = h.get(RangeRequest(b"x")).kvs[0]
    assert (kv.value, kv.lease, kv.version) == (b"v", 0, 2)
    h.ok(PutRequest(b"x", b"w", ignore_lease=True))
    kv = h.get(RangeRequest(b"x")).kvs[0]
    assert (kv.value, kv.lease, kv.version) == (b"w", 0, 3)
    assert h.sm.store.current_revision() == 4


def test_txn_semantics(h: Harness) -> None:
    h.ok(PutRequest(b"a", b"1"))
    h.ok(PutRequest(b"b", b"2"))
    cmp_ok = Compare(CompareResult.EQUAL, CompareTarget.VALUE, b"a", value=b"1")
    nested = TxnRequest(
        (Compare(CompareResult.GREATER, CompareTarget.VERSION, b"a", range_end=b"\0", version=0),),
        (PutRequest(b"n", b"nested"),),
    )
    t = TxnRequest(
        (cmp_ok,),
        (PutRequest(b"a", b"10"), DeleteRangeRequest(b"b"), RangeRequest(b"a", b"c"), nested),
        (PutRequest(b"f", b"x"),),
    )
    r = h.ok(t)
    assert isinstance(r, TxnResponse) and r.succeeded and r.revision == 4
    rng = r.responses[2]
    assert isinstance(rng, RangeResponse) and [kv.value for kv in rng.kvs] == [b"10"]
    got = {kv.key: kv.mod_revision for kv in h.get(RangeRequest(b"\0", b"\0")).kvs}
    assert got == {b"a": 4, b"n": 4}, "one revision for the whole txn"
    r = h.ok(t)
    assert isinstance(r, TxnResponse) and not r.succeeded and r.revision == 5

    # compares over a range: every key must pass; VALUE on missing keys fails
    def succeeded(*cmps: Compare) -> bool:
        r = h.ok(TxnRequest(cmps))
        assert isinstance(r, TxnResponse)
        return r.succeeded

    assert not succeeded(Compare(CompareResult.EQUAL, CompareTarget.VALUE, b"q", value=b""))
    assert succeeded(Compare(CompareResult.EQUAL, CompareTarget.CREATE, b"q"))
    assert succeeded(
        Compare(CompareResult.LESS, CompareTarget.MOD, b"a", range_end=b"z", mod_revision=6)
    )
    assert not succeeded(
        Compare(CompareResult.LESS, CompareTarget.MOD, b"a", range_end=b"z", mod_revision=5)
    )


def test_txn_rejects_duplicate_keys(h: Harness) -> None:
    dup = "etcdserver: duplicate key given in txn request"
    assert str(h.do(TxnRequest((), (PutRequest(b"a"), PutRequest(b"a"))))) == dup
    assert str(h.do(TxnRequest((), (DeleteRangeRequest(b"a", b"c"), PutRequest(b"b"))))) == dup
    inner = TxnRequest((), (PutRequest(b"a"),), (PutRequest(b"a"),))
    assert not isinstance(h.do(TxnRequest((), (inner,))), KVError), "then/else may share keys"
    assert str(h.do(TxnRequest((), (inner, PutRequest(b"a"))))) == dup
    many = tuple(PutRequest(b"k%d" % i) for i in range(129))
    assert str(h.do(TxnRequest((), many))) == "etcdserver: too many operations in txn request"
    assert h.sm.store.current_revision() == 2


def test_compaction_keeps_latest_and_drops_tombstones(h: Harness) -> None:
    h.ok(PutRequest(b"a", b"1"))  # 2
    h.ok(PutRequest(b"a", b"2"))  # 3
    h.ok(PutRequest(b"b", b"1"))  # 4
    h.ok(DeleteRangeRequest(b"b"))  # 5
    h.ok(PutRequest(b"c", b"1"))  # 6
    h.ok(CompactionRequest(5))
    assert [kv.value for kv in h.get(RangeRequest(b"\0", b"\0", revision=5)).kvs] == [b"2"]
    assert h.get(RangeRequest(b"a")).kvs[0].mod_revision == 3
    batch = h.sm.store.events(5, b"\0", b"\0")
    assert [(e.type, e.kv.key, e.kv.mod_revision) for e in batch.events] == [
        (EventType.PUT, b"c", 6)
    ]
    assert h.sm.store.events(4, b"\0", b"\0").compact_revision == 5


def test_watch_history(h: Harness) -> None:
    h.ok(PutRequest(b"a", b"1"))
    h.ok(PutRequest(b"b", b"1"))
    h.ok(TxnRequest((), (PutRequest(b"a", b"2"), DeleteRangeRequest(b"b"))))
    batch = h.sm.store.events(2, b"a", b"c", prev_kv=True)
    got = [(e.type, e.kv.key, e.kv.mod_revision, e.sub, e.prev_kv) for e in batch.events]
    a1 = h.get(RangeRequest(b"a", revision=2)).kvs[0]
    b1 = h.get(RangeRequest(b"b", revision=3)).kvs[0]
    assert got == [
        (EventType.PUT, b"a", 2, 0, None),
        (EventType.PUT, b"b", 3, 0, None),
        (EventType.PUT, b"a", 4, 0, a1),
        (EventType.DELETE, b"b", 4, 1, b1),
    ]
    assert batch.next_revision == 5
    assert [e.kv.key for e in h.sm.store.events(3, b"a").events] == [b"a"]
    first = h.sm.store.events(2, b"\0", b"\0", max_events=1)
    assert len(first.events) == 1 and first.next_revision == 3
    two = h.sm.store.events(4, b"\0", b"\0", max_events=1)
    assert len(two.events) == 2, "a revision is never split"


def test_apply_is_idempotent_and_skips_noops(h: Harness) -> None:
    data = encode_command(Command(1, PutRequest(b"k", b"v")))
    entries = [E(1, b""), E(2, data), E(3, b"\x01\x02", kind=1)]
    assert [r.index for r in h.sm.apply(entries)] == [2]
    assert h.sm.applied_index() == 3
    assert h.sm.apply(entries) == []
    assert h.sm.store.current_revision() == 2


def test_snapshot_restore_and_hash(h: Harness, tmp_path: Path) -> None:
    for i in range(300):
        h.ok(PutRequest(b"k%03d" % (i % 50), b"v" * (i % 7)))
    h.ok(CompactionRequest(100))
    other = KVStateMachine(MemoryBackend())
    other.restore(h.sm.snapshot_chunks(chunk_bytes=512))
    assert other.applied_index() == h.sm.applied_index()
    assert other.store.hash_kv() == h.sm.store.hash_kv()
    assert other.store.hash_kv(200) == h.sm.store.hash_kv(200)
    assert other.store.range(RangeRequest(b"\0", b"\0")) == h.get(RangeRequest(b"\0", b"\0"))
    lm = LmdbBackend(tmp_path / "restored", quota_bytes=64 << 20)
    try:
        third = KVStateMachine(lm)
        third.restore(other.snapshot_chunks())
        assert third.store.hash_kv() == h.sm.store.hash_kv()
    finally:
        lm.close()


def test_corrupt_snapshot_changes_nothing(h: Harness) -> None:
    h.ok(PutRequest(b"a", b"1"))
    blob = bytearray(b"".join(h.sm.snapshot_chunks()))
    blob[len(blob) // 2] ^= 1
    target = KVStateMachine(MemoryBackend())
    target_h = Harness(target.backend)
    target_h.ok(PutRequest(b"keep", b"me"))
    from raftkv.errors import CorruptionError

    with pytest.raises(CorruptionError):
        target.restore([bytes(blob)])
    with pytest.raises(CorruptionError):
        target.restore([bytes(blob[:-3])])
    assert target.store.get(b"keep") is not None


def test_codec_roundtrip() -> None:
    t = TxnRequest(
        (
            Compare(CompareResult.NOT_EQUAL, CompareTarget.LEASE, b"k", lease=-3),
            Compare(CompareResult.LESS, CompareTarget.VALUE, b"k", range_end=b"z", value=b"\x00v"),
            # etcd's unnamed numbers, which etcd evaluates (raftkv.kv.types)
            Compare(CompareResult.OTHER, CompareTarget.VERSION, b"k", version=2),
            Compare(CompareResult.EQUAL, CompareTarget.OTHER, b"k", range_end=b"l"),
        ),
        (
            RangeRequest(
                b"a", b"b", 3, -1, SortOrder.DESCEND, SortTarget.MOD, True, True, False, 1, 2, 3, 4
            ),
            TxnRequest((), (DeleteRangeRequest(b"x", b"\0", True),)),
        ),
        (PutRequest(b"p", b"v" * 300, 1 << 62, True, False, True),),
    )
    for req in (t, CompactionRequest(12345, True), PutRequest(b"k")):
        cmd = Command(2**40, req)
        assert decode_command(encode_command(cmd)) == cmd
