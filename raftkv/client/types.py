"""Typed results of the client's calls (frozen dataclasses, converted from etcd's protobufs)."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, TypeAlias

__all__ = [
    "CompactResult",
    "DeleteResult",
    "Event",
    "EventType",
    "Header",
    "KeyValue",
    "Member",
    "MemberListResult",
    "OpResult",
    "PutResult",
    "RangeResult",
    "StatusResult",
    "TxnResult",
    "WatchResponse",
]


@dataclass(frozen=True, slots=True)
class Header:
    cluster_id: int = 0
    member_id: int = 0
    revision: int = 0
    raft_term: int = 0

    @classmethod
    def from_pb(cls, h: Any) -> Header:
        return cls(h.cluster_id, h.member_id, h.revision, h.raft_term)


@dataclass(frozen=True, slots=True)
class KeyValue:
    key: bytes
    value: bytes = b""
    create_revision: int = 0
    mod_revision: int = 0
    version: int = 0
    lease: int = 0

    @classmethod
    def from_pb(cls, kv: Any) -> KeyValue:
        return cls(kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version, kv.lease)


@dataclass(frozen=True, slots=True)
class RangeResult:
    header: Header
    kvs: tuple[KeyValue, ...]
    more: bool
    count: int

    @property
    def first(self) -> KeyValue | None:
        return self.kvs[0] if self.kvs else None

    @property
    def value(self) -> bytes | None:
        """The value of the first key, or None: for ``get`` of a single key."""
        return self.kvs[0].value if self.kvs else None


@dataclass(frozen=True, slots=True)
class PutResult:
    header: Header
    prev_kv: KeyValue | None = None


@dataclass(frozen=True, slots=True)
class DeleteResult:
    header: Header
    deleted: int
    prev_kvs: tuple[KeyValue, ...] = ()


@dataclass(frozen=True, slots=True)
class TxnResult:
    header: Header
    succeeded: bool
    responses: tuple[OpResult, ...]


OpResult: TypeAlias = RangeResult | PutResult | DeleteResult | TxnResult


@dataclass(frozen=True, slots=True)
class CompactResult:
    header: Header


@dataclass(frozen=True, slots=True)
class Member:
    id: int
    name: str
    peer_urls: tuple[str, ...]
    client_urls: tuple[str, ...]
    is_learner: bool = False


@dataclass(frozen=True, slots=True)
class MemberListResult:
    header: Header
    members: tuple[Member, ...]


@dataclass(frozen=True, slots=True)
class StatusResult:
    endpoint: str
    header: Header
    version: str
    db_size: int
    leader: int
    raft_index: int
    raft_term: int
    raft_applied_index: int
    errors: tuple[str, ...]
    db_size_in_use: int
    is_learner: bool


class EventType(enum.IntEnum):
    PUT = 0
    DELETE = 1


@dataclass(frozen=True, slots=True)
class Event:
    type: EventType
    kv: KeyValue
    prev_kv: KeyValue | None = None

    @property
    def revision(self) -> int:
        return self.kv.mod_revision


@dataclass(frozen=True, slots=True)
class WatchResponse:
    """One batch from a watch: events (never splitting a revision) or a progress notification.

    ``revision`` is the header revision: for a progress notification (no events), every event
    up to it has been delivered.
    """

    header: Header
    events: tuple[Event, ...]

    @property
    def revision(self) -> int:
        return self.header.revision

    @property
    def is_progress_notify(self) -> bool:
        return not self.events
