"""LMDB key space: crash during apply batches, quota, corruption at open."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from raftkv_storage import LmdbBackend

from raftkv.errors import CorruptionError
from raftkv.kv import Command, KVStateMachine, PutRequest, RangeRequest, encode_command
from raftkv.kv.errors import NoSpaceError

_WORKER = r"""
import sys
from raftkv.kv import Command, KVStateMachine, PutRequest, TxnRequest, encode_command
from raftkv_storage import LmdbBackend
class E:
    def __init__(s, i, d): s.index, s.term, s.kind, s.data = i, 1, 0, d
sm = KVStateMachine(LmdbBackend(sys.argv[1], quota_bytes=256 << 20))
i = sm.applied_index()
while True:
    batch = []
    for _ in range(50):
        i += 1
        ops = (PutRequest(b"k%d" % (i % 97), b"%d" % i), PutRequest(b"last", b"%d" % i))
        batch.append(E(i, encode_command(Command(i, TxnRequest((), ops)))))
    sm.apply(batch)
    sys.stdout.write(f"{i}\n")
    sys.stdout.flush()
"""


def test_sigkill_mid_apply_keeps_index_and_effects_together(tmp_path: Path) -> None:
    acked = 0
    for round_ in range(3):
        proc = subprocess.Popen(
            [sys.executable, "-c", _WORKER, str(tmp_path)], stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout is not None
        deadline = time.monotonic() + 0.5 + 0.2 * round_
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            acked = int(line)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        with LmdbBackend(tmp_path, quota_bytes=256 << 20) as backend:
            sm = KVStateMachine(backend)
            applied = sm.applied_index()
            assert applied >= acked and applied % 50 == 0
            last = sm.store.get(b"last")
            assert last is not None and int(last.value) == applied, "index and effects agree"
            assert sm.store.current_revision() == applied + 1, "one revision per txn"
    assert acked > 0


class E:
    def __init__(self, index: int, data: bytes) -> None:
        self.index, self.term, self.kind, self.data = index, 1, 0, data


def test_quota_answers_database_space_exceeded(tmp_path: Path) -> None:
    with LmdbBackend(tmp_path, quota_bytes=1 << 20, map_size_bytes=4 << 20) as backend:
        sm = KVStateMachine(backend, quota_bytes=1 << 20)
        results = []
        for i in range(1, 40):
            req = PutRequest(b"big%d" % i, b"x" * 100_000)
            results += sm.apply([E(i, encode_command(Command(i, req)))])
        errors = [r.result for r in results if isinstance(r.result, NoSpaceError)]
        assert errors and str(errors[0]) == "mvcc: database space exceeded"
        assert sm.applied_index() == 39, "rejected entries are still applied (as errors)"
        assert sm.store.range(RangeRequest(b"big1")).kvs, "reads still work"


def test_map_full_raises_no_space_instead_of_crashing(tmp_path: Path) -> None:
    with LmdbBackend(tmp_path, quota_bytes=1 << 40, map_size_bytes=1 << 20) as backend:
        sm = KVStateMachine(backend, quota_bytes=1 << 40)
        reqs = [PutRequest(b"k%d" % i, b"x" * 50_000) for i in range(1, 60)]
        with pytest.raises(NoSpaceError, match="mvcc: database space exceeded"):
            sm.apply([E(i, encode_command(Command(i, r))) for i, r in enumerate(reqs, 1)])
        assert sm.applied_index() == 0, "the whole batch was rolled back"


def test_truncated_key_space_is_refused(tmp_path: Path) -> None:
    with LmdbBackend(tmp_path, quota_bytes=64 << 20) as backend:
        sm = KVStateMachine(backend)
        reqs = [PutRequest(b"k%05d" % i, b"v" * 200) for i in range(1, 2000)]
        sm.apply([E(i, encode_command(Command(i, r))) for i, r in enumerate(reqs, 1)])
    f = tmp_path / "data.mdb"
    with open(f, "r+b") as fh:
        fh.truncate(f.stat().st_size // 3)
    with pytest.raises(CorruptionError, match="truncated") as info:
        LmdbBackend(tmp_path, quota_bytes=64 << 20)
    assert str(f) in str(info.value)
