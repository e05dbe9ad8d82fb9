"""Corruption and crash tests for LmdbRaftLog."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from raftkv_storage.log import LmdbRaftLog

from raftkv.errors import CorruptionError
from raftkv.raft.types import Entry, HardState

MAP = 64 << 20


def _payload(i: int) -> bytes:
    return b"ENTRY-%08d-" % i + b"p" * 40


def _fill(path: Path, n: int) -> None:
    with LmdbRaftLog(path, map_size_bytes=MAP) as log:
        log.save(
            HardState(1, 1, n),
            [Entry(1, i, data=_payload(i)) for i in range(1, n + 1)],
            None,
            sync=True,
        )


def test_flipped_byte_in_entry_is_detected_with_file_and_index(tmp_path: Path) -> None:
    _fill(tmp_path, 200)
    f = tmp_path / "data.mdb"
    raw = bytearray(f.read_bytes())
    pos = raw.find(_payload(123)) + 20
    raw[pos] ^= 0x01
    f.write_bytes(bytes(raw))
    with pytest.raises(CorruptionError) as info:
        LmdbRaftLog(tmp_path, map_size_bytes=MAP)
    assert str(f) in str(info.value)
    assert "entry 123" in str(info.value)


def test_flipped_byte_is_also_caught_on_read_without_startup_scan(tmp_path: Path) -> None:
    _fill(tmp_path, 50)
    f = tmp_path / "data.mdb"
    raw = bytearray(f.read_bytes())
    raw[raw.find(_payload(7)) + 3] ^= 0x80
    f.write_bytes(bytes(raw))
    with LmdbRaftLog(tmp_path, map_size_bytes=MAP, verify=False) as log:
        assert log.entries(1, 7)[-1].index == 6
        with pytest.raises(CorruptionError, match="entry 7 checksum"):
            log.entries(5, 9)
        with pytest.raises(CorruptionError, match="entry 7"):
            log.term(7)


def test_truncated_file_is_detected(tmp_path: Path) -> None:
    _fill(tmp_path, 3000)
    f = tmp_path / "data.mdb"
    size = f.stat().st_size
    with open(f, "r+b") as fh:
        fh.truncate(size // 2)
    with pytest.raises(CorruptionError, match="truncated") as info:
        LmdbRaftLog(tmp_path, map_size_bytes=MAP)
    assert str(f) in str(info.value)


def test_garbage_file_is_detected(tmp_path: Path) -> None:
    _fill(tmp_path, 10)
    f = tmp_path / "data.mdb"
    f.write_bytes(b"\xde\xad" * 8192)
    with pytest.raises(CorruptionError, match=r"data\.mdb"):
        LmdbRaftLog(tmp_path, map_size_bytes=MAP)


def test_lost_tail_below_commit_is_detected(tmp_path: Path) -> None:
    with LmdbRaftLog(tmp_path, map_size_bytes=MAP) as log:
        log.save(HardState(1, 1, 5), [Entry(1, i) for i in range(1, 4)], None, sync=True)
    with pytest.raises(CorruptionError, match="commit 5 is past the last index 3"):
        LmdbRaftLog(tmp_path, map_size_bytes=MAP)


_WORKER = r"""
import sys
from raftkv.raft.types import Entry, HardState
from raftkv_storage.log import LmdbRaftLog
path, batch = sys.argv[1], int(sys.argv[2])
log = LmdbRaftLog(path, map_size_bytes=256 << 20)
nxt = log.last_index() + 1
while True:
    ents = [Entry(3, i, data=b"v%d" % i * 20) for i in range(nxt, nxt + batch)]
    log.save(HardState(3, 1, nxt - 1), ents, None, sync=True)
    nxt += batch
    sys.stdout.write(f"{nxt - 1}\n")
    sys.stdout.flush()
"""


@pytest.mark.parametrize("batch", [1, 64])
def test_sigkill_mid_batch_loses_nothing_acknowledged(tmp_path: Path, batch: int) -> None:
    acked = 0
    for round_ in range(3):
        proc = subprocess.Popen(
            [sys.executable, "-c", _WORKER, str(tmp_path), str(batch)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        deadline = time.monotonic() + 0.4 + 0.2 * round_
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            acked = int(line)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        with LmdbRaftLog(tmp_path, map_size_bytes=256 << 20) as log:  # verifies checksums
            assert log.last_index() >= acked
            assert log.last_index() % batch == 0, "a batch is all or nothing"
            got = log.entries(1, acked + 1)
            assert [e.index for e in got] == list(range(1, acked + 1))
            assert all(e.data == b"v%d" % e.index * 20 for e in got)
    assert acked > 0
