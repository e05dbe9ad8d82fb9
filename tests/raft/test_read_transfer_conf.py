"""ReadIndex (thesis §6.4), leadership transfer (thesis §3.10) and membership changes."""

import pytest

from raftkv.errors import NotLeader, ProposalDropped
from raftkv.raft.messages import AppendEntries, Heartbeat, HeartbeatResponse, TimeoutNow
from raftkv.raft.types import ConfChange, ConfChangeKind, ConfState, Entry, EntryKind, Role
from raftkv.testing.lockstep import LockstepNetwork


def test_read_index_on_leader_waits_for_a_heartbeat_quorum():
    net = LockstepNetwork(3)
    net.elect(1)
    net.ignored.add(HeartbeatResponse)
    net.nodes[1].node.read_index(b"ctx")
    net.stabilize()
    assert net.nodes[1].read_states == []
    net.ignored.clear()
    net.nodes[1].node.tick()
    net.stabilize()
    assert [(r.index, r.context) for r in net.nodes[1].read_states] == [(1, b"ctx")]


def test_isolated_leader_never_answers_a_read():
    net = LockstepNetwork(3)
    net.elect(1)
    net.isolate(1)
    net.nodes[1].node.read_index(b"ctx")
    net.tick(node_ids=[1], times=25)
    assert net.nodes[1].read_states == []


def test_follower_read_goes_through_the_leader():
    net = LockstepNetwork(3)
    net.elect(1)
    net.nodes[1].node.propose(b"x")
    net.stabilize()
    net.nodes[3].node.read_index(b"r")
    net.stabilize()
    assert [(r.index, r.context) for r in net.nodes[3].read_states] == [(2, b"r")]


def test_read_without_known_leader_is_not_leader():
    net = LockstepNetwork(3)
    with pytest.raises(NotLeader):
        net.nodes[2].node.read_index(b"r")


def test_reads_wait_for_the_new_leaders_first_commit():
    net = LockstepNetwork(3)
    net.elect(1)
    net.isolate(1)
    net.ignored.add(AppendEntries)  # the new leader cannot commit its no-op yet
    for _ in range(40):
        net.tick(node_ids=[2, 3])
        if net.leaders() != [1]:
            break
    (leader,) = [i for i in (2, 3) if net.nodes[i].role is Role.LEADER]
    net.nodes[leader].node.read_index(b"r")
    net.stabilize()
    assert net.nodes[leader].read_states == []
    net.ignored.clear()
    net.tick(node_ids=[2, 3], times=2)
    assert [r.context for r in net.nodes[leader].read_states] == [b"r"]
    assert net.nodes[leader].read_states[0].index == 2


def test_later_read_acknowledgement_releases_earlier_reads():
    net = LockstepNetwork(3)
    net.elect(1)
    net.ignored.add(HeartbeatResponse)
    net.nodes[1].node.read_index(b"a")
    net.stabilize()
    net.ignored.clear()
    net.nodes[1].node.read_index(b"b")
    net.stabilize()
    assert [r.context for r in net.nodes[1].read_states] == [b"a", b"b"]


def test_transfer_leadership_to_an_up_to_date_follower():
    net = LockstepNetwork(3)
    net.elect(1)
    net.nodes[1].node.transfer_leadership(3)
    net.stabilize()
    assert net.leaders() == [3]
    assert any(isinstance(m, TimeoutNow) for m in net.delivered)


def test_transfer_to_a_lagging_follower_catches_it_up_first():
    net = LockstepNetwork(3)
    net.elect(1)
    net.isolate(3)
    for i in range(5):
        net.nodes[1].node.propose(b"%d" % i)
    net.stabilize()
    net.nodes[1].node.transfer_leadership(3)
    with pytest.raises(ProposalDropped):
        net.nodes[1].node.propose(b"during transfer")
    net.recover()
    net.tick(node_ids=[1], times=1)
    assert net.leaders() == [3]
    assert net.nodes[3].node.status().commit >= 6


def test_transfer_request_on_follower_is_forwarded():
    net = LockstepNetwork(3)
    net.elect(1)
    net.nodes[2].node.transfer_leadership(2)
    net.stabilize()
    assert net.leaders() == [2]


def test_conf_change_add_learner_then_promote():
    net = LockstepNetwork(3)
    net.elect(1)
    leader = net.nodes[1].node
    index = leader.propose_conf_change(ConfChange(ConfChangeKind.ADD_LEARNER, 4))
    with pytest.raises(ProposalDropped):
        leader.propose_conf_change(ConfChange(ConfChangeKind.ADD_NODE, 5))
    net.stabilize()
    entry = net.nodes[1].storage.entries(index, index + 1)[0]
    assert entry.kind is EntryKind.CONF_CHANGE
    change = ConfChange.decode(entry.data)
    assert change == ConfChange(ConfChangeKind.ADD_LEARNER, 4)
    conf = leader.apply_conf_change(change)
    assert conf == ConfState(voters=(1, 2, 3), learners=(4,))
    conf = leader.apply_conf_change(ConfChange(ConfChangeKind.ADD_NODE, 4))
    assert conf == ConfState(voters=(1, 2, 3, 4))
    conf = leader.apply_conf_change(ConfChange(ConfChangeKind.REMOVE_NODE, 2))
    assert conf == ConfState(voters=(1, 3, 4))


def test_conf_change_round_trips_through_bytes():
    change = ConfChange(ConfChangeKind.REMOVE_NODE, 2**40, b"ctx")
    assert ConfChange.decode(change.encode()) == change


def test_heartbeat_from_leader_resets_follower_election_clock():
    net = LockstepNetwork(3)
    net.elect(1)
    for _ in range(50):
        net.nodes[1].node.tick()
        net.stabilize()
        for n in (2, 3):
            net.nodes[n].node.tick()
        net.stabilize()
    assert net.leaders() == [1]
    assert any(isinstance(m, Heartbeat) for m in net.delivered)


def test_entry_size_counts_data():
    assert Entry(1, 1, data=b"x" * 100).size() > Entry(1, 1).size()
