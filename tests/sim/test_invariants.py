"""The invariant checker flags each kind of violation; and the whole simulator bites when the
*driver* breaks the Ready contract (the core itself is mutated by the mutation suite)."""

from __future__ import annotations

import dataclasses

import pytest

from raftkv.driver import Action, DriverCore, Send
from raftkv.raft.ready import Ready
from raftkv.raft.storage import MemoryStorage
from raftkv.raft.types import ConfState, Entry
from raftkv.sim import disk as diskmod
from raftkv.sim.chooser import SeededChooser
from raftkv.sim.cluster import SimCluster
from raftkv.sim.invariants import InvariantChecker
from raftkv.sim.node import SimNode, SimulationError
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
    original_take = DriverCore._take

    def take(self: DriverCore, rd: Ready, out: list[Action]) -> None:
        if rd.persisted_messages:
            out.append(Send(rd.persisted_messages))
        original_take(self, rd, out)

    monkeypatch.setattr(DriverCore, "_take", take)
    failures = []
    for seed in range(60):
        result = run_seed(seed)
        if not result.ok:
            failures.append(result)
            break
    assert failures, "no seed caught acknowledgements sent before persisting"


def _step_leader_until(cluster: SimCluster, leader: SimNode, kind: str) -> bool:
    """Run the leader one step at a time (the rest of the cluster around it) until it has run
    a step of ``kind``; False if it never did."""
    for _ in range(300):
        ran = leader.step_once()
        if ran == kind:
            return True
        if ran is None:  # let the others answer: a tick without the leader's own pipeline
            cluster.now += 1
            cluster.network.now = cluster.now
            for msg in cluster.network.pop_due():
                cluster.step_message(msg)
            for node in cluster.nodes:
                if node is not leader and node.alive:
                    node.tick()
                    node.run(0.0)
    return False


def test_crash_after_every_kind_of_step() -> None:
    """Scripted: crash the leader right after a step of each kind (its event loop, its disk
    thread, its apply thread); safety holds throughout and the cluster converges."""
    opts = SimOptions(nodes=3, clients=3, keys=1, op_prob=0.3, snapshot_threshold=8)
    crashed_after: list[str] = []
    for seed, kind in enumerate(["loop", "disk", "apply"] * 3):
        # Every other world applies everything on the apply thread, none of it on the disk's.
        world = dataclasses.replace(opts, light_apply_max_entries=64 * (seed % 2))
        cluster = SimCluster(world, SeededChooser(seed), auto_faults=False)
        for _ in range(40):
            cluster.run_tick()
        for _ in range(4):
            leader = cluster.by_id.get(cluster.leader())
            idle = [c for c in cluster.clients if c.op is None]
            if leader is None or not idle:
                cluster.run_tick()
                continue
            cluster.op_prob = 0.0
            cluster.client_op(idle[0], "write", "k0")
            cluster.op_prob = opts.op_prob
            if _step_leader_until(cluster, leader, kind):
                crashed_after.append(kind)
            cluster.crash(leader)
            for _ in range(30):
                cluster.run_tick()
            cluster.restart(leader)
            for _ in range(30):
                cluster.run_tick()
        cluster.check_invariants()
        cluster.converge(400)
        assert cluster.check_history().ok
    assert set(crashed_after) == {"loop", "disk", "apply"}


def test_commit_rule() -> None:
    c = InvariantChecker(3)
    c.leader_committed(1, 4, 10, 4)
    with pytest.raises(SimulationError, match="commit rule"):
        c.leader_committed(1, 4, 11, 3)
