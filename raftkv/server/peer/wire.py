"""Raft core values <-> the peer protocol's protobuf messages (protos/raftkv/pb/peer/peer.proto).

Pure conversion, no I/O. Encoding never fails for a well-formed core value (out-of-range integers
such as a negative term raise ``ValueError`` from protobuf). Decoding validates what the types
cannot: a message without a body, a node id of 0 where a member is required, an unknown entry
kind, an unsorted configuration. Every such problem raises ``ValueError``, so a receiver can drop
one bad message without trusting the rest of the value.

For InstallSnapshot the snapshot ``data`` travels as it is: over the Raft stream the transport
never sends InstallSnapshot (it uses the Snapshot RPC), and the receiver of that RPC hands its
core an InstallSnapshot with empty ``data``; the image waits in a file named by index and term.

A forward's refusal converts between :class:`~raftkv.server.peer.handler.Refusal` and the
protocol's ``ForwardRefusal`` enum.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeAlias, assert_never

from raftkv.pb.peer import peer_pb2
from raftkv.raft.messages import (
    AppendEntries,
    AppendResponse,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    Message,
    ReadIndexRequest,
    ReadIndexResponse,
    RequestVote,
    TimeoutNow,
    TransferLeader,
    VoteResponse,
)
from raftkv.raft.types import (
    ConfState,
    Entry,
    EntryKind,
    HardState,
    NodeId,
    Snapshot,
    SnapshotMeta,
    Term,
)
from raftkv.server.peer.handler import Refusal

__all__ = [
    "conf_state_from_pb",
    "conf_state_to_pb",
    "entry_from_pb",
    "entry_to_pb",
    "hard_state_from_pb",
    "hard_state_to_pb",
    "message_from_pb",
    "message_to_pb",
    "refusal_from_pb",
    "refusal_to_pb",
    "snapshot_meta_from_pb",
    "snapshot_meta_to_pb",
]

_ENTRY_KINDS = {int(k): k for k in EntryKind}
_REFUSALS_TO_PB: dict[Refusal, peer_pb2.ForwardRefusal.ValueType] = {
    Refusal.NOT_LEADER: peer_pb2.FORWARD_REFUSAL_NOT_LEADER,
    Refusal.LEADER_CHANGED: peer_pb2.FORWARD_REFUSAL_LEADER_CHANGED,
}
_REFUSALS_FROM_PB = {pb: refusal for refusal, pb in _REFUSALS_TO_PB.items()}


# ------------------------------------------------------------------------------------------------
# Value types
# ------------------------------------------------------------------------------------------------


def refusal_to_pb(refusal: Refusal) -> peer_pb2.ForwardRefusal.ValueType:
    return _REFUSALS_TO_PB[refusal]


def refusal_from_pb(pb: peer_pb2.ForwardRefusal.ValueType) -> Refusal | None:
    """None for UNSPECIFIED or a value this version does not know (a newer peer's reason): the
    writes were turned down all the same, so the sender may send them again."""
    return _REFUSALS_FROM_PB.get(pb)


def entry_to_pb(entry: Entry) -> peer_pb2.Entry:
    return peer_pb2.Entry(
        term=entry.term,
        index=entry.index,
        kind=int(entry.kind),  # type: ignore[arg-type]  # EntryKind values mirror the proto enum
        data=entry.data,
    )


def entry_from_pb(pb: peer_pb2.Entry) -> Entry:
    kind = _ENTRY_KINDS.get(pb.kind)
    if kind is None:
        raise ValueError(f"unknown entry kind {pb.kind}")
    return Entry(pb.term, pb.index, kind, pb.data)


def hard_state_to_pb(hs: HardState) -> peer_pb2.HardState:
    return peer_pb2.HardState(term=hs.term, vote=hs.vote, commit=hs.commit)


def hard_state_from_pb(pb: peer_pb2.HardState) -> HardState:
    return HardState(term=pb.term, vote=pb.vote, commit=pb.commit)


def conf_state_to_pb(cs: ConfState) -> peer_pb2.ConfState:
    return peer_pb2.ConfState(voters=cs.voters, learners=cs.learners)


def conf_state_from_pb(pb: peer_pb2.ConfState) -> ConfState:
    """Raises ``ValueError`` unless voters and learners are sorted, unique and disjoint."""
    return ConfState(voters=tuple(pb.voters), learners=tuple(pb.learners))


def snapshot_meta_to_pb(meta: SnapshotMeta) -> peer_pb2.SnapshotMeta:
    return peer_pb2.SnapshotMeta(
        index=meta.index, term=meta.term, conf_state=conf_state_to_pb(meta.conf_state)
    )


def snapshot_meta_from_pb(pb: peer_pb2.SnapshotMeta) -> SnapshotMeta:
    return SnapshotMeta(index=pb.index, term=pb.term, conf_state=conf_state_from_pb(pb.conf_state))


# ------------------------------------------------------------------------------------------------
# Messages
# ------------------------------------------------------------------------------------------------


def message_to_pb(msg: Message) -> peer_pb2.Message:
    field, body = _body_to_pb(msg)
    pb = peer_pb2.Message(src=msg.src, dst=msg.dst, term=msg.term, **{field: body})
    if isinstance(msg, AppendEntries):
        add = pb.append_entries.entries.add  # in place: no copy of each entry's data
        for e in msg.entries:
            add(term=e.term, index=e.index, kind=e.kind, data=e.data)
    return pb


def _body_to_pb(msg: Message) -> tuple[str, Any]:
    """The name of ``msg``'s field in the ``body`` oneof, and its value (an AppendEntries body
    without its entries: ``message_to_pb`` adds them in place)."""
    match msg:
        case AppendEntries():
            return "append_entries", peer_pb2.AppendEntries(
                prev_index=msg.prev_index, prev_term=msg.prev_term, commit=msg.commit
            )
        case AppendResponse():
            return "append_response", peer_pb2.AppendResponse(
                index=msg.index,
                reject=msg.reject,
                reject_hint=msg.reject_hint,
                log_term=msg.log_term,
            )
        case RequestVote():
            return "request_vote", peer_pb2.RequestVote(
                last_index=msg.last_index,
                last_term=msg.last_term,
                pre_vote=msg.pre_vote,
                transfer=msg.transfer,
            )
        case VoteResponse():
            return "vote_response", peer_pb2.VoteResponse(
                granted=msg.granted, pre_vote=msg.pre_vote
            )
        case Heartbeat():
            return "heartbeat", peer_pb2.Heartbeat(commit=msg.commit, context=msg.context)
        case HeartbeatResponse():
            return "heartbeat_response", peer_pb2.HeartbeatResponse(context=msg.context)
        case InstallSnapshot():
            return "install_snapshot", peer_pb2.InstallSnapshot(
                meta=snapshot_meta_to_pb(msg.snapshot.meta), data=msg.snapshot.data
            )
        case TimeoutNow():
            return "timeout_now", peer_pb2.TimeoutNow()
        case ReadIndexRequest():
            return "read_index_request", peer_pb2.ReadIndexRequest(context=msg.context)
        case ReadIndexResponse():
            return "read_index_response", peer_pb2.ReadIndexResponse(
                index=msg.index, context=msg.context
            )
        case TransferLeader():
            return "transfer_leader", peer_pb2.TransferLeader(target=msg.target)
        case _:
            assert_never(msg)


# Decoders of each body, by oneof field name: (src, dst, term, body) -> Message.
_Decoder: TypeAlias = Callable[[NodeId, NodeId, Term, Any], Message]


def _append_entries(src: NodeId, dst: NodeId, term: Term, b: peer_pb2.AppendEntries) -> Message:
    kinds = _ENTRY_KINDS
    entries = []
    for e in b.entries:
        kind = kinds.get(e.kind)
        if kind is None:
            raise ValueError(f"unknown entry kind {e.kind}")
        entries.append(Entry(e.term, e.index, kind, e.data))
    return AppendEntries(src, dst, term, b.prev_index, b.prev_term, tuple(entries), b.commit)


def _install_snapshot(src: NodeId, dst: NodeId, term: Term, b: peer_pb2.InstallSnapshot) -> Message:
    if not b.HasField("meta"):
        raise ValueError(f"InstallSnapshot {src}->{dst} has no snapshot meta")
    return InstallSnapshot(src, dst, term, Snapshot(snapshot_meta_from_pb(b.meta), b.data))


_DECODERS: dict[str, _Decoder] = {
    "append_entries": _append_entries,
    "append_response": lambda src, dst, term, b: AppendResponse(
        src, dst, term, b.index, b.reject, b.reject_hint, b.log_term
    ),
    "request_vote": lambda src, dst, term, b: RequestVote(
        src, dst, term, b.last_index, b.last_term, b.pre_vote, b.transfer
    ),
    "vote_response": lambda src, dst, term, b: VoteResponse(src, dst, term, b.granted, b.pre_vote),
    "heartbeat": lambda src, dst, term, b: Heartbeat(src, dst, term, b.commit, b.context),
    "heartbeat_response": lambda src, dst, term, b: HeartbeatResponse(src, dst, term, b.context),
    "install_snapshot": _install_snapshot,
    "timeout_now": lambda src, dst, term, b: TimeoutNow(src, dst, term),
    "read_index_request": lambda src, dst, term, b: ReadIndexRequest(src, dst, term, b.context),
    "read_index_response": lambda src, dst, term, b: ReadIndexResponse(
        src, dst, term, b.index, b.context
    ),
    "transfer_leader": lambda src, dst, term, b: TransferLeader(src, dst, term, b.target),
}


def message_from_pb(pb: peer_pb2.Message) -> Message:
    """Decode one message; ``ValueError`` if it is malformed (no body, src/dst 0, bad values)."""
    src = pb.src
    dst = pb.dst
    if not src or not dst:
        raise ValueError(f"message {src:x}->{dst:x}: src and dst must be members, not 0")
    kind = pb.WhichOneof("body")
    if kind is None:
        raise ValueError(f"message {src:x}->{dst:x} has no body")
    decode = _DECODERS.get(kind)
    if decode is None:  # a newer peer's message kind
        raise ValueError(f"message {src:x}->{dst:x} has an unknown body {kind!r}")
    return decode(src, dst, pb.term, getattr(pb, kind))
