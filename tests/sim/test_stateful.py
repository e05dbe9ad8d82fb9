"""The simulator driven by hypothesis: every rule is one action of the simulator's menu, so a
failing schedule shrinks to a minimal program of ticks, deliveries, drops, partitions, crashes,
restarts and client ops.

Invariants run after every rule (and the incremental checks inside each action); teardown runs
the liveness phase and the linearizability check.
"""

from __future__ import annotations

import os

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from raftkv.sim.chooser import HypothesisChooser, SeededChooser
from raftkv.sim.cluster import SimCluster
from raftkv.sim.options import PARTITION_MODES, SimOptions

COARSE = True
"""One seed per rule for the choices inside it: fast to generate and to shrink."""

NODE = st.integers(1, 5)
INDEX = st.integers(0, 10_000)
NEMESES = (
    *(f"partition-{mode}" for mode in PARTITION_MODES),
    "heal",
    "crash",
    "crash-leader",
    "restart",
    "campaign",
    "transfer",
)


class RaftClusterMachine(RuleBasedStateMachine):
    cluster: SimCluster
    chooser: HypothesisChooser

    def __init__(self) -> None:
        super().__init__()
        self.broken = False
        self.checked_ops = 0

    @initialize(
        data=st.data(),
        nodes=st.sampled_from([3, 5]),
        snapshot_threshold=st.sampled_from([1000, 5, 20]),
        tiny_messages=st.booleans(),
        pause_prob=st.sampled_from([0.0, 0.3]),
    )
    def setup(self, data, nodes, snapshot_threshold, tiny_messages, pause_prob):
        opts = SimOptions(
            seed=0,
            nodes=nodes,
            delay_min_ticks=1,
            delay_max_ticks=3,
            pause_prob=pause_prob,
            snapshot_threshold=snapshot_threshold,
            snapshot_keep=1,
            max_size_per_msg_bytes=60 if tiny_messages else 1024 * 1024,
            max_inflight_msgs=4,
            heartbeat_ticks=2,
            clients=3,
            keys=2,
            op_prob=0.6,
            op_timeout_ticks=15,
            liveness_ticks=600,
        )
        self.chooser = HypothesisChooser(data, coarse=COARSE)
        self.cluster = SimCluster(opts, self.chooser, auto_faults=False)
        # Warm up with a seeded chooser: the first election is not where the bugs are.
        self.cluster.set_chooser(SeededChooser(0))
        for _ in range(30):
            self.cluster.run_tick()
        self.cluster.set_chooser(self.chooser)

    def _node(self, node_id: int):
        return self.cluster.nodes[(node_id - 1) % len(self.cluster.nodes)]

    def _act(self, data, fn, *args) -> None:
        self.chooser.bind(data)
        try:
            fn(*args)
        except BaseException:
            self.broken = True
            raise

    @rule(data=st.data(), n=st.integers(1, 40), frozen=st.none() | NODE)
    def tick(self, data, n, frozen):
        """n global ticks; optionally one node's clock stands still meanwhile."""

        def ticks() -> None:
            if frozen is not None:
                self.cluster.frozen = (self._node(frozen).id,)
            try:
                for _ in range(n):
                    self.cluster.run_tick()
            finally:
                self.cluster.frozen = ()

        self._act(data, ticks)

    @rule(data=st.data(), node=NODE, n=st.integers(1, 20))
    def clock_drift(self, data, node, n):
        """Only one node's clock moves (and its pipeline runs): clocks drift apart."""
        target = self._node(node)

        def ticks() -> None:
            for _ in range(n):
                self.cluster.tick_node(target)
                self.cluster.run_pipeline(target)

        self._act(data, ticks)

    @precondition(lambda self: len(self.cluster.network) > 0)
    @rule(data=st.data(), action=st.sampled_from(["deliver", "drop", "duplicate"]), k=INDEX)
    def message(self, data, action, k):
        """Deliver, drop or duplicate one in-flight message, ahead of its time."""
        network = self.cluster.network
        fn = {
            "deliver": self.cluster.deliver,
            "drop": network.drop,
            "duplicate": network.duplicate,
        }[action]
        self._act(data, fn, k % len(network))

    @rule(data=st.data(), node=NODE)
    def pipeline_stage(self, data, node):
        """Run one stage of a node's Ready pipeline (a crash can then fall between stages)."""
        n = self._node(node)
        if n.alive and n.busy():
            self._act(data, n.step_once)

    @rule(data=st.data(), kind=st.sampled_from(NEMESES), node=NODE, to=NODE)
    def nemesis(self, data, kind, node, to):
        cluster = self.cluster
        n = self._node(node)
        if kind.startswith("partition-"):
            self._act(data, cluster.partition, kind.removeprefix("partition-"))
        elif kind == "heal":
            self._act(data, cluster.heal)
        elif kind == "crash":
            self._act(data, cluster.crash, n)
        elif kind == "crash-leader":
            leader = cluster.by_id.get(cluster.leader())
            if leader is not None:
                self._act(data, cluster.crash, leader)
        elif kind == "restart":
            self._act(data, cluster.restart, n)
        elif kind == "campaign":
            self._act(data, cluster.campaign, n)
        else:
            self._act(data, cluster.transfer, n, self._node(to).id)

    @rule(
        data=st.data(),
        client=st.integers(0, 2),
        kind=st.sampled_from(["write", "read", "cas"]),
        key=st.sampled_from(["k0", "k1"]),
    )
    def client_op(self, data, client, kind, key):
        self._act(data, self.cluster.client_op, self.cluster.clients[client], kind, key)

    @invariant()
    def safety(self):
        if not self.broken:
            self.cluster.check_invariants()

    @invariant()
    def linearizable_so_far(self):
        # Fails as early as the final check would, which makes shrinking much faster.
        if self.broken or len(self.cluster.history) == self.checked_ops:
            return
        self.checked_ops = len(self.cluster.history)
        result = self.cluster.check_history_so_far()
        assert result.ok, f"{result.key}: {result.explanation}"

    def teardown(self):
        if self.broken or not hasattr(self, "cluster"):
            return
        cluster = self.cluster
        cluster.set_chooser(SeededChooser(0))
        cluster.converge(cluster.opts.liveness_ticks)
        result = cluster.check_history()
        assert result.ok, f"{result.key}: {result.explanation}"


_profile = os.environ.get("HYPOTHESIS_PROFILE", "dev")
_examples = settings().max_examples if _profile == "sweep" else 100

TestRaftCluster = RaftClusterMachine.TestCase
TestRaftCluster.settings = settings(
    settings.default, max_examples=_examples, stateful_step_count=50
)
