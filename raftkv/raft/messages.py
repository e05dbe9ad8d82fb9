"""The messages Raft peers exchange: one frozen dataclass per kind, and their union ``Message``.

Unlike etcd's single flat ``raftpb.Message``, each kind carries exactly its own fields, so a
``match`` over ``Message`` with ``assert_never`` is checked exhaustive by mypy.

Every message carries ``src``, ``dst`` and the sender's ``term``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

from raftkv.raft.types import Entry, Index, NodeId, Snapshot, Term


@dataclass(frozen=True, slots=True)
class AppendEntries:
    """Leader -> follower: entries following (prev_index, prev_term), and the leader's commit."""

    src: NodeId
    dst: NodeId
    term: Term
    prev_index: Index
    prev_term: Term
    entries: tuple[Entry, ...]
    commit: Index


@dataclass(frozen=True, slots=True)
class AppendResponse:
    """Follower -> leader.

    On success ``index`` is the last index known to match the leader's log. On reject, ``index``
    echoes the rejected ``prev_index`` and (``reject_hint``, ``log_term``) name the follower's
    best guess at a matching point, so the leader can skip a whole term per round trip.
    """

    src: NodeId
    dst: NodeId
    term: Term
    index: Index
    reject: bool = False
    reject_hint: Index = 0
    log_term: Term = 0


@dataclass(frozen=True, slots=True)
class RequestVote:
    """(Pre-)candidate -> voter. A pre-vote carries the term the candidate *would* use."""

    src: NodeId
    dst: NodeId
    term: Term
    last_index: Index
    last_term: Term
    pre_vote: bool = False
    transfer: bool = False
    """Set when campaigning after TimeoutNow: voters then ignore their leader lease."""


@dataclass(frozen=True, slots=True)
class VoteResponse:
    src: NodeId
    dst: NodeId
    term: Term
    granted: bool
    pre_vote: bool = False


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """Leader -> follower. ``commit`` never exceeds what the follower is known to hold."""

    src: NodeId
    dst: NodeId
    term: Term
    commit: Index
    context: bytes = b""


@dataclass(frozen=True, slots=True)
class HeartbeatResponse:
    src: NodeId
    dst: NodeId
    term: Term
    context: bytes = b""


@dataclass(frozen=True, slots=True)
class InstallSnapshot:
    src: NodeId
    dst: NodeId
    term: Term
    snapshot: Snapshot


@dataclass(frozen=True, slots=True)
class TimeoutNow:
    """Leader -> transfer target: start an election now, ignoring leases."""

    src: NodeId
    dst: NodeId
    term: Term


@dataclass(frozen=True, slots=True)
class ReadIndexRequest:
    """Follower -> leader: ask for a read index confirmed by a quorum."""

    src: NodeId
    dst: NodeId
    term: Term
    context: bytes


@dataclass(frozen=True, slots=True)
class ReadIndexResponse:
    src: NodeId
    dst: NodeId
    term: Term
    index: Index
    context: bytes


@dataclass(frozen=True, slots=True)
class TransferLeader:
    """Any node -> leader: hand leadership to ``target``."""

    src: NodeId
    dst: NodeId
    term: Term
    target: NodeId


Message: TypeAlias = (
    AppendEntries
    | AppendResponse
    | RequestVote
    | VoteResponse
    | Heartbeat
    | HeartbeatResponse
    | InstallSnapshot
    | TimeoutNow
    | ReadIndexRequest
    | ReadIndexResponse
    | TransferLeader
)

MESSAGE_TYPES: tuple[type[Message], ...] = (
    AppendEntries,
    AppendResponse,
    RequestVote,
    VoteResponse,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    TimeoutNow,
    ReadIndexRequest,
    ReadIndexResponse,
    TransferLeader,
)
