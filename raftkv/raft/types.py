"""Value types of the Raft core: entries, hard and soft state, configuration, snapshots.

Every type here is an immutable, slotted dataclass. Collections are tuples, never sets, so that
iteration order is deterministic across processes (PYTHONHASHSEED salts str/bytes hashes).
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field
from typing import TypeAlias

NodeId: TypeAlias = int
Term: TypeAlias = int
Index: TypeAlias = int

NO_NODE: NodeId = 0
"""Node ids are positive; 0 means "nobody" (no vote cast, no known leader)."""


class EntryKind(enum.IntEnum):
    NORMAL = 0
    """Application data. An empty NORMAL entry is the no-op a new leader appends."""
    CONF_CHANGE = 1
    """A single-server membership change; ``data`` is an encoded :class:`ConfChange`."""


@dataclass(frozen=True, slots=True)
class Entry:
    term: Term
    index: Index
    kind: EntryKind = EntryKind.NORMAL
    data: bytes = b""

    def size(self) -> int:
        """Approximate wire size, used to bound messages and in-flight bytes."""
        return len(self.data) + 24


@dataclass(frozen=True, slots=True)
class HardState:
    """What must be on stable storage before any message that depends on it is sent."""

    term: Term = 0
    vote: NodeId = NO_NODE
    commit: Index = 0


EMPTY_HARD_STATE = HardState()


class Role(enum.Enum):
    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre-candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"


@dataclass(frozen=True, slots=True)
class SoftState:
    """Volatile state worth reporting; it need not be persisted."""

    leader: NodeId
    role: Role


@dataclass(frozen=True, slots=True)
class ConfState:
    """The membership: voters and learners, each a sorted tuple of node ids."""

    voters: tuple[NodeId, ...] = ()
    learners: tuple[NodeId, ...] = ()

    def __post_init__(self) -> None:
        if tuple(sorted(set(self.voters))) != self.voters:
            raise ValueError(f"voters must be sorted and unique: {self.voters}")
        if tuple(sorted(set(self.learners))) != self.learners:
            raise ValueError(f"learners must be sorted and unique: {self.learners}")
        if set(self.voters) & set(self.learners):
            raise ValueError("a node cannot be both voter and learner")


class ConfChangeKind(enum.IntEnum):
    ADD_NODE = 0
    REMOVE_NODE = 1
    ADD_LEARNER = 2


@dataclass(frozen=True, slots=True)
class ConfChange:
    """A single-server membership change, carried in a CONF_CHANGE entry.

    It takes effect when the entry is *applied* (the driver calls ``apply_conf_change``), and the
    leader refuses a second change while one is uncommitted.
    """

    kind: ConfChangeKind
    node_id: NodeId
    context: bytes = b""

    _HEADER = struct.Struct(">BQ")

    def encode(self) -> bytes:
        return self._HEADER.pack(int(self.kind), self.node_id) + self.context

    @classmethod
    def decode(cls, data: bytes) -> ConfChange:
        kind, node_id = cls._HEADER.unpack_from(data)
        return cls(ConfChangeKind(kind), node_id, bytes(data[cls._HEADER.size :]))


@dataclass(frozen=True, slots=True)
class SnapshotMeta:
    index: Index = 0
    term: Term = 0
    conf_state: ConfState = field(default_factory=ConfState)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A state-machine image covering the log up to ``meta.index``; ``data`` is opaque."""

    meta: SnapshotMeta = field(default_factory=SnapshotMeta)
    data: bytes = b""

    @property
    def is_empty(self) -> bool:
        return self.meta.index == 0


EMPTY_SNAPSHOT = Snapshot()


@dataclass(frozen=True, slots=True)
class ReadState:
    """A linearizable read may be served once the state machine has applied ``index``."""

    index: Index
    context: bytes
