"""What a state-machine image holds, read from its records without a backend.

``raftkv snapshot status`` prints etcdctl's four figures for a backup file: the hash, the
revision, the total number of keys and the size. An etcd backup is a bbolt file, so etcdctl's
"keys" are the records of every bucket and its hash covers them all; raftkv's image is a
stream of records of every table, so "keys" here are those records (versions, change-log and
meta records), and the hash is the one ``HashKV`` gives at the image's revision, which an
operator can compare with ``etcdctl endpoint hashkv --rev`` on a live member.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from raftkv.kv.backend import HIST, META
from raftkv.kv.mvcc import MVCCStore, hash_versions

__all__ = ["ImageSummary", "summarize"]


@dataclass(frozen=True, slots=True)
class ImageSummary:
    hash: int
    revision: int
    compact_revision: int
    total_keys: int
    """Records of every table (etcdctl counts the keys of every bucket)."""


class _MetaView:
    """The image's meta records as the one read MVCCStore's revision helpers need."""

    def __init__(self, records: dict[bytes, bytes]) -> None:
        self._records = records

    def get(self, table: str, key: bytes) -> bytes | None:
        return self._records.get(key) if table == META else None

    def scan(
        self, table: str, start: bytes, end: bytes | None = None
    ) -> Iterator[tuple[bytes, bytes]]:
        raise NotImplementedError("only meta lookups are needed")


def summarize(records: Iterable[tuple[str, bytes, bytes]]) -> ImageSummary:
    """One pass over ``(table, key, value)`` records in image order (every table in key order,
    the versions first, the meta records last)."""
    counts = [0]
    meta: dict[bytes, bytes] = {}

    def versions() -> Iterator[tuple[bytes, bytes]]:
        for table, key, value in records:
            counts[0] += 1
            if table == HIST:
                yield key, value
            elif table == META:
                meta[key] = value

    # The image holds nothing newer than its revision, so every version is hashed; the
    # revision itself is read from the meta records, which come after the versions.
    digest = hash_versions(versions(), (1 << 64) - 1)
    view = _MetaView(meta)
    return ImageSummary(
        hash=digest,
        revision=MVCCStore.current_revision_in(view),
        compact_revision=MVCCStore.compacted_revision_in(view),
        total_keys=counts[0],
    )
