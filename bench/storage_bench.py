"""Storage benchmark: prints numbers, asserts nothing.

    python bench/storage_bench.py [--dir DIR] [--keys 1000000] [--quick]

Measures, on the disk that holds DIR (default: a temp dir under the current directory):
* raw fsync rate (4 KiB pwrite + fdatasync);
* durable log appends/s at batch sizes 1, 16, 256, in both durability modes;
* MVCC applies/s (puts, in apply batches of 1, 64 and 512);
* range latency for 1, 100 and 10,000 keys;
* open time and RSS (in a fresh process) of a key space with N keys.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from raftkv_storage import LmdbBackend, LmdbRaftLog

from raftkv.kv import Command, KVStateMachine, PutRequest, RangeRequest, encode_command
from raftkv.raft.types import Entry, HardState


class _E:
    __slots__ = ("data", "index", "kind")

    def __init__(self, index: int, data: bytes) -> None:
        self.index, self.kind, self.data = index, 0, data


def raw_fsync_rate(d: Path, seconds: float) -> float:
    path = d / "fsync.bin"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    block = b"x" * 4096
    n, start = 0, time.perf_counter()
    try:
        while time.perf_counter() - start < seconds:
            os.pwrite(fd, block, (n % 256) * 4096)
            os.fdatasync(fd)
            n += 1
    finally:
        os.close(fd)
        path.unlink()
    return n / (time.perf_counter() - start)


def log_appends(d: Path, batch: int, durability: str, seconds: float) -> tuple[float, float]:
    path = d / f"log-{durability}-{batch}"
    log = LmdbRaftLog(path, map_size_bytes=4 << 30, durability=durability)
    payload = b"p" * 256
    idx, commits, start = 1, 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        ents = [Entry(1, i, data=payload) for i in range(idx, idx + batch)]
        log.save(HardState(1, 1, idx - 1), ents, None, sync=True)
        idx += batch
        commits += 1
    elapsed = time.perf_counter() - start
    log.close()
    shutil.rmtree(path)
    return (idx - 1) / elapsed, commits / elapsed


def mvcc_applies(d: Path, batch: int, total: int) -> float:
    path = d / f"kv-apply-{batch}"
    with LmdbBackend(path) as backend:
        sm = KVStateMachine(backend)
        cmds = [
            _E(
                i,
                encode_command(Command(i, PutRequest(b"key/%08d" % (i * 7919 % total), b"v" * 64))),
            )
            for i in range(1, total + 1)
        ]
        start = time.perf_counter()
        for lo in range(0, total, batch):
            sm.apply(cmds[lo : lo + batch])
        rate = total / (time.perf_counter() - start)
    shutil.rmtree(path)
    return rate


def build_keyspace(path: Path, n: int) -> None:
    with LmdbBackend(path, quota_bytes=8 << 30) as backend:
        sm = KVStateMachine(backend, quota_bytes=8 << 30)
        batch = 5000
        for lo in range(0, n, batch):
            ents = [
                _E(i + 1, encode_command(Command(i + 1, PutRequest(b"key/%08d" % i, b"v" * 32))))
                for i in range(lo, min(n, lo + batch))
            ]
            sm.apply(ents)


def range_latency(path: Path, n: int) -> dict[int, float]:
    out = {}
    with LmdbBackend(path, quota_bytes=8 << 30) as backend:
        store = KVStateMachine(backend).store
        for count in (1, 100, 10_000):
            lo = n // 2
            req = RangeRequest(b"key/%08d" % lo, b"key/%08d" % (lo + count))
            reps = max(3, 2000 // count)
            resp = store.range(req)
            start = time.perf_counter()
            for _ in range(reps):
                resp = store.range(req)
            out[count] = (time.perf_counter() - start) / reps
            assert len(resp.kvs) == min(count, n - lo)
    return out


_OPEN_PROBE = r"""
import resource, sys, time
t0 = time.perf_counter()
from raftkv_storage import LmdbBackend
from raftkv.kv import KVStateMachine, RangeRequest
t1 = time.perf_counter()
b = LmdbBackend(sys.argv[1], quota_bytes=8 << 30)
sm = KVStateMachine(b)
rev = sm.store.current_revision()
kv = sm.store.range(RangeRequest(b"key/00012345")).kvs
t2 = time.perf_counter()
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(f"{t2 - t1:.4f} {rss} {rev} {len(kv)}")
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", default=None)
    ap.add_argument("--keys", type=int, default=1_000_000)
    ap.add_argument("--quick", action="store_true", help="shorter runs, 100k keys")
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="raftkv-bench-", dir=args.dir or "."))
    secs = 1.0 if args.quick else 3.0
    n = 100_000 if args.quick else args.keys
    try:
        print(f"dir: {base}  python {sys.version.split()[0]}")
        print(f"raw fsync (4 KiB pwrite+fdatasync): {raw_fsync_rate(base, secs):,.0f}/s")
        for durability in ("full", "fast"):
            for batch in (1, 16, 256):
                ents, commits = log_appends(base, batch, durability, secs)
                print(
                    f"log append durability={durability:<4} batch={batch:<3}: "
                    f"{ents:>10,.0f} entries/s  {commits:>7,.0f} commits/s"
                )
        for batch in (1, 64, 512):
            total = 2_000 if batch == 1 else 50_000
            print(f"mvcc apply batch={batch:<3}: {mvcc_applies(base, batch, total):,.0f} puts/s")
        ks = base / "keyspace"
        t0 = time.perf_counter()
        build_keyspace(ks, n)
        print(f"built {n:,} keys in {time.perf_counter() - t0:.1f}s", end="")
        print(f", data.mdb {(ks / 'data.mdb').stat().st_size / 2**20:,.0f} MiB")
        for count, secs_per in range_latency(ks, n).items():
            print(f"range {count:>6,} keys: {secs_per * 1e3:8.3f} ms")
        out = subprocess.run(
            [sys.executable, "-c", _OPEN_PROBE, str(ks)],
            capture_output=True, text=True, check=True,
        ).stdout.split()  # fmt: skip
        print(
            f"open {n:,} keys (fresh process): {float(out[0]) * 1e3:.1f} ms to open + first read,"
            f" max RSS {int(out[1]) / 1024:.0f} MiB, revision {out[2]}"
        )
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
