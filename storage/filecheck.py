"""Refuse a truncated LMDB file before it can crash the process.

LMDB maps the file; touching a page past its end kills the process with SIGBUS. A file shorter
than the last page LMDB allocated is *usually* truncated, but not always: a page allocated and
freed within one transaction is never written, so a healthy file can end a few pages early.
So a short file is not refused on its size alone. Instead a child process reads every record
of every sub-database, which touches every reachable page; if that child dies or fails, the
file really is damaged. The slow path runs only for short files, which are rare.
"""

from __future__ import annotations

import os
import subprocess
import sys

from raftkv.errors import CorruptionError

_WALK_ALL_PAGES = r"""
import sys, lmdb
env = lmdb.open(sys.argv[1], readonly=True, lock=False, max_dbs=64, subdir=True)
with env.begin(buffers=True) as txn:
    names = [bytes(k) for k, _ in txn.cursor()]
    for name in names:
        db = env.open_db(name, txn=txn, create=False)
        for _, value in txn.cursor(db=db):
            bytes(value)
print("ok")
"""


def check_not_truncated(directory: str, file: str, have: int, need: int) -> None:
    """Raise CorruptionError if ``file`` (``have`` bytes, LMDB expects ``need``) is damaged."""
    if have >= need:
        return
    proc = subprocess.run(
        [sys.executable, "-c", _WALK_ALL_PAGES, directory],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env=dict(os.environ, PYTHONSAFEPATH="1"),
    )
    if proc.returncode != 0 or proc.stdout.strip() != "ok":
        raise CorruptionError(
            f"{file}: file is truncated ({have} bytes, the last committed page needs {need}) "
            "and some of its pages cannot be read; refusing to start"
        )
