"""Log replication (Raft §5.3, §5.4.2), progress tracking, pipelining and snapshots."""

import random

import pytest

from raftkv.errors import ConfigError, ProposalDropped
from raftkv.raft.config import RaftConfig
from raftkv.raft.messages import AppendEntries, AppendResponse, Heartbeat, InstallSnapshot
from raftkv.raft.rawnode import RawNode
from raftkv.raft.storage import MemoryStorage
from raftkv.raft.types import ConfState, Entry, HardState, Role
from raftkv.testing.lockstep import LockstepNetwork


def follower_with_log(entries, term=None, commit=0, node_id=2):
    storage = MemoryStorage(ConfState(voters=(1, 2, 3)))
    storage.append(entries)
    last_term = entries[-1].term if entries else 0
    storage.set_hard_state(HardState(term=term or last_term, commit=commit))
    return RawNode(RaftConfig(node_id=node_id), storage, random.Random(0)), storage


def responses(node):
    rd = node.ready()
    node.advance(rd)
    return rd, [m for m in rd.persisted_messages if isinstance(m, AppendResponse)]


def test_proposals_replicate_and_commit_everywhere():
    net = LockstepNetwork(3)
    net.elect(1)
    for i in range(20):
        net.nodes[1].node.propose(b"%d" % i)
    net.stabilize()
    for n in net.nodes.values():
        assert [e.data for e in n.applied[1:]] == [b"%d" % i for i in range(20)]


def test_proposals_made_together_share_one_append():
    net = LockstepNetwork(3)
    net.elect(1)
    net.delivered.clear()
    for i in range(10):
        net.nodes[1].node.propose(b"%d" % i)
    net.stabilize()
    appends = [m for m in net.delivered if isinstance(m, AppendEntries) and m.entries]
    assert len(appends) == 2  # one per follower


def test_append_rejected_when_prev_does_not_match_with_hint():
    node, _ = follower_with_log([Entry(1, 1), Entry(1, 2), Entry(2, 3)], term=3)
    node.step(AppendEntries(1, 2, 3, prev_index=5, prev_term=3, entries=(), commit=0))
    _, (resp,) = responses(node)
    assert resp.reject and resp.index == 5
    assert (resp.reject_hint, resp.log_term) == (3, 2)


def test_conflicting_suffix_is_replaced():
    node, storage = follower_with_log([Entry(1, 1), Entry(2, 2), Entry(2, 3)], term=3)
    node.step(AppendEntries(1, 2, 3, prev_index=1, prev_term=1, entries=(Entry(3, 2),), commit=0))
    rd, (resp,) = responses(node)
    assert not resp.reject and resp.index == 2
    assert rd.entries == (Entry(3, 2),)
    storage.append(rd.entries)
    assert storage.last_index() == 2 and storage.term(2) == 3


def test_stale_append_never_truncates_matching_entries():
    log = [Entry(1, 1), Entry(1, 2), Entry(1, 3), Entry(1, 4)]
    node, storage = follower_with_log(log, term=1)
    node.step(AppendEntries(1, 2, 1, prev_index=1, prev_term=1, entries=(Entry(1, 2),), commit=0))
    rd, (resp,) = responses(node)
    assert not resp.reject and resp.index == 2
    assert rd.entries == ()
    assert storage.last_index() == 4


def test_follower_commit_never_exceeds_what_the_append_proved():
    node, _ = follower_with_log([Entry(1, 1), Entry(1, 2), Entry(1, 3)], term=1)
    node.step(AppendEntries(1, 2, 1, prev_index=1, prev_term=1, entries=(), commit=3))
    assert node.status().commit == 1


def test_leader_does_not_commit_earlier_term_entry_by_counting():
    # Figure 8: node 1, leader of term 3, holds an entry of term 2 that a majority now has.
    net = LockstepNetwork(3)
    for n in (1, 2):
        net.nodes[n].storage.append([Entry(1, 1), Entry(2, 2)])
    net.nodes[3].storage.append([Entry(1, 1)])
    for n in (1, 2, 3):
        net.nodes[n].storage.set_hard_state(HardState(term=2, commit=1))
        net.restart(n)
    net.isolate(1)
    net.nodes[1].node.campaign()
    # Vote for node 1 by hand, then let it replicate only the term-2 entry to node 2.
    net.cut_links.clear()
    net.ignored.add(AppendEntries)
    net.stabilize()
    leader = net.nodes[1].node
    assert net.nodes[1].role is Role.LEADER
    assert leader.status().term == 3
    # Node 2 acknowledges index 2 (term 2) but not the term-3 no-op at index 3.
    leader.step(AppendResponse(src=2, dst=1, term=3, index=2))
    assert leader.status().commit == 1
    leader.step(AppendResponse(src=2, dst=1, term=3, index=3))
    net.handle_ready(1)
    assert leader.status().commit == 3


