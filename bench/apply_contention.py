"""Apply under GIL contention: prints numbers, asserts nothing.

    python bench/apply_contention.py [--entries 5000] [--batch 10] [--dir DIR]

Applies ``etcdctl check perf``-like puts (256-byte keys under its prefix, 1 KiB values) to a
fresh key space in batches, one LMDB write transaction each, on a worker thread, as a member's
apply thread does: once while the main thread sleeps, once while it runs Python without pause
(the worst case of a busy event loop). py-lmdb releases the GIL around every LMDB call, so each
call may have to wait for the other thread to give the GIL back; the second line shows what
that costs per transaction (wall, the worker's CPU, its voluntary context switches).
"""

from __future__ import annotations

import argparse
import random
import resource
import shutil
import tempfile
import threading
import time
from pathlib import Path

from raftkv_storage import LmdbBackend

from raftkv.kv import Command, KVStateMachine, PutRequest, encode_command

_PREFIX = b"/etcdctl-check-perf/"


class _Entry:
    __slots__ = ("data", "index", "kind", "term")

    def __init__(self, index: int, data: bytes) -> None:
        self.index, self.kind, self.term, self.data = index, 0, 1, data


def _entries(n: int, seed: int = 1) -> list[_Entry]:
    rnd = random.Random(seed)
    out = []
    for i in range(1, n + 1):
        key = rnd.getrandbits(62).to_bytes(8, "little") + bytes(248)
        out.append(_Entry(i, encode_command(Command(i, PutRequest(_PREFIX + key, bytes(1024))))))
    return out


def run(entries: list[_Entry], batch: int, root: Path, busy: bool) -> dict[str, float]:
    path = Path(tempfile.mkdtemp(dir=root, prefix="apply-contention-"))
    result: dict[str, float] = {}
    try:
        with LmdbBackend(path / "kv") as backend:
            sm = KVStateMachine(backend)

            def worker() -> None:
                r0, t0 = resource.getrusage(resource.RUSAGE_THREAD), time.perf_counter()
                for lo in range(0, len(entries), batch):
                    sm.apply(entries[lo : lo + batch])
                r1, t1 = resource.getrusage(resource.RUSAGE_THREAD), time.perf_counter()
                txns = (len(entries) + batch - 1) // batch
                cpu = (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime)
                result.update(
                    wall_ms=1000 * (t1 - t0) / txns,
                    cpu_ms=1000 * cpu / txns,
                    switches=(r1.ru_nvcsw - r0.ru_nvcsw) / txns,
                )

            thread = threading.Thread(target=worker)
            thread.start()
            while busy and thread.is_alive():
                x = 0
                for i in range(1000):  # pure Python: holds the GIL until asked to drop it
                    x += i
            thread.join()
    finally:
        shutil.rmtree(path, ignore_errors=True)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--entries", type=int, default=5000)
    ap.add_argument("--batch", type=int, default=10)
    ap.add_argument("--dir", type=Path, default=Path("."))
    args = ap.parse_args()
    entries = _entries(args.entries)
    print(f"{args.entries} puts in batches of {args.batch}, per transaction:")
    for busy in (False, True):
        r = run(entries, args.batch, args.dir, busy)
        label = "main thread running Python" if busy else "main thread idle"
        print(
            f"  {label:28s} wall {r['wall_ms']:7.2f} ms  worker CPU {r['cpu_ms']:5.2f} ms  "
            f"voluntary switches {r['switches']:5.1f}"
        )


if __name__ == "__main__":
    main()
