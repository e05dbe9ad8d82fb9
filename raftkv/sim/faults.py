"""FaultScheduler: the simulated cluster's seeded nemesis, as a part of ``SimCluster``.

Partitions (symmetric, one-way, the leader cut off, swizzle-clogs), crashes and restarts, slow
nodes, leader churn (short-lived leaders that leave uncommitted entries behind), frozen clocks,
and forced elections and leadership transfers. ``faults`` is the seeded scheduler, called once
per global tick; the other methods are actions that scripted and hypothesis-driven runs call
directly.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from raftkv.errors import RaftKVError
from raftkv.raft.types import NodeId, Role
from raftkv.sim.chooser import Chooser, pick
from raftkv.sim.network import SimNetwork, SwizzleClog, make_partition
from raftkv.sim.options import SimOptions
from raftkv.sim.stats import Stats

if TYPE_CHECKING:
    from raftkv.sim.node import SimNode

__all__ = ["FaultScheduler"]


class FaultScheduler:
    """Mixed into SimCluster, whose state it reads and changes."""

    opts: SimOptions
    chooser: Chooser
    network: SimNetwork
    stats: Stats
    now: int
    ids: tuple[NodeId, ...]
    nodes: list[SimNode]
    by_id: dict[NodeId, SimNode]
    roles: dict[NodeId, Role]
    frozen: tuple[NodeId, ...]
    partition_until: int
    swizzle: SwizzleClog | None
    slow_until: int
    churn: list[tuple[int, NodeId]]
    restart_at: dict[NodeId, int]

    def log(self, action: str) -> None:
        raise NotImplementedError

    def leader(self) -> NodeId:
        raise NotImplementedError

    def crash(self, node: SimNode) -> None:
        raise NotImplementedError

    def restart(self, node: SimNode) -> None:
        raise NotImplementedError

    def partition(self, mode: str, hold_ticks: int = 20) -> None:
        """Cut links by ``mode`` (see options.PARTITION_MODES); a swizzle unfolds over the
        following ticks (``hold_ticks`` with all its nodes cut off) and then heals itself."""
        if mode == "swizzle":
            self.swizzle = SwizzleClog(self.ids, self.chooser, self.now, hold_ticks)
            self.stats.partitions += 1
            self.log(f"swizzle {self.swizzle.events}")
            self._advance_swizzle()
            return
        leader = self.leader()
        links = make_partition(mode, self.ids, self.chooser, leader)
        self.network.partition(links)
        self.stats.partitions += 1
        self.log(f"partition {mode} {sorted(links)}")
        if mode == "leader" and leader:
            self._maybe_freeze(leader)

    def _maybe_freeze(self, node_id: NodeId) -> None:
        if self.opts.freeze_leader_prob and self.chooser.chance(self.opts.freeze_leader_prob):
            self.frozen = (node_id,)
            self.log(f"freeze the clock of n{node_id} until the partition heals")

    def _advance_swizzle(self) -> None:
        swizzle = self.swizzle
        if swizzle is None:
            return
        links = swizzle.advance(self.now)
        if links is not None:
            self.network.partition(links)
            self.log(f"swizzle now cuts {sorted(swizzle.clogged)}")
        if swizzle.done:
            self.heal()

    def heal(self) -> None:
        self.frozen = ()
        self.swizzle = None
        self.network.heal()
        self.partition_until = 0
        self.log("heal")

    def campaign(self, node: SimNode) -> None:
        if node.alive:
            self.log(f"campaign n{node.id}")
            node.raw.campaign()

    def transfer(self, node: SimNode, target: NodeId) -> None:
        if node.alive:
            self.log(f"transfer n{node.id}->{target}")
            with contextlib.suppress(RaftKVError):
                node.raw.transfer_leadership(target)

    def faults(self, _: object = None) -> None:
        """The seeded fault scheduler: partitions, crashes, restarts, elections, transfers."""
        opts, chooser, now = self.opts, self.chooser, self.now
        if self.swizzle is not None:
            pass  # it unfolds in run_tick and heals itself
        elif self.partition_until:
            if now >= self.partition_until:
                self.heal()
        elif chooser.chance(opts.partition_prob):
            hold = chooser.between(opts.partition_ticks_min, opts.partition_ticks_max)
            self.partition(pick(chooser, opts.partition_modes), hold)
            self.partition_until = now + hold
        if chooser.chance(opts.crash_prob) and len(self.restart_at) < opts.max_down:
            live = [n for n in self.nodes if n.alive]
            leader = self.by_id.get(self.leader())
            if leader is not None and chooser.chance(opts.crash_leader_prob):
                live = [leader]
            if live:
                victim = pick(chooser, live)
                self.crash(victim)
                self.restart_at[victim.id] = now + chooser.between(
                    opts.down_ticks_min, opts.down_ticks_max
                )
        if self.churn:
            self._churn()
        self._slow_nodes()
        for node_id, when in list(self.restart_at.items()):
            if when <= now:
                self.restart(self.by_id[node_id])
        if chooser.chance(opts.campaign_prob):
            self.campaign(pick(chooser, self.nodes))
        if chooser.chance(opts.transfer_prob):
            self.transfer(pick(chooser, self.nodes), pick(chooser, self.ids))

    def _slow_nodes(self) -> None:
        opts, chooser, now = self.opts, self.chooser, self.now
        if self.slow_until:
            if now >= self.slow_until:
                self.network.extra_delay.clear()
                self.slow_until = 0
                self.log("no node is slow")
        elif chooser.chance(opts.slow_prob):
            node_id = pick(chooser, self.ids)
            extra = chooser.between(1, opts.slow_extra_ticks_max)
            self.network.extra_delay[node_id] = extra
            self.slow_until = now + chooser.between(20, 150)
            self.log(f"n{node_id} slow: up to {extra} extra ticks per message")

    def _churn(self) -> None:
        """Cut short the leaderships scheduled to end now: crash the leader, or cut it off."""
        opts, chooser, now = self.opts, self.chooser, self.now
        due = [node_id for when, node_id in self.churn if when <= now]
        self.churn = [(when, node_id) for when, node_id in self.churn if when > now]
        for node_id in due:
            node = self.by_id[node_id]
            if not node.alive or self.roles.get(node_id) != Role.LEADER:
                continue
            can_crash = len(self.restart_at) < opts.max_down
            can_cut = not self.partition_until and self.swizzle is None
            if can_crash and (not can_cut or chooser.chance(0.5)):
                self.crash(node)
                self.restart_at[node_id] = now + chooser.between(
                    opts.down_ticks_min, opts.down_ticks_max
                )
            elif can_cut:
                links = make_partition("leader", self.ids, chooser, node_id)
                self.network.partition(links)
                self.stats.partitions += 1
                self.log(f"churn: cut off leader n{node_id}")
                self._maybe_freeze(node_id)
                self.partition_until = now + chooser.between(
                    opts.partition_ticks_min, opts.partition_ticks_max
                )
