"""The MVCC key space's records in a :class:`~raftkv.kv.backend.KVBackend`, and the primitive
reads over them (used by :mod:`raftkv.kv.mvcc` and :mod:`raftkv.kv.compare`).

Data layout (no in-memory index: every lookup is a seek in the backend):

``hist``  ``escape_key(key) + ~main + ~sub`` -> ``flags | create | version | lease | value``
    Every stored version of every key, newest first within a key (the revision is stored
    inverted). The newest version at or below revision R is the first record at or after
    ``escape_key(key) + ~R``. A delete stores a tombstone (flag bit 0, no value).
``rev``   ``main + sub`` -> ``escape_key(key)``
    The change log in revision order: a watch catching up is one cursor scan from its start
    revision, looking each change up in ``hist`` (and the version after it for ``prev_kv``).
``meta``  ``rev`` (current main revision, starting at 1), ``compact`` (compacted revision).

Compaction at C keeps, per key, the newest version at or below C unless it is a tombstone,
removes all older versions, and drops ``rev`` records below C.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

from raftkv.kv.backend import HIST, META, ReadTxn
from raftkv.kv.keys import escape_key, normalize_end
from raftkv.kv.types import KeyValue

__all__ = [
    "HIST_HEADER",
    "MAX_U64",
    "META_COMPACT",
    "META_REV",
    "REVISION",
    "TOMBSTONE_FLAG",
    "TOMBSTONE_VALUE",
    "U64",
    "hist_value",
    "inverted",
    "is_tombstone",
    "kv_of",
    "latest",
    "live",
    "main_of",
    "meta_u64",
    "visible",
]

MAX_U64 = (1 << 64) - 1
REVISION = struct.Struct(">QQ")
U64 = struct.Struct(">Q")
HIST_HEADER = struct.Struct(">BQQq")  # flags, create_revision, version, lease
TOMBSTONE_FLAG = 1
_SKIP_AFTER = 4
"""Older versions of one key to step over before seeking past them instead."""

META_REV = b"rev"
META_COMPACT = b"compact"


def inverted(main: int, sub: int) -> bytes:
    return REVISION.pack(MAX_U64 - main, MAX_U64 - sub)


def main_of(hkey: bytes) -> int:
    return MAX_U64 - int(U64.unpack_from(hkey, len(hkey) - 16)[0])


def hist_value(create: int, version: int, lease: int, value: bytes) -> bytes:
    return HIST_HEADER.pack(0, create, version, lease) + value


TOMBSTONE_VALUE = HIST_HEADER.pack(TOMBSTONE_FLAG, 0, 0, 0)


def kv_of(user_key: bytes, hkey: bytes, hval: bytes, keys_only: bool = False) -> KeyValue:
    _, create, version, lease = HIST_HEADER.unpack_from(hval)
    value = b"" if keys_only else hval[HIST_HEADER.size :]
    return KeyValue(user_key, create, main_of(hkey), version, value, lease)


def is_tombstone(hval: bytes) -> bool:
    return bool(hval[0] & TOMBSTONE_FLAG)


def meta_u64(txn: ReadTxn, key: bytes, default: int) -> int:
    raw = txn.get(META, key)
    return default if raw is None else int(U64.unpack(raw)[0])


def visible(
    txn: ReadTxn, key: bytes, range_end: bytes, rev: int
) -> Iterator[tuple[bytes, bytes, bytes]]:
    """``(escaped key, hist key, hist value)`` of each key live at ``rev``, in key order."""
    start, end = normalize_end(key, range_end)
    end_esc = None if end is None else escape_key(end)
    seek_rev = REVISION.pack(MAX_U64 - rev, 0)
    pos = escape_key(start)
    while True:
        restarted = False
        decided: bytes | None = None
        same = 0
        for hk, hv in txn.scan(HIST, pos, end_esc):
            k_esc = hk[:-16]
            if k_esc == decided:
                same += 1
                if same > _SKIP_AFTER:
                    pos = k_esc + b"\xff" * 17
                    restarted = True
                    break
                continue
            if main_of(hk) > rev:
                # Newer than the read revision: seek to this key's newest version <= rev.
                pos = k_esc + seek_rev
                if hk >= pos:
                    pos = k_esc + b"\xff" * 17
                restarted = True
                decided = None
                break
            decided, same = k_esc, 0
            if not is_tombstone(hv):
                yield k_esc, hk, hv
        if not restarted:
            return


def latest(txn: ReadTxn, k_esc: bytes) -> tuple[bytes, bytes] | None:
    """The newest record of a key (possibly a tombstone), or None if it never existed."""
    for hk, hv in txn.scan(HIST, k_esc):
        return (hk, hv) if hk[:-16] == k_esc else None
    return None


def live(txn: ReadTxn, k_esc: bytes) -> tuple[bytes, bytes] | None:
    rec = latest(txn, k_esc)
    return None if rec is None or is_tombstone(rec[1]) else rec
