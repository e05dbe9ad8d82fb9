"""Leader election (Raft §5.2, §5.4.1), pre-vote (thesis §9.6) and check-quorum."""

import logging
import random

import pytest

from raftkv.errors import InternalError, NotLeader
from raftkv.raft.config import RaftConfig
from raftkv.raft.messages import RequestVote, VoteResponse
from raftkv.raft.rawnode import RawNode
from raftkv.raft.storage import MemoryStorage
from raftkv.raft.types import ConfState, Entry, HardState, Role
from raftkv.testing.lockstep import LockstepNetwork


def make_node(node_id=1, voters=(1, 2, 3), seed=0, **cfg):
    storage = MemoryStorage(ConfState(voters=voters))
    return RawNode(RaftConfig(node_id=node_id, **cfg), storage, random.Random(seed)), storage


def test_single_node_elects_itself_and_commits():
    node, storage = make_node(voters=(1,))
    node.campaign()
    rd = node.ready()
    assert rd.soft_state is not None and rd.soft_state.role is Role.LEADER
    storage.append(rd.entries)
    node.advance(rd)
    rd = node.ready()
    assert [e.index for e in rd.committed_entries] == [1]


def test_role_changes_go_to_the_injected_logger(caplog: pytest.LogCaptureFixture) -> None:
    injected = logging.getLogger("test.node1")
    node, _ = make_node(voters=(1,), logger=injected)
    with caplog.at_level(logging.INFO):
        node.campaign()
    became = [r for r in caplog.records if "became leader" in r.getMessage()]
    assert [r.name for r in became] == ["test.node1"]


def test_the_core_logs_to_raftkv_raft_by_default(caplog: pytest.LogCaptureFixture) -> None:
    node, _ = make_node(voters=(1,))
    with caplog.at_level(logging.INFO, logger="raftkv.raft"):
        node.campaign()
    became = [r.name for r in caplog.records if "became leader" in r.getMessage()]
    assert became == ["raftkv.raft"]


def test_three_nodes_elect_one_leader_by_ticking():
    net = LockstepNetwork(3, seed=7)
    net.tick(times=30)
    assert len(net.leaders()) == 1
    terms = {n.term for n in net.nodes.values()}
    assert len(terms) == 1


def test_randomized_election_timeout_in_range():
    for seed in range(50):
        node, _ = make_node(seed=seed, election_ticks=10)
        ticks = 0
        while node.status().role is Role.FOLLOWER:
            node.tick()
            ticks += 1
        assert 10 <= ticks < 20


def test_vote_requires_up_to_date_log():
    # Raft §5.4.1: a voter with a longer log at the same last term denies its vote.
    node, storage = make_node(node_id=2)
    storage.append([Entry(1, 1), Entry(1, 2)])
    storage.set_hard_state(HardState(term=1))
    node = RawNode(RaftConfig(node_id=2), storage, random.Random(0))
    node.step(RequestVote(src=1, dst=2, term=2, last_index=1, last_term=1))
    rd = node.ready()
    (resp,) = rd.persisted_messages
    assert isinstance(resp, VoteResponse) and not resp.granted
    node.advance(rd)
    node.step(RequestVote(src=3, dst=2, term=2, last_index=2, last_term=1))
    rd = node.ready()
    (resp,) = rd.persisted_messages
    assert isinstance(resp, VoteResponse) and resp.granted
    assert rd.hard_state == HardState(term=2, vote=3, commit=0)
    assert rd.must_sync


def test_one_vote_per_term():
    node, _ = make_node(node_id=2)
    node.step(RequestVote(src=1, dst=2, term=1, last_index=0, last_term=0))
    node.step(RequestVote(src=3, dst=2, term=1, last_index=0, last_term=0))
    rd = node.ready()
    granted = [m.granted for m in rd.persisted_messages if isinstance(m, VoteResponse)]
    assert granted == [True, False]


def test_vote_response_waits_for_persistence_but_pre_vote_does_not():
    node, _ = make_node(node_id=2)
    node.step(RequestVote(src=1, dst=2, term=1, last_index=0, last_term=0, pre_vote=True))
    rd = node.ready()
    assert [type(m) for m in rd.messages] == [VoteResponse]
    assert rd.persisted_messages == ()
    assert rd.hard_state is None  # a pre-vote changes nothing durable


def test_pre_vote_keeps_a_partitioned_node_from_inflating_its_term():
    net = LockstepNetwork(3, seed=3)
    net.elect(1)
    net.isolate(3)
    net.tick(node_ids=[3], times=100)
    assert net.nodes[3].term == 1
    net.recover()
    net.tick(times=3)
    assert net.leaders() == [1]
    assert net.nodes[1].term == 1


def test_without_pre_vote_a_rejoining_node_disrupts():
    net = LockstepNetwork(
        3, seed=3, config=lambda i: RaftConfig(node_id=i, pre_vote=False, check_quorum=False)
    )
    net.elect(1)
    net.isolate(3)
    net.tick(node_ids=[3], times=100)
    assert net.nodes[3].term > 1


def test_check_quorum_leader_steps_down_when_isolated():
    net = LockstepNetwork(3, seed=5)
    net.elect(1)
    net.isolate(1)
    # Activity seen before the partition counts for one check-quorum round, not two.
    net.tick(node_ids=[1], times=20)
    assert net.nodes[1].role is Role.FOLLOWER


def test_leader_lease_ignores_disruptive_vote_request():
    net = LockstepNetwork(3, seed=5)
    net.elect(1)
    before = net.nodes[2].term
    net.nodes[2].node.step(RequestVote(src=3, dst=2, term=5, last_index=10, last_term=5))
    assert net.nodes[2].term == before
    assert not net.nodes[2].node.has_ready()


def test_new_leader_elected_after_leader_isolation():
    net = LockstepNetwork(3, seed=11)
    net.elect(1)
    net.isolate(1)
    net.tick(node_ids=[2, 3], times=40)
    leaders = [i for i in (2, 3) if net.nodes[i].role is Role.LEADER]
    assert len(leaders) == 1


def test_proposal_on_follower_is_a_definite_not_leader_with_hint():
    net = LockstepNetwork(3)
    net.elect(1)
    with pytest.raises(NotLeader) as exc:
        net.nodes[2].node.propose(b"x")
    assert exc.value.leader == 1


def test_ready_twice_without_advance_is_a_bug():
    node, _ = make_node(voters=(1,))
    node.campaign()
    node.ready()
    with pytest.raises(InternalError):
        node.ready()


def test_same_seed_same_behaviour():
    def run(seed):
        net = LockstepNetwork(5, seed=seed)
        net.tick(times=40)
        return [(type(m).__name__, m.src, m.dst, m.term) for m in net.delivered]

    assert run(9) == run(9)
    assert run(9) != run(10)
