"""raftkv.server.peer.wire: every Raft message kind and forward refusal survives the peer
protocol; bad input is refused."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from raftkv.pb.peer import peer_pb2
from raftkv.raft import messages as m
from raftkv.raft.types import (
    ConfState,
    Entry,
    EntryKind,
    HardState,
    Snapshot,
    SnapshotMeta,
)
from raftkv.server.peer import wire
from raftkv.server.peer.handler import Refusal

U64 = st.integers(0, 2**64 - 1)
IDS = st.integers(1, 2**64 - 1)
SMALL_BYTES = st.binary(max_size=64)

entries = st.builds(
    Entry,
    term=U64,
    index=U64,
    kind=st.sampled_from(EntryKind),
    data=st.binary(max_size=256),
)


@st.composite
def conf_states(draw: st.DrawFn) -> ConfState:
    ids = draw(st.lists(IDS, unique=True, max_size=7))
    split = draw(st.integers(0, len(ids)))
    return ConfState(voters=tuple(sorted(ids[:split])), learners=tuple(sorted(ids[split:])))


snapshot_metas = st.builds(SnapshotMeta, index=U64, term=U64, conf_state=conf_states())


def _common(
    cls: type[m.Message], **fields: st.SearchStrategy[object]
) -> st.SearchStrategy[m.Message]:
    return st.builds(cls, src=IDS, dst=IDS, term=U64, **fields)


MESSAGE_STRATEGIES: dict[type[m.Message], st.SearchStrategy[m.Message]] = {
    m.AppendEntries: _common(
        m.AppendEntries,
        prev_index=U64,
        prev_term=U64,
        entries=st.lists(entries, max_size=5).map(tuple),
        commit=U64,
    ),
    m.AppendResponse: _common(
        m.AppendResponse,
        index=U64,
        reject=st.booleans(),
        reject_hint=U64,
        log_term=U64,
    ),
    m.RequestVote: _common(
        m.RequestVote,
        last_index=U64,
        last_term=U64,
        pre_vote=st.booleans(),
        transfer=st.booleans(),
    ),
    m.VoteResponse: _common(m.VoteResponse, granted=st.booleans(), pre_vote=st.booleans()),
    m.Heartbeat: _common(m.Heartbeat, commit=U64, context=SMALL_BYTES),
    m.HeartbeatResponse: _common(m.HeartbeatResponse, context=SMALL_BYTES),
    m.InstallSnapshot: _common(
        m.InstallSnapshot,
        snapshot=st.builds(Snapshot, meta=snapshot_metas, data=st.binary(max_size=256)),
    ),
    m.TimeoutNow: _common(m.TimeoutNow),
    m.ReadIndexRequest: _common(m.ReadIndexRequest, context=SMALL_BYTES),
    m.ReadIndexResponse: _common(m.ReadIndexResponse, index=U64, context=SMALL_BYTES),
    m.TransferLeader: _common(m.TransferLeader, target=U64),
}
messages = st.one_of(*MESSAGE_STRATEGIES.values())


def test_strategies_cover_every_message_kind() -> None:
    assert set(MESSAGE_STRATEGIES) == set(m.MESSAGE_TYPES)


@pytest.mark.parametrize("kind", m.MESSAGE_TYPES, ids=lambda k: k.__name__)
@given(data=st.data())
def test_message_round_trip(kind: type[m.Message], data: st.DataObject) -> None:
    msg = data.draw(MESSAGE_STRATEGIES[kind])
    pb = wire.message_to_pb(msg)
    assert wire.message_from_pb(pb) == msg
    # ... also through the bytes on the wire.
    decoded = peer_pb2.Message.FromString(pb.SerializeToString())
    assert wire.message_from_pb(decoded) == msg


@given(st.lists(messages, max_size=8))
def test_batch_round_trip(msgs: list[m.Message]) -> None:
    batch = peer_pb2.MessageBatch(
        cluster_id=1, src=2, dst=3, seq=4, messages=[wire.message_to_pb(x) for x in msgs]
    )
    again = peer_pb2.MessageBatch.FromString(batch.SerializeToString())
    assert [wire.message_from_pb(x) for x in again.messages] == msgs


@given(entries)
def test_entry_round_trip(entry: Entry) -> None:
    assert wire.entry_from_pb(wire.entry_to_pb(entry)) == entry


@given(snapshot_metas)
def test_snapshot_meta_round_trip(meta: SnapshotMeta) -> None:
    assert wire.snapshot_meta_from_pb(wire.snapshot_meta_to_pb(meta)) == meta


@given(st.builds(HardState, term=U64, vote=U64, commit=U64))
def test_hard_state_round_trip(hs: HardState) -> None:
    assert wire.hard_state_from_pb(wire.hard_state_to_pb(hs)) == hs


def test_field_kinds_survive_exactly() -> None:
    msg = m.AppendEntries(
        src=1,
        dst=2,
        term=3,
        prev_index=4,
        prev_term=5,
        entries=(Entry(3, 5, EntryKind.CONF_CHANGE, b"cc"), Entry(3, 6)),
        commit=2**64 - 1,
    )
    back = wire.message_from_pb(wire.message_to_pb(msg))
    assert isinstance(back, m.AppendEntries)
    assert back == msg
    assert type(back.entries) is tuple
    assert [type(e.kind) for e in back.entries] == [EntryKind, EntryKind]


def test_empty_bodies_keep_their_kind() -> None:
    """A body whose fields are all defaults must still be present on the wire."""
    for msg in (
        m.TimeoutNow(1, 2, 0),
        m.AppendEntries(1, 2, 0, 0, 0, (), 0),
        m.AppendResponse(1, 2, 0, 0),
        m.HeartbeatResponse(1, 2, 0),
        m.TransferLeader(1, 2, 0, 0),
    ):
        data = wire.message_to_pb(msg).SerializeToString()
        assert wire.message_from_pb(peer_pb2.Message.FromString(data)) == msg


def test_install_snapshot_data_travels_as_is() -> None:
    meta = SnapshotMeta(index=10, term=2, conf_state=ConfState(voters=(1, 2, 3)))
    msg = m.InstallSnapshot(1, 2, 3, Snapshot(meta=meta, data=b"an image"))
    pb = wire.message_to_pb(msg)
    assert pb.install_snapshot.data == b"an image"
    assert wire.message_from_pb(pb) == msg


def _valid() -> peer_pb2.Message:
    return wire.message_to_pb(m.Heartbeat(src=1, dst=2, term=3, commit=4))


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda pb: pb.ClearField("heartbeat"), "no body"),
        (lambda pb: setattr(pb, "src", 0), "src"),
        (lambda pb: setattr(pb, "dst", 0), "dst"),
    ],
    ids=["no-body", "src-0", "dst-0"],
)
def test_malformed_message_raises_value_error(mutate, match) -> None:
    pb = _valid()
    mutate(pb)
    with pytest.raises(ValueError, match=match):
        wire.message_from_pb(pb)


def test_bare_message_is_malformed() -> None:
    with pytest.raises(ValueError):
        wire.message_from_pb(peer_pb2.Message())
    with pytest.raises(ValueError):
        wire.message_from_pb(peer_pb2.Message.FromString(b""))


def test_unknown_entry_kind_is_malformed() -> None:
    pb = wire.message_to_pb(m.AppendEntries(1, 2, 3, 0, 0, (Entry(1, 1),), 0))
    pb.append_entries.entries[0].kind = 7  # type: ignore[assignment]
    with pytest.raises(ValueError, match="entry kind"):
        wire.message_from_pb(pb)


def test_install_snapshot_without_meta_is_malformed() -> None:
    pb = peer_pb2.Message(
        src=1, dst=2, term=3, install_snapshot=peer_pb2.InstallSnapshot(data=b"x")
    )
    with pytest.raises(ValueError, match="meta"):
        wire.message_from_pb(pb)


@pytest.mark.parametrize(
    "conf",
    [
        peer_pb2.ConfState(voters=[3, 1]),
        peer_pb2.ConfState(voters=[1, 1]),
        peer_pb2.ConfState(voters=[1, 2], learners=[2]),
        peer_pb2.ConfState(learners=[5, 4]),
    ],
    ids=["unsorted", "duplicate", "overlap", "unsorted-learners"],
)
def test_bad_conf_state_is_malformed(conf: peer_pb2.ConfState) -> None:
    meta = peer_pb2.SnapshotMeta(index=5, term=1, conf_state=conf)
    pb = peer_pb2.Message(
        src=1, dst=2, term=3, install_snapshot=peer_pb2.InstallSnapshot(meta=meta)
    )
    with pytest.raises(ValueError):
        wire.message_from_pb(pb)
    with pytest.raises(ValueError):
        wire.snapshot_meta_from_pb(meta)


def test_out_of_range_values_do_not_encode() -> None:
    with pytest.raises(ValueError):
        wire.message_to_pb(m.Heartbeat(src=1, dst=2, term=-1, commit=0))
    with pytest.raises(ValueError):
        wire.message_to_pb(m.TimeoutNow(src=2**64, dst=2, term=1))


def test_every_message_field_is_mapped() -> None:
    """A field added to a message dataclass without a wire mapping fails here (and round trips)."""
    for cls in m.MESSAGE_TYPES:
        names = {f.name for f in dataclasses.fields(cls)} - {"src", "dst", "term"}
        body = peer_pb2.Message.DESCRIPTOR.oneofs_by_name["body"]
        (body_type,) = [
            f.message_type
            for f in body.fields
            if f.message_type is not None and f.message_type.name == cls.__name__
        ]
        proto_names = set(body_type.fields_by_name)
        if cls is m.InstallSnapshot:
            assert names == {"snapshot"} and proto_names == {"meta", "data"}
        else:
            assert names == proto_names, cls


@pytest.mark.parametrize("refusal", list(Refusal))
def test_a_forward_refusal_round_trips(refusal: Refusal) -> None:
    result = peer_pb2.ForwardResult(id=7, refusal=wire.refusal_to_pb(refusal))
    again = peer_pb2.ForwardResult.FromString(result.SerializeToString())
    assert again.refusal != peer_pb2.FORWARD_REFUSAL_UNSPECIFIED
    assert wire.refusal_from_pb(again.refusal) is refusal


def test_an_unspecified_or_unknown_refusal_decodes_as_no_known_reason() -> None:
    """A refusal all the same (nothing was proposed), so the sender may send the write again."""
    assert wire.refusal_from_pb(peer_pb2.FORWARD_REFUSAL_UNSPECIFIED) is None
    # A newer peer's reason: proto3 keeps an unknown enum value as its number.
    unknown = peer_pb2.ForwardResult.FromString(b"\x18\x63")  # field 3, varint 99
    assert unknown.refusal == 99
    assert wire.refusal_from_pb(unknown.refusal) is None


def test_every_refusal_has_its_own_wire_value() -> None:
    values = [wire.refusal_to_pb(refusal) for refusal in Refusal]
    assert len(set(values)) == len(Refusal) == 2
    assert peer_pb2.FORWARD_REFUSAL_UNSPECIFIED not in values
