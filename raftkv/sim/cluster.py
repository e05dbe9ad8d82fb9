"""SimCluster: a whole simulated raftkv cluster, its clients, and the action menu that drives it.

Every action is a method (``tick_node``, ``deliver``, ``crash``, ``client_op``, ...), so the
seeded runner, a scripted test and the hypothesis state machine drive the same code. A *global
tick* (``run_tick``) is the seeded runner's step: it gathers the enabled actions of that tick
(every live node's clock tick and pipeline run, every message falling due, idle clients that
decide to act, and the fault scheduler), shuffles them, and runs them.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Sequence
from typing import Any

from raftkv.driver import Fail, Forward, Resolve
from raftkv.kv.state_machine import ApplyResult
from raftkv.raft.messages import InstallSnapshot, Message, VoteResponse
from raftkv.raft.ready import Ready
from raftkv.raft.types import ConfState, Entry, Index, NodeId, Role, Snapshot, SnapshotMeta, Term
from raftkv.sim.chooser import Chooser
from raftkv.sim.clients import SimClient, Workload
from raftkv.sim.faults import FaultScheduler
from raftkv.sim.invariants import InvariantChecker
from raftkv.sim.leases import LeaseWorkload
from raftkv.sim.network import (
    ForwardPacket,
    Packet,
    RefusalPacket,
    SimNetwork,
    SwizzleClog,
    describe_message,
    describe_ready,
)
from raftkv.sim.node import SimNode, SimulationError, core_config_of
from raftkv.sim.options import SimOptions
from raftkv.sim.state import StateAgreement
from raftkv.sim.stats import Stats
from raftkv.testing.history import OpKind
from raftkv.testing.linearizability import CheckResult, check_history

__all__ = ["SimCluster"]


class SimCluster(FaultScheduler):
    def __init__(self, opts: SimOptions, chooser: Chooser, *, auto_faults: bool = True) -> None:
        self.opts = opts
        self.chooser = chooser
        self.auto_faults = auto_faults
        self.ids: tuple[NodeId, ...] = tuple(range(1, opts.nodes + 1))
        self.conf_state = ConfState(voters=self.ids)
        self.network = SimNetwork(
            chooser,
            drop_prob=opts.drop_prob,
            dup_prob=opts.dup_prob,
            delay_min=opts.delay_min_ticks,
            delay_max=opts.delay_max_ticks,
        )
        self.network.on_drop = self._transport_drop
        self.checker = InvariantChecker(len(self.ids))
        self.agreement = StateAgreement()
        self.now = 0
        self.stats = Stats()
        self._trace = hashlib.sha256()
        self.recent: list[str] = []
        """The last actions, for failure reports."""
        self.recent_limit = 4000
        self.verbose = False
        """Also record every message, Ready and client op in ``recent``."""
        self.pause_prob = opts.pause_prob
        self.skip_prob = opts.tick_skip_prob
        self.double_prob = opts.tick_double_prob
        self.op_prob = opts.op_prob
        self.frozen: tuple[NodeId, ...] = ()
        """Nodes whose clocks stand still (a stalled process); scripted runs set this."""
        self.partition_until = 0
        self.swizzle: SwizzleClog | None = None
        self.slow_until = 0
        self.churn: list[tuple[int, NodeId]] = []
        """(tick, leader) pairs: crash or cut off that leader then, if it still leads."""
        self.restart_at: dict[NodeId, int] = {}
        self.roles: dict[NodeId, Role] = {}
        self.last_leader: NodeId = 0
        self.nodes: list[SimNode] = [
            SimNode(i, self.conf_state, opts, chooser, self) for i in self.ids
        ]
        self.by_id: dict[NodeId, SimNode] = {n.id: n for n in self.nodes}
        self.workload = Workload(opts, chooser, self.stats)
        self.clients = self.workload.clients
        self.history = self.workload.history
        self.leases = LeaseWorkload(opts, chooser, core_config_of(opts, 0), self.stats)

    # ----------------------------------------------------------------------------- tracing

    def log(self, action: str) -> None:
        self._trace.update(action.encode())
        self._trace.update(b"\n")
        recent = self.recent
        recent.append(f"t{self.now} {action}")
        if len(recent) > self.recent_limit:
            del recent[: self.recent_limit // 2]

    def note(self, action: str) -> None:
        """Record ``action`` for failure reports (verbose runs only; not in the trace hash)."""
        if self.verbose:
            recent = self.recent
            recent.append(f"t{self.now} {action}")
            if len(recent) > self.recent_limit:
                del recent[: self.recent_limit // 2]

    def set_verbose(self, on: bool = True) -> None:
        self.verbose = on
        self.workload.verbose = on

    def trace_hash(self) -> str:
        return self._trace.hexdigest()

    def fail(self, message: str) -> SimulationError:
        return SimulationError(f"tick {self.now}: {message}")

    # ----------------------------------------------------------------------------- the step

    def run_tick(self) -> None:
        """One global tick: every enabled action of this tick, in a random order."""
        self.now += 1
        self.network.now = self.now
        self.stats.ticks += 1
        if self.swizzle is not None:
            self._advance_swizzle()
        chooser = self.chooser
        items: list[tuple[Callable[[Any], None], Any]] = []
        for node in self.nodes:
            if node.alive:
                items.append((self.tick_node, node))
                items.append((self.run_pipeline, node))
        for msg in self.network.pop_due():
            items.append((self.step_message, msg))
        op_prob = self.op_prob
        for client in self.clients:
            if client.op is None and chooser.chance(op_prob):
                items.append((self.client_op, client))
        if self.auto_faults:
            items.append((self.faults, None))
        if self.leases.enabled:
            items.append((self.lease_ops, None))
        chooser.shuffle(items)
        for fn, arg in items:
            fn(arg)
        order = [n for n in self.nodes if n.alive]
        chooser.shuffle(order)
        for node in order:
            self.run_pipeline(node)
        self.expire_ops()
        self._trace.update(f"{self.now}:{len(items)}:{self.network.sent}\n".encode())

    # ----------------------------------------------------------------------------- actions

    def tick_node(self, node: SimNode) -> None:
        """Advance one node's clock, with drift: sometimes a tick is lost or doubled."""
        if not node.alive or node.id in self.frozen:
            return
        chooser = self.chooser
        if chooser.chance(self.skip_prob):
            return
        node.tick()
        if chooser.chance(self.double_prob):
            node.tick()

    def step_message(self, msg: Packet) -> None:
        node = self.by_id.get(msg.dst)
        if node is None or not node.alive:
            if isinstance(msg, ForwardPacket):  # the stream to a dead member broke
                self._forward_lost(msg.src, msg.incarnation, msg.forward_id)
            return
        if self.verbose:
            self.note(f"recv {describe_message(msg)}")
        if isinstance(msg, ForwardPacket):
            self._deliver_forward(node, msg)
            return
        if isinstance(msg, RefusalPacket):
            if node.incarnation == msg.incarnation:
                node.request(node.core.forwards_rejected((msg.forward_id,), msg.refusal))
            return
        node.step(msg)
        if self.opts.report_transport and isinstance(msg, InstallSnapshot):
            sender = self.by_id.get(msg.src)
            if sender is not None and sender.alive:
                sender.raw.report_snapshot(msg.dst, True)

    def _deliver_forward(self, leader: SimNode, msg: ForwardPacket) -> None:
        refusal = leader.core.handle_forwards((msg.command,))
        leader.request([])
        if refusal is not None:
            reply = RefusalPacket(leader.id, msg.src, msg.incarnation, msg.forward_id, refusal)
            self.network.send(reply)
        elif self.chooser.chance(self.network.drop_prob):
            # The stream broke just after the leader read the forward: the sender cannot tell
            # this from a forward lost on the way, and must not send it again.
            self._forward_lost(msg.src, msg.incarnation, msg.forward_id)

    def _forward_lost(self, sender_id: NodeId, incarnation: int, forward_id: int) -> None:
        sender = self.by_id.get(sender_id)
        if sender is not None and sender.alive and sender.incarnation == incarnation:
            sender.request(sender.core.forwards_lost((forward_id,)))

    def forward(self, node: SimNode, forward: Forward) -> None:
        """A member forwards a client's write to the leader it knows."""
        if (node.id, forward.to) in self.network.blocked:  # no link: certainly not sent
            node.request(node.core.forwards_rejected((forward.forward_id,), None))
            return
        packet = ForwardPacket(
            node.id, forward.to, node.incarnation, forward.forward_id, forward.command
        )
        self.network.send(packet)

    def _transport_drop(self, msg: Packet, cut: bool) -> None:
        """The transport tells the sender what it knows about a lost message."""
        if isinstance(msg, ForwardPacket):
            self._forward_lost(msg.src, msg.incarnation, msg.forward_id)
            return
        if isinstance(msg, RefusalPacket):  # the refusal's stream broke: outcome unknown
            self._forward_lost(msg.dst, msg.incarnation, msg.forward_id)
            return
        if not self.opts.report_transport:
            return
        sender = self.by_id.get(msg.src)
        if sender is None or not sender.alive:
            return
        if isinstance(msg, InstallSnapshot):
            sender.raw.report_snapshot(msg.dst, False)
        elif cut:
            sender.raw.report_unreachable(msg.dst)

    def deliver(self, k: int) -> None:
        """Deliver the k-th in-flight message now (scripted / hypothesis runs)."""
        msg = self.network.take(k)
        if msg is not None:
            self.log(f"deliver {describe_message(msg)}")
            self.step_message(msg)

    def run_pipeline(self, node: SimNode) -> None:
        node.run(self.pause_prob)

    def settle(self, max_rounds: int = 50) -> None:
        """Run every live node's pipeline until no node has work."""
        for _ in range(max_rounds):
            busy = [n for n in self.nodes if n.alive and n.busy()]
            if not busy:
                return
            for node in busy:
                node.run(0.0)

    def crash(self, node: SimNode) -> None:
        if not node.alive:
            return
        self.stats.crashes += 1
        self.workload.node_crashed(node.id)
        self.leases.node_crashed(node.id)
        self._drain_notes()
        work = node.describe()
        kept = node.crash()
        self.roles.pop(node.id, None)
        self.log(f"crash n{node.id} with {work}, kept {kept} unsynced txns")
        self.checker.check_durable([n.disk.durable for n in self.nodes], f"crash of {node.id}")

    def restart(self, node: SimNode) -> None:
        if node.alive:
            return
        self.stats.restarts += 1
        self.restart_at.pop(node.id, None)
        node.restart()
        self.log(f"restart n{node.id}")

    def leader(self) -> NodeId:
        """The live node that most recently reported itself leader (0: none)."""
        node_id = self.last_leader
        if self.roles.get(node_id) == Role.LEADER and self.by_id[node_id].alive:
            return node_id
        return 0

    # ----------------------------------------------------------------------------- clients

    def lease_ops(self, _: None = None) -> None:
        live = [n for n in self.nodes if n.alive]
        self.leases.act(self.now, live, self.leader())

    def client_op(
        self, client: SimClient, kind: OpKind | None = None, key: str | None = None
    ) -> None:
        """The client invokes one op (random unless given) against a node of its choice."""
        if client.op is not None:
            return
        live = [n for n in self.nodes if n.alive]
        if not live:
            return
        node, chosen_kind, chosen_key = self.workload.choose(live)
        self.workload.invoke(client, node, kind or chosen_kind, key or chosen_key, self.now)
        self._drain_notes()

    def _drain_notes(self) -> None:
        notes = self.workload.notes
        if notes:
            for note in notes:
                self.note(note)
            notes.clear()

    def expire_ops(self) -> None:
        self.workload.expire(self.now, self.by_id)
        self.leases.expire(self.now, self.by_id)
        self._drain_notes()

    # ----------------------------------------------------------------------------- node hooks

    def send(self, node: SimNode, msg: Message) -> None:
        if isinstance(msg, VoteResponse) and msg.granted and not msg.pre_vote:
            self.checker.vote_granted(node.id, msg.term, msg.dst)
        if isinstance(msg, InstallSnapshot):
            # As the server's transport: the snapshot carries the sender's state machine image
            # as of now, which may be newer than the snapshot's index.
            image = b"".join(node.sm.snapshot_chunks())
            msg = dataclasses.replace(msg, snapshot=Snapshot(msg.snapshot.meta, image))
        self.network.send(msg)

    def _term_at(self, node: SimNode, rd: Ready | None, index: Index) -> Term | None:
        """``node``'s log term at ``index``, counting the entries of ``rd`` not yet persisted:
        None if compacted away, -1 if missing."""
        if rd is not None and rd.entries and index >= rd.entries[0].index:
            first = rd.entries[0].index
            if index - first < len(rd.entries):
                return rd.entries[index - first].term
            return -1
        storage = node.disk.storage
        if index < storage.first_index() - 1:
            return None
        if index > storage.last_index():
            return -1
        return storage.term(index)

    def on_ready(self, node: SimNode, rd: Ready) -> None:
        if self.verbose:
            self.note(f"n{node.id} {describe_ready(rd)}")
        if not rd.must_sync:
            self._check_needs_no_sync(node, rd)
        checker = self.checker
        hs = rd.hard_state
        if hs is not None:
            checker.commit_seen(hs.commit)
        if hs is not None and hs.commit > 0:
            entry_term = self._term_at(node, rd, hs.commit)
            if entry_term is not None and entry_term > 0:
                checker.commit_observed(node.id, hs.term, hs.commit, entry_term)
                prev = node.disk.storage.hard_state
                if (
                    rd.soft_state is None
                    and self.roles.get(node.id) == Role.LEADER
                    and hs.term == prev.term
                    and hs.commit > prev.commit
                ):
                    checker.leader_committed(node.id, hs.term, hs.commit, entry_term)
        soft = rd.soft_state
        if soft is None:
            return
        role = soft.role
        self.roles[node.id] = role
        if role != Role.LEADER:
            return
        status = node.raw.status()
        if status.role != Role.LEADER:
            return
        self.stats.elections += 1
        self.last_leader = node.id
        if self.auto_faults and self.chooser.chance(self.opts.churn_prob):
            when = self.now + self.chooser.between(0, self.opts.churn_ticks_max)
            self.churn.append((when, node.id))
        self.log(f"leader n{node.id} term {status.term}")
        checker.leader_elected(node.id, status.term)
        checker.check_leader_log(node.id, status.term, lambda index: self._term_at(node, rd, index))

    def _check_needs_no_sync(self, node: SimNode, rd: Ready) -> None:
        """The Ready contract: entries, a snapshot, or a new term or vote must be fsynced
        (etcd's MustSync); only a commit-index change may skip it."""
        hs, old = rd.hard_state, node.disk.storage.hard_state
        if (
            rd.entries
            or rd.snapshot is not None
            or (hs is not None and (hs.term != old.term or hs.vote != old.vote))
        ):
            raise self.fail(
                f"node {node.id}: Ready with must_sync=False carries entries, a snapshot or a"
                f" new term/vote: hard state {old} -> {hs}, {len(rd.entries)} entries"
            )

    def on_persisted(self, node: SimNode, entries: Sequence[Entry], prev_term: int) -> None:
        self.checker.entries_persisted(node.id, entries, prev_term)

    def on_durable(self, node: SimNode) -> None:
        self.checker.check_durable([n.disk.durable for n in self.nodes], f"sync on {node.id}")

    def on_snapshot_restored(self, node: SimNode, meta: SnapshotMeta) -> None:
        self.stats.snapshots_installed += 1
        self.log(f"snapshot-restore n{node.id} {meta.index}")
        self.checker.snapshot_committed(node.id, meta.index, meta.term, b"")

    def on_snapshot_taken(self, node: SimNode, meta: SnapshotMeta) -> None:
        self.stats.snapshots_taken += 1
        self.checker.snapshot_committed(node.id, meta.index, meta.term, b"")

    def on_applied(
        self, node: SimNode, entries: Sequence[Entry], results: Sequence[ApplyResult]
    ) -> None:
        checker = self.checker
        before = checker.max_committed
        first = {e.index for e in entries if e.index not in checker.committed}
        self.leases.applied(entries, results, first, self.now)
        for entry in entries:
            checker.entry_applied(node.id, entry)
        self.stats.applied += len(entries)
        if checker.max_committed != before:
            checker.check_durable([n.disk.durable for n in self.nodes], "commit")
        self.agreement.applied(node.id, node.sm)

    def on_outcome(self, node: SimNode, outcome: Resolve | Fail) -> None:
        if self.leases.outcome(node, outcome, self.now):
            return
        self.workload.outcome(node, outcome)
        self._drain_notes()

    # ----------------------------------------------------------------------------- checks

    def set_chooser(self, chooser: Chooser) -> None:
        """Route every further choice through ``chooser``."""
        self.chooser = chooser
        self.network.chooser = chooser
        self.workload.chooser = chooser
        self.leases.chooser = chooser
        for node in self.nodes:
            node.chooser = chooser

    def check_invariants(self) -> None:
        """A full (non-incremental) pass over the current state, on top of the checks that
        run as events happen."""
        self.checker.check_durable([n.disk.durable for n in self.nodes], "full check")
        leaders: dict[Term, NodeId] = {}
        for node in self.nodes:
            if not node.alive:
                continue
            status = node.raw.status()
            # A member's own commit index can lag its state machine after a restart (the commit
            # index is not written on its own), but nothing uncommitted may ever apply.
            applied, committed = node.sm.applied_index(), self.checker.max_commit_seen
            if applied > committed:
                raise self.fail(f"node {node.id} applied {applied} > any commit {committed}")
            if status.role == Role.LEADER:
                other = leaders.setdefault(status.term, node.id)
                if other != node.id:
                    raise self.fail(f"nodes {other} and {node.id} both lead term {status.term}")
                self.checker.leader_elected(node.id, status.term)

    # ----------------------------------------------------------------------------- the end

    def converge(self, budget: int) -> int:
        """The liveness phase: stop all faults, heal, restart everything; then require one
        leader and identical state machines on every node within ``budget`` ticks. Returns
        the ticks it took."""
        quiet = self.opts.quiet()
        self.network.configure(
            drop_prob=0.0,
            dup_prob=0.0,
            delay_min=quiet.delay_min_ticks,
            delay_max=quiet.delay_max_ticks,
        )
        self.heal()
        self.network.extra_delay.clear()
        self.slow_until = 0
        self.churn.clear()
        for node in self.nodes:
            self.restart(node)
        self.restart_at.clear()
        self.auto_faults = False
        self.frozen = ()
        self.pause_prob = self.skip_prob = self.double_prob = 0.0
        self.op_prob = 0.0
        self.leases.stop()
        for spent in range(1, budget + 1):
            self.run_tick()
            if spent % 5 == 0 and self.converged() is None:
                return spent
        raise self.fail(f"no convergence within {budget} ticks: {self.converged()}")

    def converged(self) -> str | None:
        """None if the cluster has converged, else why not."""
        statuses = [n.raw.status() for n in self.nodes]
        leaders = [s for s in statuses if s.role == Role.LEADER]
        if len(leaders) != 1:
            return f"{len(leaders)} leaders"
        lead = leaders[0]
        for s in statuses:
            if s.leader != lead.id or s.term != lead.term:
                return f"node {s.id} follows {s.leader} in term {s.term}"
        if lead.commit < self.checker.max_committed:
            return f"leader commit {lead.commit} < committed {self.checker.max_committed}"
        if any(n.sm.applied_index() != lead.commit for n in self.nodes):
            applied = [n.sm.applied_index() for n in self.nodes]
            return f"applied {applied}, leader commit {lead.commit}"
        hashes = {self.agreement.hash_kv(n.sm) for n in self.nodes}
        if len(hashes) != 1:
            raise self.fail(f"state machines differ at applied index {lead.commit}: {hashes}")
        if self.workload.pending:
            return f"{len(self.workload.pending)} client ops pending"
        return None

    def drain_leases(self) -> int:
        """After ``converge``: once the leader's lessor is primary (it has committed and
        applied an entry of its term, which can take a while after a long uncommitted tail),
        with nobody keeping leases alive, the leader must revoke every lease, and every member
        drop every leased key, within the documented bound (``raftkv.sim.leases``). Returns the
        ticks it took."""
        spent = 0
        while not any(n.alive and n.core.lessor.primary_term for n in self.nodes):
            if spent >= self.opts.liveness_ticks:
                raise self.fail(f"no primary lessor within {spent} ticks of convergence")
            self.run_tick()
            spent += 1
        budget = self.leases.drain_budget()
        left: list[str] = []
        for waited in range(budget + 1):
            left = [w for n in self.nodes if (w := self.leases.leftovers(n)) is not None]
            if not left:
                return spent + waited
            self.run_tick()
        raise self.fail(f"leases outlived their bound of {budget} ticks: {'; '.join(left)}")

    def check_history_so_far(self) -> CheckResult:
        """Check the history up to now, counting every pending op as info. If this fails, so
        will the final check: later completions only constrain ops more than info does."""
        return check_history(self.workload.ops_so_far())

    def check_history(self) -> CheckResult:
        return check_history(self.workload.final_ops())

    def fingerprint(self) -> str:
        """A digest of the final state, folded into the trace hash."""
        parts = [
            f"n{n.id}:{n.sm.applied_index()}:{self.agreement.hash_kv(n.sm)}"
            f":{n.disk.durable.last_index()}"
            for n in self.nodes
        ]
        self.log("final " + " ".join(parts))
        return self.trace_hash()