def test_pipelining_is_bounded_by_max_inflight():
    net = LockstepNetwork(
        3, config=lambda i: RaftConfig(node_id=i, max_inflight_msgs=2, max_size_per_msg_bytes=1)
    )
    net.elect(1)
    net.cut(1, 2)
    net.cut(1, 3)
    for i in range(10):
        net.nodes[1].node.propose(b"%d" % i)
    net.handle_ready(1)
    appends = [m for m in net.in_flight if isinstance(m, AppendEntries) and m.dst == 2]
    assert len(appends) == 2
    assert all(len(m.entries) == 1 for m in appends)


def test_lagging_follower_catches_up_after_partition():
    net = LockstepNetwork(3)
    net.elect(1)
    net.isolate(3)
    for i in range(50):
        net.nodes[1].node.propose(b"%d" % i)
        net.stabilize()
    net.recover()
    net.tick(times=3)
    assert net.nodes[3].node.status().commit == net.nodes[1].node.status().commit


def test_compacted_follower_gets_a_snapshot():
    net = LockstepNetwork(3)
    net.elect(1)
    net.isolate(3)
    for i in range(20):
        net.nodes[1].node.propose(b"%d" % i)
    net.stabilize()
    leader_storage = net.nodes[1].storage
    applied = net.nodes[1].node.status().applied
    leader_storage.create_snapshot(applied, ConfState(voters=(1, 2, 3)), b"image")
    leader_storage.compact(applied)
    net.recover()
    net.tick(times=5)
    snaps = [m for m in net.delivered if isinstance(m, InstallSnapshot)]
    assert snaps and snaps[0].snapshot.data == b"image"
    assert net.nodes[3].storage.first_index() == applied + 1
    assert net.nodes[3].node.status().commit == net.nodes[1].node.status().commit


def test_heartbeat_commit_is_capped_by_match():
    net = LockstepNetwork(3)
    net.elect(1)
    net.isolate(3)
    net.nodes[1].node.propose(b"x")
    net.stabilize()
    net.cut_links.clear()
    # Node 3 lacks index 2; a heartbeat must not tell it that index 2 is committed.
    net.nodes[1].node.tick()
    net.handle_ready(1)
    hb = [m for m in net.in_flight if isinstance(m, Heartbeat) and m.dst == 3]
    assert hb and all(m.commit <= 1 for m in hb)


def capped_leader(limit, **options):
    net = LockstepNetwork(
        3,
        config=lambda node_id: RaftConfig(
            node_id=node_id, max_uncommitted_entries_bytes=limit, **options
        ),
    )
    net.elect(1)
    return net, net.nodes[1].node


def test_a_leader_drops_proposals_past_its_uncommitted_limit():
    net, leader = capped_leader(100)
    net.isolate(1)  # nothing can commit
    for _ in range(10):
        leader.propose(b"x" * 10)  # 100 bytes held: exactly the limit
    with pytest.raises(ProposalDropped, match="uncommitted"):
        leader.propose(b"x")
    last = leader.status().last_index
    net.stabilize()
    assert leader.status().last_index == last  # the dropped proposal appended nothing


def test_the_limit_frees_up_as_entries_commit():
    net, leader = capped_leader(100)
    for _ in range(10):
        leader.propose(b"x" * 10)
    net.stabilize()
    assert leader.status().commit == leader.status().last_index
    for _ in range(10):
        leader.propose(b"y" * 10)  # the first 100 bytes committed: room for 100 more
    net.stabilize()
    assert [e.data for e in net.nodes[2].applied[-10:]] == [b"y" * 10] * 10


def test_one_proposal_is_always_accepted_when_nothing_is_uncommitted():
    net, leader = capped_leader(100)
    leader.propose(b"z" * 1000)  # over the limit alone, but the log would starve without it
    with pytest.raises(ProposalDropped):
        leader.propose(b"z")
    net.stabilize()
    assert net.nodes[3].applied[-1].data == b"z" * 1000


def test_a_leader_elected_again_starts_with_nothing_uncommitted():
    # Without leases, so that node 2 can win while node 1 still believes it leads.
    net, leader = capped_leader(100, pre_vote=False, check_quorum=False)
    net.isolate(1)
    leader.propose(b"x" * 100)  # never commits: node 1 loses leadership with it held
    net.elect(2)
    net.recover()
    net.nodes[2].node.tick()  # a heartbeat reaches node 1, which steps down
    net.stabilize()
    assert net.leaders() == [2]
    net.elect(1)
    assert net.leaders() == [1]
    leader = net.nodes[1].node
    leader.propose(b"w" * 60)
    leader.propose(b"w" * 40)
    with pytest.raises(ProposalDropped):
        leader.propose(b"w")


def test_the_limit_must_not_be_negative():
    with pytest.raises(ConfigError):
        RaftConfig(node_id=1, max_uncommitted_entries_bytes=-1)
