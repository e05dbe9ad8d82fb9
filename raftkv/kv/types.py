"""etcd's KV data model as immutable values: KeyValue, Event, requests and responses.

Field names and enum values follow etcd's ``rpc.proto`` and ``kv.proto`` so the gRPC layer is a
field-by-field copy. Every value is a frozen, slotted dataclass; sequences are tuples.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TypeAlias


class SortOrder(enum.IntEnum):
    NONE = 0
    ASCEND = 1
    DESCEND = 2


class SortTarget(enum.IntEnum):
    KEY = 0
    VERSION = 1
    CREATE = 2
    MOD = 3
    VALUE = 4


class CompareResult(enum.IntEnum):
    EQUAL = 0
    GREATER = 1
    LESS = 2
    NOT_EQUAL = 3
    OTHER = 255
    """Any number etcd does not name (the wire carries an int32). etcd 3.4 does not refuse it:
    its compareKV falls through its switch and answers true, so every such number behaves the
    same and one value stands for all of them (255: it fits the command codec's byte)."""


class CompareTarget(enum.IntEnum):
    VERSION = 0
    CREATE = 1
    MOD = 2
    VALUE = 3
    LEASE = 4
    OTHER = 255
    """Any number etcd does not name. etcd 3.4 compares nothing for it (the difference stays
    0, so EQUAL holds and the other results fail), whatever key exists."""


class EventType(enum.IntEnum):
    PUT = 0
    DELETE = 1


@dataclass(frozen=True, slots=True)
class KeyValue:
    key: bytes
    create_revision: int = 0
    mod_revision: int = 0
    version: int = 0
    value: bytes = b""
    lease: int = 0


@dataclass(frozen=True, slots=True)
class Event:
    """A PUT (kv.version == 1 means creation) or a DELETE (kv.mod_revision = deletion revision)."""

    type: EventType
    kv: KeyValue
    prev_kv: KeyValue | None = None
    sub: int = 0
    """Position of the change inside its revision (etcd's sub revision)."""


# -- requests -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RangeRequest:
    key: bytes
    range_end: bytes = b""
    limit: int = 0
    revision: int = 0
    sort_order: SortOrder = SortOrder.NONE
    sort_target: SortTarget = SortTarget.KEY
    serializable: bool = False
    keys_only: bool = False
    count_only: bool = False
    min_mod_revision: int = 0
    max_mod_revision: int = 0
    min_create_revision: int = 0
    max_create_revision: int = 0


@dataclass(frozen=True, slots=True)
class PutRequest:
    key: bytes
    value: bytes = b""
    lease: int = 0
    prev_kv: bool = False
    ignore_value: bool = False
    ignore_lease: bool = False


@dataclass(frozen=True, slots=True)
class DeleteRangeRequest:
    key: bytes
    range_end: bytes = b""
    prev_kv: bool = False


@dataclass(frozen=True, slots=True)
class Compare:
    """``target`` of every key in [key, range_end) compared with the one ``*_value`` in use."""

    result: CompareResult
    target: CompareTarget
    key: bytes
    version: int = 0
    create_revision: int = 0
    mod_revision: int = 0
    value: bytes = b""
    lease: int = 0
    range_end: bytes = b""


RequestOp: TypeAlias = "RangeRequest | PutRequest | DeleteRangeRequest | TxnRequest"


@dataclass(frozen=True, slots=True)
class TxnRequest:
    compare: tuple[Compare, ...] = ()
    success: tuple[RequestOp, ...] = ()
    failure: tuple[RequestOp, ...] = ()


@dataclass(frozen=True, slots=True)
class CompactionRequest:
    revision: int
    physical: bool = False


@dataclass(frozen=True, slots=True)
class LeaseGrantRequest:
    """Grant lease ``id`` (never 0: the receiving member picks one before proposing) for
    ``ttl`` seconds (already raised to the cluster's minimum)."""

    id: int
    ttl: int


@dataclass(frozen=True, slots=True)
class LeaseRevokeRequest:
    """Revoke lease ``id`` and delete every key attached to it.

    ``term`` 0 is a client's revoke. Any other value is an expiry decided by the leader of that
    term: it takes effect only if the entry carrying it was appended in that very term (see
    ``raftkv.driver.lessor``), so a revoke can never be carried into another leader's term."""

    id: int
    term: int = 0


Request: TypeAlias = (
    "RangeRequest | PutRequest | DeleteRangeRequest | TxnRequest | CompactionRequest"
    " | LeaseGrantRequest | LeaseRevokeRequest"
)


# -- responses ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RangeResponse:
    revision: int
    kvs: tuple[KeyValue, ...] = ()
    more: bool = False
    count: int = 0


@dataclass(frozen=True, slots=True)
class PutResponse:
    revision: int
    prev_kv: KeyValue | None = None


@dataclass(frozen=True, slots=True)
class DeleteRangeResponse:
    revision: int
    deleted: int = 0
    prev_kvs: tuple[KeyValue, ...] = ()


ResponseOp: TypeAlias = "RangeResponse | PutResponse | DeleteRangeResponse | TxnResponse"


@dataclass(frozen=True, slots=True)
class TxnResponse:
    revision: int
    succeeded: bool = False
    responses: tuple[ResponseOp, ...] = ()


@dataclass(frozen=True, slots=True)
class CompactionResponse:
    revision: int


@dataclass(frozen=True, slots=True)
class LeaseGrantResponse:
    revision: int
    id: int
    ttl: int
    """The TTL granted, in seconds."""


@dataclass(frozen=True, slots=True)
class LeaseRevokeResponse:
    revision: int
    """The revision after deleting the lease's keys (unchanged if it had none)."""
    id: int
    deleted: int = 0


@dataclass(frozen=True, slots=True)
class LeaseKeepAliveResult:
    """The leader's answer to a keep-alive: the granted TTL, or 0 for an unknown or expired
    lease."""

    id: int
    ttl: int


@dataclass(frozen=True, slots=True)
class LeaseRemaining:
    """The leader's view of a lease: seconds left (truncated), or -1 if it does not exist."""

    id: int
    ttl: int


Response: TypeAlias = (
    "RangeResponse | PutResponse | DeleteRangeResponse | TxnResponse | CompactionResponse"
    " | LeaseGrantResponse | LeaseRevokeResponse"
)

LeaseAnswer: TypeAlias = "LeaseKeepAliveResult | LeaseRemaining"
"""What the leader's lessor answers, outside the log."""


@dataclass(frozen=True, slots=True)
class HashKVResult:
    hash: int
    compact_revision: int
    hash_revision: int


@dataclass(frozen=True, slots=True)
class WatchBatch:
    """Events read from history, and where the next read should start."""

    events: tuple[Event, ...] = ()
    next_revision: int = 0
    compact_revision: int = 0
    """Non-zero when the start revision was compacted: the watch must be cancelled."""
