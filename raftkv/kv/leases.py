"""Leases in the replicated state machine: which leases exist, their TTLs, and the keys attached.

Two backend tables, written only by applied log entries (so every member holds the same leases
and snapshots carry them):

``lease``       ``id`` (8 bytes, order-preserving) -> granted TTL in seconds (8 bytes)
``lease_keys``  ``id + escape_key(key)`` -> empty: the live keys attached to the lease

The time a lease has left is not here: only the leader's lessor keeps clocks (in memory, see
``raftkv.driver.lessor``), and it expires a lease by proposing its revoke. Attachments follow
the keys: a put attaches its key to the put's lease (and detaches it from the previous one), a
delete detaches; a revoke deletes every attached key (in ``raftkv.kv.state_machine``).
"""

from __future__ import annotations

import struct

from raftkv.kv.backend import LEASE, LEASE_KEYS, ReadTxn, WriteTxn
from raftkv.kv.errors import LeaseExistsError, LeaseNotFoundError, LeaseTTLTooLargeError
from raftkv.kv.keys import escape_key, unescape_key

__all__ = [
    "MAX_LEASE_TTL_S",
    "attach",
    "attached_keys",
    "check_exists",
    "detach",
    "grant_in",
    "lease_ttl",
    "leases_in",
    "revoke_in",
]

MAX_LEASE_TTL_S = 9_000_000_000
"""etcd's MaxLeaseTTL: a longer TTL is refused ("too large lease TTL")."""

_ID = struct.Struct(">Q")
_TTL = struct.Struct(">q")
_BIAS = 1 << 63
"""Lease ids are int64 on the wire: biased, they sort as numbers in byte order."""


def _id(lease: int) -> bytes:
    return _ID.pack(lease + _BIAS)


def _lease_of(raw: bytes) -> int:
    return int(_ID.unpack_from(raw)[0]) - _BIAS


def lease_ttl(txn: ReadTxn, lease: int) -> int | None:
    """The granted TTL of ``lease``, or None if it does not exist."""
    raw = txn.get(LEASE, _id(lease))
    return None if raw is None else int(_TTL.unpack(raw)[0])


def check_exists(txn: ReadTxn, lease: int) -> None:
    """A put's lease must exist (etcd's lessor lookup at apply time); 0 means no lease."""
    if lease != 0 and txn.get(LEASE, _id(lease)) is None:
        raise LeaseNotFoundError()


def leases_in(txn: ReadTxn) -> list[tuple[int, int]]:
    """Every lease as ``(id, granted TTL)``, by id."""
    return [(_lease_of(k), int(_TTL.unpack(v)[0])) for k, v in txn.scan(LEASE, b"")]


def attached_keys(txn: ReadTxn, lease: int) -> list[bytes]:
    """The keys attached to ``lease``, in key order (escaped keys sort as the keys do)."""
    prefix = _id(lease)
    end = _id(lease + 1) if lease + 1 < _BIAS else None
    return [unescape_key(k[len(prefix) :]) for k, _ in txn.scan(LEASE_KEYS, prefix, end)]


def grant_in(txn: WriteTxn, lease: int, ttl: int) -> int:
    """Create ``lease``; returns its TTL. etcd's checks, in etcd's order: the TTL, then the id."""
    if ttl > MAX_LEASE_TTL_S:
        raise LeaseTTLTooLargeError()
    if lease == 0 or txn.get(LEASE, _id(lease)) is not None:
        raise LeaseExistsError()  # 0 never reaches here: the receiving member picks an id
    txn.put(LEASE, _id(lease), _TTL.pack(ttl))
    return ttl


def revoke_in(txn: WriteTxn, lease: int) -> list[bytes]:
    """Remove ``lease`` and its attachments; returns the keys that were attached (the caller
    deletes them, in this order, in one revision)."""
    if txn.get(LEASE, _id(lease)) is None:
        raise LeaseNotFoundError()
    keys = attached_keys(txn, lease)
    prefix = _id(lease)
    for key in keys:
        txn.delete(LEASE_KEYS, prefix + escape_key(key))
    txn.delete(LEASE, prefix)
    return keys


def attach(txn: WriteTxn, lease: int, k_esc: bytes) -> None:
    if lease != 0:
        txn.put(LEASE_KEYS, _id(lease) + k_esc, b"")


def detach(txn: WriteTxn, lease: int, k_esc: bytes) -> None:
    if lease != 0:
        txn.delete(LEASE_KEYS, _id(lease) + k_esc)
