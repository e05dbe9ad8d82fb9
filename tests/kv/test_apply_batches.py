"""A batch of commands applied in one transaction gives exactly what applying them one by one
gives, while reading and writing the revision counters once per batch, not per request."""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from raftkv_storage import LmdbBackend

from raftkv.kv import (
    Command,
    CompactionRequest,
    Compare,
    CompareResult,
    CompareTarget,
    DeleteRangeRequest,
    KVStateMachine,
    MemoryBackend,
    PutRequest,
    RangeRequest,
    TxnRequest,
    encode_command,
)
from raftkv.kv.backend import META, TABLES, KVBackend, WriteTxn
from raftkv.kv.codec import is_put_command
from raftkv.kv.errors import KVError
from raftkv.kv.types import Request


class E:
    def __init__(self, index: int, data: bytes) -> None:
        self.index, self.term, self.data, self.kind = index, 1, data, 0


def _requests() -> list[Request]:
    """Writes, failures that must not take a revision, a compaction and reads around it."""
    rnd = random.Random(7)
    reqs: list[Request] = []
    for i in range(40):
        key = b"k%02d" % rnd.randrange(12)
        roll = rnd.random()
        if roll < 0.45:
            reqs.append(PutRequest(key, b"v%d" % i, prev_kv=rnd.random() < 0.5))
        elif roll < 0.55:
            reqs.append(PutRequest(key, ignore_value=True))  # KeyNotFound if absent
        elif roll < 0.65:
            reqs.append(DeleteRangeRequest(key, b"k99", prev_kv=True))
        elif roll < 0.8:
            cmp = Compare(CompareResult.GREATER, CompareTarget.VERSION, key, version=0)
            reqs.append(
                TxnRequest(
                    (cmp,),
                    (PutRequest(key, b"t%d" % i), RangeRequest(b"k", b"l")),
                    (PutRequest(key, b"f%d" % i), DeleteRangeRequest(b"nothing")),
                )
            )
        elif roll < 0.9:
            reqs.append(RangeRequest(b"k", b"l", revision=rnd.randrange(1, 30)))
        else:
            reqs.append(CompactionRequest(rnd.randrange(1, 25)))  # some fail: future, compacted
    return reqs


def _dump(backend: KVBackend) -> dict[str, list[tuple[bytes, bytes]]]:
    with backend.read() as txn:
        return {t: list(txn.scan(t, b"")) for t in TABLES}


def _apply(backend: KVBackend, reqs: Sequence[Request], cuts: Sequence[int]) -> list[Any]:
    sm = KVStateMachine(backend)
    entries = [E(i + 1, encode_command(Command(i + 1, r))) for i, r in enumerate(reqs)]
    out: list[Any] = []
    bounds = [0, *cuts, len(entries)]
    for lo, hi in itertools.pairwise(bounds):
        for res in sm.apply(entries[lo:hi]):
            r = res.result
            out.append((res.index, type(r).__name__, str(r)) if isinstance(r, KVError) else r)
    return out


@pytest.mark.parametrize("kind", ["memory", "lmdb"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_batches_of_any_size_apply_exactly_as_one_by_one(
    tmp_path: Path, kind: str, seed: int
) -> None:
    reqs = _requests()
    rnd = random.Random(seed)
    cuts = sorted(rnd.sample(range(1, len(reqs)), 5))

    def backend(name: str) -> KVBackend:
        return MemoryBackend() if kind == "memory" else LmdbBackend(tmp_path / name)

    one, batched = backend("one"), backend("batched")
    expected = _apply(one, reqs, range(1, len(reqs)))
    got = _apply(batched, reqs, cuts)
    assert got == expected
    assert any(isinstance(r, tuple) for r in expected), "the sequence must include failures"
    assert _dump(batched) == _dump(one)
    for b in (one, batched):
        if isinstance(b, LmdbBackend):
            b.close()


class _CountingBackend(MemoryBackend):
    """Counts reads and writes of the current-revision counter in write transactions."""

    def __init__(self) -> None:
        super().__init__()
        self.rev_gets = self.rev_puts = 0

    @contextmanager
    def write(self) -> Iterator[WriteTxn]:
        with super().write() as txn:
            outer = self

            class Counting:
                def __getattr__(self, name: str) -> Any:
                    return getattr(txn, name)

                def get(self, table: str, key: bytes) -> bytes | None:
                    if table == META and key == b"rev":
                        outer.rev_gets += 1
                    return txn.get(table, key)

                def put(self, table: str, key: bytes, value: bytes) -> None:
                    if table == META and key == b"rev":
                        outer.rev_puts += 1
                    txn.put(table, key, value)

            yield Counting()


def test_a_batch_reads_and_writes_the_revision_once() -> None:
    backend = _CountingBackend()
    sm = KVStateMachine(backend)
    puts = [E(i, encode_command(Command(i, PutRequest(b"k%d" % i, b"v")))) for i in range(1, 11)]
    results = sm.apply(puts)
    assert [r.result.revision for r in results] == list(range(2, 12))  # type: ignore[union-attr]
    assert (backend.rev_gets, backend.rev_puts) == (1, 1)
    assert sm.store.current_revision() == 11


@pytest.mark.parametrize("request_id", [1, 127, 128, 300, 2**40])
def test_is_put_command_reads_the_tag_after_any_request_id(request_id: int) -> None:
    def cmd(req: Request) -> bytes:
        return encode_command(Command(request_id, req))

    assert is_put_command(cmd(PutRequest(b"k", b"v", prev_kv=True)))
    for other in (
        RangeRequest(b"k"),
        DeleteRangeRequest(b"k"),
        TxnRequest((), (PutRequest(b"k"),)),
        CompactionRequest(3),
    ):
        assert not is_put_command(cmd(other))
    for junk in (b"", b"K1", b"K1\x80", b"MA{}", b"K1\x01"):
        assert not is_put_command(junk)
