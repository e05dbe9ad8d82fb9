"""SimOptions: every knob of one simulated world, and ``swarm(seed)`` which derives them all.

Swarm testing (TigerBeetle's VOPR ``options_swarm``): instead of one fixed fault mix, each seed
draws its own world, so some seeds run with heavy message loss and no crashes, others with tiny
messages and frequent snapshots, and so on. Every parameter is a pure function of the seed.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass
from typing import Any

__all__ = ["PARTITION_MODES", "SimOptions"]

PARTITION_MODES: tuple[str, ...] = ("halves", "isolate", "leader", "oneway", "swizzle")
"""halves: two random sides, cut both ways; isolate: one node cut off both ways; leader: the
current leader cut off both ways; oneway: a random set of directed links is cut (asymmetric
partitions); swizzle: FoundationDB's swizzle-clog, nodes cut off one by one and reconnected
one by one in another order."""


_UNCOMMITTED_ROUND_TRIPS = 8
"""Swarm worlds cap a leader's uncommitted payload at what this many round trips carry."""
_LARGEST_COMMAND_BYTES = 64
"""Above the largest simulated command (a Txn compare-and-set): a message carries at least one
entry, however small its byte limit."""


@dataclass(frozen=True, slots=True)
class SimOptions:
    seed: int = 0
    nodes: int = 3
    # -- network -----------------------------------------------------------------------------
    drop_prob: float = 0.0
    dup_prob: float = 0.0
    delay_min_ticks: int = 1
    delay_max_ticks: int = 1
    report_transport: bool = False
    """Model a transport that reports failures: a lost InstallSnapshot is reported with
    ``report_snapshot(False)``, a delivered one with ``True``, a cut link with
    ``report_unreachable``."""
    slow_prob: float = 0.0
    """Per tick, while no node is slow: chance that one node's outbound messages start taking
    up to ``slow_extra_ticks_max`` extra ticks (an overloaded node or a congested link)."""
    slow_extra_ticks_max: int = 10
    # -- partitions ----------------------------------------------------------------------------
    partition_prob: float = 0.0
    """Per tick, while the network is whole: chance that a partition starts."""
    partition_modes: tuple[str, ...] = PARTITION_MODES
    partition_ticks_min: int = 10
    partition_ticks_max: int = 100
    # -- crashes -------------------------------------------------------------------------------
    crash_prob: float = 0.0
    """Per tick: chance that one live node crashes."""
    crash_leader_prob: float = 0.0
    """Chance that a crash picks the current leader rather than a random live node."""
    churn_prob: float = 0.0
    """Chance that a newly elected leader is crashed or cut off within ``churn_ticks_max``
    ticks: short-lived leaders leave uncommitted entries behind (the Figure 8 schedule)."""
    churn_ticks_max: int = 5
    max_down: int = 1
    """At most this many nodes are down at once."""
    down_ticks_min: int = 5
    down_ticks_max: int = 50
    pause_prob: float = 0.0
    """Chance that a node's Ready pipeline stops between two stages (a crash can then land
    between them)."""
    sync_prob: float = 0.0
    """Chance that a write without ``must_sync`` is fsynced anyway."""
    # -- clocks --------------------------------------------------------------------------------
    tick_skip_prob: float = 0.0
    tick_double_prob: float = 0.0
    freeze_leader_prob: float = 0.0
    """Chance that a leader cut off from the others also has its clock stopped until the
    partition heals (a long GC or VM pause): it keeps believing it leads, so it must not answer
    reads on its own while a new leader takes writes."""
    # -- raft ----------------------------------------------------------------------------------
    election_ticks: int = 10
    heartbeat_ticks: int = 1
    max_size_per_msg_bytes: int = 1024 * 1024
    max_inflight_msgs: int = 256
    max_uncommitted_entries_bytes: int = 0
    """The leader's cap on uncommitted payload (0: none); swarm worlds derive it from the
    pipeline, so a follower can always fetch the uncommitted tail in a few round trips."""
    snapshot_threshold: int = 1000
    """Take a snapshot once this many entries were applied since the last one."""
    snapshot_keep: int = 5
    """Entries kept in the log behind a snapshot."""
    light_apply_max_entries: int = 64
    """Largest batch of quick entries the driver core applies on the disk thread."""
    max_applies_in_flight: int = 64
    """Apply batches unfinished before the driver core holds its Ready pipeline back."""
    transfer_prob: float = 0.0
    campaign_prob: float = 0.0
    # -- clients -------------------------------------------------------------------------------
    clients: int = 3
    keys: int = 2
    op_prob: float = 0.2
    """Per tick, per idle client: chance of invoking an op."""
    read_frac: float = 0.3
    cas_frac: float = 0.3
    op_timeout_ticks: int = 60
    leader_hint_prob: float = 0.8
    """Chance a client sends its next op to the node a NotLeader answer pointed at."""
    lease_op_prob: float = 0.0
    """Per tick: chance the lease clients grant, attach a key or revoke (0: no lease clients;
    see ``raftkv.sim.leases``)."""
    lease_revokes_per_tick: int = 100
    """The lessor's revoke rate limit."""
    # -- liveness phase ------------------------------------------------------------------------
    liveness_ticks: int = 400

    @property
    def faulty(self) -> bool:
        return any(
            p > 0 for p in (self.drop_prob, self.dup_prob, self.partition_prob, self.crash_prob)
        )

    def quiet(self) -> SimOptions:
        """The same world with no new faults: for the liveness phase."""
        return dataclasses.replace(
            self,
            drop_prob=0.0,
            dup_prob=0.0,
            delay_max_ticks=min(self.delay_max_ticks, 2),
            delay_min_ticks=min(self.delay_min_ticks, 1),
            partition_prob=0.0,
            crash_prob=0.0,
            churn_prob=0.0,
            slow_prob=0.0,
            pause_prob=0.0,
            tick_skip_prob=0.0,
            tick_double_prob=0.0,
            transfer_prob=0.0,
            campaign_prob=0.0,
        )

    def describe(self) -> str:
        """All parameters, one ``name=value`` per line, in declaration order."""
        lines = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float):
                lines.append(f"{f.name}={value:.4f}")
            else:
                lines.append(f"{f.name}={value}")
        return "\n".join(lines)

    @classmethod
    def swarm(cls, seed: int) -> SimOptions:
        """Derive a whole world from ``seed``. Each fault class is on for only some seeds.

        Every option is drawn from one generator, so the order of the draws is part of each
        seed's world: the helpers below draw in the order their keyword arguments are evaluated
        here, left to right, and a new option is drawn last."""
        r = random.Random(f"raftkv-swarm-{seed}")
        nodes = 5 if r.random() < 0.25 else 3
        delay_min = r.randint(1, 2)
        delay_max = delay_min + r.choice((0, 1, 2, 4, 8))
        modes = tuple(m for m in PARTITION_MODES if r.random() < 0.6) or (
            r.choice(PARTITION_MODES),
        )
        snapshot_threshold = r.choice(
            (r.randint(5, 20), r.randint(5, 50), r.randint(50, 300), 10_000)
        )
        tiny = r.random() < 0.3
        world = cls(
            seed=seed,
            nodes=nodes,
            **_draw_faults(r, nodes, delay_min, delay_max, modes),
            **_draw_raft(r, tiny, snapshot_threshold),
            **_draw_clients(r),
            **_draw_late_options(r),
        )
        # Derived, not drawn, so every drawn option of a seed stays as it was. Without a cap a
        # leader whose followers move one tiny message at a time built a tail of hundreds of
        # uncommitted entries, which took them longer to fetch than the liveness phase allows
        # (seed 773173847).
        per_round_trip = max(world.max_size_per_msg_bytes, _LARGEST_COMMAND_BYTES)
        return dataclasses.replace(
            world,
            max_uncommitted_entries_bytes=_UNCOMMITTED_ROUND_TRIPS
            * per_round_trip
            * world.max_inflight_msgs,
        )


