"""The invariant checker flags each kind of violation; and the whole simulator bites when the
*driver* breaks the Ready contract (the core itself is mutated by the mutation suite)."""

from __future__ import annotations

import pytest

from raftkv.raft.storage import MemoryStorage
from raftkv.raft.types import ConfState, Entry
from raftkv.sim import disk as diskmod
from raftkv.sim import node as nodemod
from raftkv.sim.chooser import SeededChooser
from raftkv.sim.cluster import SimCluster
from raftkv.sim.invariants import InvariantChecker
from raftkv.sim.node import SimulationError
from raftkv.sim.options import SimOptions
from raftkv.sim.runner import run_seed


def test_election_safety() -> None:
    c = InvariantChecker(3)
    c.leader_elected(1, 2)
    c.leader_elected(1, 2)
    c.leader_elected(2, 3)
    with pytest.raises(SimulationError, match="election safety"):
        c.leader_elected(3, 2)


def test_vote_safety() -> None:
    c = InvariantChecker(3)
    c.vote_granted(1, 4, 2)
    c.vote_granted(1, 4, 2)
    with pytest.raises(SimulationError, match="vote safety"):
        c.vote_granted(1, 4, 3)


def test_log_matching_content() -> None:
    c = InvariantChecker(3)
    c.entries_persisted(1, [Entry(1, 1, data=b"a"), Entry(1, 2, data=b"b")], 0)
    c.entries_persisted(2, [Entry(1, 2, data=b"b")], 1)
    with pytest.raises(SimulationError, match="log matching"):
        c.entries_persisted(3, [Entry(1, 2, data=b"c")], 1)


def test_log_matching_previous_term() -> None:
    c = InvariantChecker(3)
    c.entries_persisted(1, [Entry(2, 5, data=b"a")], -1)  # previous term unknown
    c.entries_persisted(2, [Entry(2, 5, data=b"a")], 1)
    with pytest.raises(SimulationError, match="log matching"):
        c.entries_persisted(3, [Entry(2, 5, data=b"a")], 2)


def test_state_machine_safety() -> None:
    c = InvariantChecker(3)
    c.entry_applied(1, Entry(1, 1, data=b"a"))
    c.entry_applied(2, Entry(1, 1, data=b"a"))
    with pytest.raises(SimulationError, match="state-machine safety"):
        c.entry_applied(3, Entry(2, 1, data=b"a"))
    c.snapshot_committed(1, 1, 1, b"x=1")
    with pytest.raises(SimulationError, match="snapshot"):
        c.snapshot_committed(2, 1, 1, b"x=2")


def test_leader_completeness() -> None:
    c = InvariantChecker(3)
    c.commit_observed(1, 2, 7, 2)  # hard state (term 2, commit 7): entry 7 has term 2
    c.check_leader_log(2, 2, lambda i: -1)  # term 2 itself is not "earlier"
    c.check_leader_log(2, 3, lambda i: 2)
    c.check_leader_log(2, 3, lambda i: None)  # covered by a snapshot
    with pytest.raises(SimulationError, match="leader completeness"):
        c.check_leader_log(3, 3, lambda i: -1)


def test_durability() -> None:
    c = InvariantChecker(3)
    c.entry_applied(1, Entry(1, 1, data=b"a"))
    storages = [MemoryStorage(ConfState(voters=(1, 2, 3))) for _ in range(3)]
    storages[0].append([Entry(1, 1, data=b"a")])
    with pytest.raises(SimulationError, match="durable on only 1 of 3"):
        c.check_durable(storages, "test")
    storages[1].append([Entry(1, 1, data=b"a")])
    c.check_durable(storages, "test")


# -- the simulator bites a broken driver -----------------------------------------------------


def test_acks_before_fsync_are_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """A driver that never fsyncs acknowledges writes a crash can lose."""
    original = diskmod.SimDisk.write

    def write(self: diskmod.SimDisk, txn: diskmod.Txn, *, sync: bool) -> None:
        original(self, txn, sync=False)

    monkeypatch.setattr(diskmod.SimDisk, "write", write)
    failures = [r for r in (run_seed(s, 300) for s in range(3)) if not r.ok]
    assert failures and all("durab" in (r.error or "") for r in failures)


def test_sending_persisted_messages_early_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """A driver that sends acknowledgements before persisting (Ready step 3 before step 2)."""
    original_take = nodemod.SimNode._take
    original_stage = nodemod.SimNode.step_stage

    def take(self: nodemod.SimNode) -> None:
        original_take(self)
        assert self.rd is not None
        for msg in self.rd.persisted_messages:
            self.hooks.send(msg)

    def step_stage(self: nodemod.SimNode) -> None:
        if self.stage == nodemod.SEND:
            self.stage = nodemod.APPLY  # already sent
        else:
            original_stage(self)

    monkeypatch.setattr(nodemod.SimNode, "_take", take)
    monkeypatch.setattr(nodemod.SimNode, "step_stage", step_stage)
    failures = []
    for seed in range(60):
        result = run_seed(seed)
        if not result.ok:
            failures.append(result)
            break
    assert failures, "no seed caught acknowledgements sent before persisting"


def test_crash_between_every_pair_of_stages() -> None:
    """Scripted: crash the leader right after each pipeline stage; safety holds throughout
    and the cluster converges."""
    opts = SimOptions(nodes=3, clients=3, keys=1, op_prob=0.3, snapshot_threshold=8)
    crashed_at = []
    for stage in range(1, 5):
        cluster = SimCluster(opts, SeededChooser(stage), auto_faults=False)
        for _ in range(40):
            cluster.run_tick()
        for _ in range(6):
            leader = cluster.by_id.get(cluster.leader())
            idle = [c for c in cluster.clients if c.op is None]
            if leader is None or not idle:
                cluster.run_tick()
                continue
            cluster.op_prob = 0.0
            cluster.client_op(idle[0], "write", "k0")
            cluster.op_prob = opts.op_prob
            while leader.stage != stage and leader.busy():
                leader.step_stage()
            crashed_at.append(leader.stage)
            cluster.crash(leader)
            for _ in range(30):
                cluster.run_tick()
            cluster.restart(leader)
            for _ in range(30):
                cluster.run_tick()
        cluster.check_invariants()
        cluster.converge(400)
        assert cluster.check_history().ok
    assert {1, 2, 3, 4} <= set(crashed_at)


def test_commit_rule() -> None:
    c = InvariantChecker(3)
    c.leader_committed(1, 4, 10, 4)
    with pytest.raises(SimulationError, match="commit rule"):
        c.leader_committed(1, 4, 11, 3)
