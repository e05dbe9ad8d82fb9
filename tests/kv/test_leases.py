"""Leases in the state machine: grant, attach, re-attach, detach, revoke, and their survival in
snapshots, on both backends (etcd's apply-time behaviour, docs/leases.md)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from raftkv_storage import LmdbBackend

from raftkv.kv import Command, KVStateMachine, MemoryBackend, encode_command
from raftkv.kv.backend import KVBackend
from raftkv.kv.codec import decode_command
from raftkv.kv.errors import KVError
from raftkv.kv.leases import attached_keys, lease_ttl
from raftkv.kv.types import (
    Compare,
    CompareResult,
    CompareTarget,
    DeleteRangeRequest,
    EventType,
    LeaseGrantRequest,
    LeaseGrantResponse,
    LeaseRevokeRequest,
    LeaseRevokeResponse,
    PutRequest,
    RangeRequest,
    Request,
    Response,
    TxnRequest,
)


class E:
    def __init__(self, index: int, data: bytes, term: int) -> None:
        self.index, self.term, self.kind, self.data = index, term, 0, data


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

    def do(self, req: Request, term: int = 1) -> Response | KVError:
        self.index += 1
        data = encode_command(Command(self.index, req))
        (res,) = self.sm.apply([E(self.index, data, term)])
        return res.result

    def ok(self, req: Request, term: int = 1) -> Response:
        out = self.do(req, term)
        assert not isinstance(out, KVError), out
        return out

    def keys(self, lease: int) -> list[bytes]:
        with self.sm.backend.read() as txn:
            return attached_keys(txn, lease)

    def lease_of(self, key: bytes) -> int | None:
        kv = self.sm.store.get(key)
        return None if kv is None else kv.lease


@pytest.fixture
def h(backend: KVBackend) -> Harness:
    return Harness(backend)


def test_grant_makes_no_revision_and_refuses_duplicates_and_huge_ttls(h: Harness) -> None:
    assert h.ok(LeaseGrantRequest(7, 30)) == LeaseGrantResponse(1, 7, 30)
    assert str(h.do(LeaseGrantRequest(7, 10))) == "etcdserver: lease already exists"
    # The TTL is checked first, as etcd's lessor does.
    assert str(h.do(LeaseGrantRequest(7, 9_000_000_001))) == "etcdserver: too large lease TTL"
    assert h.ok(LeaseGrantRequest(8, 9_000_000_000)) == LeaseGrantResponse(1, 8, 9_000_000_000)
    assert h.sm.leases() == [(7, 30), (8, 9_000_000_000)]
    assert h.sm.store.current_revision() == 1


def test_puts_attach_reattach_and_detach(h: Harness) -> None:
    h.ok(LeaseGrantRequest(1, 10))
    h.ok(LeaseGrantRequest(2, 10))
    h.ok(PutRequest(b"b", b"v", lease=1))
    h.ok(PutRequest(b"a", b"v", lease=1))
    assert h.keys(1) == [b"a", b"b"]
    h.ok(PutRequest(b"a", b"w", lease=2))  # moves to lease 2
    assert (h.keys(1), h.keys(2)) == ([b"b"], [b"a"])
    h.ok(PutRequest(b"a", b"x", ignore_lease=True))  # keeps lease 2
    assert h.keys(2) == [b"a"] and h.lease_of(b"a") == 2
    h.ok(PutRequest(b"a", b"y"))  # lease 0 detaches
    assert h.keys(2) == [] and h.lease_of(b"a") == 0
    h.ok(DeleteRangeRequest(b"b"))  # a delete detaches
    assert h.keys(1) == []


def test_an_unknown_lease_fails_the_whole_request(h: Harness) -> None:
    h.ok(LeaseGrantRequest(1, 10))
    assert str(h.do(PutRequest(b"a", lease=9))) == "etcdserver: requested lease not found"
    txn = TxnRequest(success=(PutRequest(b"a", lease=1), PutRequest(b"b", lease=9)))
    assert str(h.do(txn)) == "etcdserver: requested lease not found"
    assert h.sm.store.current_revision() == 1 and h.keys(1) == []
    cmp = Compare(CompareResult.EQUAL, CompareTarget.LEASE, b"a", lease=1)
    h.ok(TxnRequest(success=(PutRequest(b"a", lease=1),)))
    assert h.ok(TxnRequest(compare=(cmp,))).succeeded  # type: ignore[union-attr]
    assert h.keys(1) == [b"a"]


def test_revoke_deletes_every_attached_key_in_one_revision_in_key_order(h: Harness) -> None:
    h.ok(LeaseGrantRequest(5, 10))
    for key in (b"c", b"a", b"b"):
        h.ok(PutRequest(key, b"v", lease=5))
    h.ok(PutRequest(b"z", b"unleased"))
    before = h.sm.store.current_revision()
    assert h.ok(LeaseRevokeRequest(5)) == LeaseRevokeResponse(before + 1, 5, 3)
    events = h.sm.store.events(before + 1, b"\0", b"\0").events
    assert [(e.type, e.kv.key, e.kv.mod_revision, e.sub) for e in events] == [
        (EventType.DELETE, b"a", before + 1, 0),
        (EventType.DELETE, b"b", before + 1, 1),
        (EventType.DELETE, b"c", before + 1, 2),
    ]
    assert h.sm.store.range(RangeRequest(b"\0", b"\0")).count == 1
    assert h.sm.leases() == []
    assert str(h.do(LeaseRevokeRequest(5))) == "etcdserver: requested lease not found"


def test_revoke_of_a_lease_without_keys_keeps_the_revision(h: Harness) -> None:
    h.ok(LeaseGrantRequest(5, 10))
    assert h.ok(LeaseRevokeRequest(5)) == LeaseRevokeResponse(1, 5, 0)


def test_an_expiry_applies_only_in_the_term_that_decided_it(h: Harness) -> None:
    h.ok(LeaseGrantRequest(5, 10))
    h.ok(PutRequest(b"a", lease=5))
    # Decided by the leader of term 3, but carried by an entry of term 4: no effect.
    assert isinstance(h.do(LeaseRevokeRequest(5, term=3), term=4), KVError)
    assert h.keys(5) == [b"a"] and h.sm.leases() == [(5, 10)]
    assert h.ok(LeaseRevokeRequest(5, term=4), term=4) == LeaseRevokeResponse(3, 5, 1)


def test_leases_and_attachments_survive_a_snapshot(h: Harness, tmp_path: Path) -> None:
    h.ok(LeaseGrantRequest(5, 10))
    h.ok(PutRequest(b"a", lease=5))
    image = list(h.sm.snapshot_chunks())
    with LmdbBackend(tmp_path / "restored", quota_bytes=64 << 20) as other:
        restored = KVStateMachine(other)
        restored.restore(image)
        assert restored.leases() == [(5, 10)]
        with other.read() as txn:
            assert attached_keys(txn, 5) == [b"a"] and lease_ttl(txn, 5) == 10
        assert restored.store.hash_kv() == h.sm.store.hash_kv()


@pytest.mark.parametrize(
    "req",
    [
        LeaseGrantRequest(-(2**63), 2),
        LeaseGrantRequest(2**63 - 1, 9_000_000_000),
        LeaseRevokeRequest(1),
        LeaseRevokeRequest(-5, 2**40),
    ],
)
def test_lease_commands_round_trip(req: Request) -> None:
    assert decode_command(encode_command(Command(3, req))).request == req