# The swarm's draws, in order (see SimOptions.swarm): each helper's dict is built in the order its
# options are drawn, and must stay so.


def _maybe(r: random.Random, p_on: float, lo: float, hi: float) -> float:
    """A fault's probability: on with chance ``p_on``, then uniform in [lo, hi]."""
    return r.uniform(lo, hi) if r.random() < p_on else 0.0


def _draw_faults(
    r: random.Random, nodes: int, delay_min: int, delay_max: int, modes: tuple[str, ...]
) -> dict[str, Any]:
    """The network, partitions, crashes, churn, pauses, syncs and tick faults."""
    return {
        "drop_prob": _maybe(r, 0.7, 0.0, 0.2),
        "dup_prob": _maybe(r, 0.5, 0.0, 0.1),
        "delay_min_ticks": delay_min,
        "delay_max_ticks": delay_max,
        "report_transport": r.random() < 0.5,
        "partition_prob": _maybe(r, 0.7, 0.002, 0.03),
        "partition_modes": modes,
        "partition_ticks_min": r.randint(5, 30),
        "partition_ticks_max": r.randint(30, 200),
        "crash_prob": _maybe(r, 0.7, 0.001, 0.02),
        "crash_leader_prob": r.choice((0.0, 0.3, 0.7)),
        "churn_prob": _maybe(r, 0.4, 0.05, 0.6),
        "churn_ticks_max": r.randint(1, 8),
        "max_down": r.randint(1, nodes),
        "down_ticks_min": r.randint(1, 20),
        "down_ticks_max": r.randint(20, 120),
        "pause_prob": _maybe(r, 0.6, 0.0, 0.3),
        "sync_prob": r.choice((0.0, 0.0, 0.5, 1.0)),
        "tick_skip_prob": _maybe(r, 0.4, 0.0, 0.1),
        "tick_double_prob": _maybe(r, 0.4, 0.0, 0.1),
    }


def _draw_raft(r: random.Random, tiny: bool, snapshot_threshold: int) -> dict[str, Any]:
    """The Raft configuration: timing, message limits, snapshots, leadership nudges."""
    return {
        "election_ticks": 10,
        "heartbeat_ticks": r.randint(1, 3),
        "max_size_per_msg_bytes": r.randint(1, 120) if tiny else r.choice((1024, 64 * 1024)),
        "max_inflight_msgs": r.choice((1, 2, 4, 16, 64, 256)),
        "snapshot_threshold": snapshot_threshold,
        "snapshot_keep": r.choice((0, 0, 1, 3, 10)),
        "transfer_prob": _maybe(r, 0.3, 0.0, 0.005),
        "campaign_prob": _maybe(r, 0.3, 0.0, 0.005),
    }


def _draw_clients(r: random.Random) -> dict[str, Any]:
    """The clients' workload, and the liveness phase."""
    return {
        "clients": r.randint(3, 6),
        "keys": r.randint(1, 4),
        "op_prob": r.uniform(0.02, 0.3),
        "read_frac": r.uniform(0.1, 0.5),
        "cas_frac": r.uniform(0.0, 0.5),
        "op_timeout_ticks": r.randint(10, 100),
        "leader_hint_prob": r.uniform(0.5, 0.95),
        "liveness_ticks": 400,
    }


def _draw_late_options(r: random.Random) -> dict[str, Any]:
    """Options added after the others, drawn last so that adding each left every earlier option
    of a seed unchanged. A new option goes at the end."""
    return {
        "freeze_leader_prob": r.choice((0.0, 0.5, 1.0)),
        "slow_prob": _maybe(r, 0.4, 0.002, 0.02),
        "slow_extra_ticks_max": r.randint(1, 15),
        "light_apply_max_entries": r.choice((0, 1, 4, 64)),
        "max_applies_in_flight": r.choice((0, 1, 2, 64)),
        "lease_op_prob": _maybe(r, 0.8, 0.02, 0.3),
        "lease_revokes_per_tick": r.choice((1, 2, 100)),
    }
