"""Simulated lease clients, and the lease invariants they check.

Lease clients grant leases (their own ids, TTLs of a few seconds), attach keys ``l<id>/<n>``
to them with Puts, revoke a few, keep some alive (a keep-alive every TTL/3, to the member the
cluster last saw lead or to any member; one that does not lead refuses it, and the server's
follower-to-leader forwarding is left to the integration tests) and let the others lapse, so
the leader's lessor expires them through the log. Their keys are apart from the
linearizability workload's, whose register model knows nothing of revokes.

Invariants (time is the simulator's global tick; a member ticks at most twice per global tick,
so a lessor's clock runs at most twice as fast as global time, and that is the bound's slack):

1. **No expiry while kept alive.** A lease whose keep-alive was answered with its TTL, having
   arrived at global tick g, is not revoked by expiry (first applied anywhere) before
   ``g + TTL/2``, with TTL in ticks; nor is a keep-alive answered with the TTL of a lease an
   expiry already revoked. The grant's invocation counts as the first renewal.
2. **No key outlives its lease by more than the bound once the cluster is healthy.** After the
   liveness phase (no faults, no keep-alives), once the leader's lessor is primary, every lease
   is revoked within ``TTL + the new leader's extension + 20`` ticks, and no key of a lease client
   is left on any member.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from raftkv.driver import Fail, Resolve
from raftkv.driver.core import CoreConfig
from raftkv.kv.codec import Command, decode_command, encode_command
from raftkv.kv.state_machine import ApplyResult
from raftkv.kv.types import (
    LeaseGrantRequest,
    LeaseKeepAliveResult,
    LeaseRevokeRequest,
    LeaseRevokeResponse,
    PutRequest,
    RangeRequest,
    Request,
)
from raftkv.raft.types import Entry, NodeId
from raftkv.sim.chooser import Chooser, pick
from raftkv.sim.node import SimNode, SimulationError
from raftkv.sim.options import SimOptions
from raftkv.sim.stats import Stats

__all__ = ["LEASE_KEY_PREFIX", "LeaseWorkload"]

LEASE_KEY_PREFIX = b"l"
_WAITER_BASE = 1 << 48
"""Lease ops' waiters, apart from the register workload's (a member's waiters must differ)."""
_MAX_LIVE = 6
_MAX_WRITES_IN_FLIGHT = 2


@dataclass(slots=True)
class _Lease:
    id: int
    ttl_ticks: int
    keep_until: int
    """Kept alive until this global tick (0: never), then left to lapse."""
    renewed: int
    """Arrival tick of the latest keep-alive answered with the TTL (or of the grant)."""
    next_keep_alive: int = 0
    keys: int = 0
    expired_at: int = 0
    """Global tick an expiry of it first applied (0: not yet)."""


@dataclass(slots=True)
class _Pending:
    lease: int
    node: NodeId
    incarnation: int
    kind: str
    invoked: int
    deadline: int


class LeaseWorkload:
    def __init__(self, opts: SimOptions, chooser: Chooser, core: CoreConfig, stats: Stats) -> None:
        self.opts = opts
        self.stats = stats
        self.chooser = chooser
        self.enabled = opts.lease_op_prob > 0
        self.tps = core.lease_ticks_per_second
        self.min_ttl_s = -(-(3 * opts.election_ticks // 2) // self.tps)
        self.bound_slack = core.lease_extend_ticks + 20
        self.leases: dict[int, _Lease] = {}
        self.pending: dict[int, _Pending] = {}
        self._next_waiter = _WAITER_BASE
        self._next_id = 1

    # -- acting ------------------------------------------------------------------------------

    def act(self, now: int, live: Sequence[SimNode], leader: NodeId) -> None:
        """One tick of the lease clients: keep-alives due, and maybe one other op."""
        if not self.enabled or not live:
            return
        by_id = {n.id: n for n in live}
        for lease in list(self.leases.values()):
            busy = any(p.lease == lease.id for p in self.pending.values())
            if lease.keep_until > now and lease.next_keep_alive <= now and not busy:
                # Half to the leader the cluster last saw, half to any member: a deposed leader
                # that does not know it yet must not renew a lease on its own.
                hinted = by_id.get(leader) if self.chooser.chance(0.5) else None
                node = hinted or pick(self.chooser, live)
                lease.next_keep_alive = now + max(1, lease.ttl_ticks // 3)
                self._send(node, lease.id, "keep-alive", now, None)
        # Closed-loop clients, as the register workload's: a bounded number of writes in
        # flight (an open loop outran worlds with tiny messages, whose liveness phase is sized
        # for a bounded backlog).
        writes = sum(1 for op in self.pending.values() if op.kind != "keep-alive")
        if writes < _MAX_WRITES_IN_FLIGHT and self.chooser.chance(self.opts.lease_op_prob):
            self._other_op(now, pick(self.chooser, live))

    def _other_op(self, now: int, node: SimNode) -> None:
        chooser = self.chooser
        live = [lease for lease in self.leases.values() if not lease.expired_at]
        if len(live) < _MAX_LIVE and (not live or chooser.chance(0.3)):
            lease_id, self._next_id = self._next_id, self._next_id + 1
            ttl_s = self.min_ttl_s + chooser.below(4)
            ttl_ticks = ttl_s * self.tps
            keep = now + chooser.between(ttl_ticks, 8 * ttl_ticks) if chooser.chance(0.6) else 0
            self.leases[lease_id] = _Lease(lease_id, ttl_ticks, keep, now)
            self._send(node, lease_id, "grant", now, LeaseGrantRequest(lease_id, ttl_s))
            return
        if not live:
            return
        lease = pick(chooser, live)
        if chooser.chance(0.05):
            self._send(node, lease.id, "revoke", now, LeaseRevokeRequest(lease.id))
            return
        lease.keys += 1
        key = LEASE_KEY_PREFIX + f"{lease.id}/{lease.keys % 3}".encode()
        self._send(node, lease.id, "attach", now, PutRequest(key, b"x", lease=lease.id))

    def _send(self, node: SimNode, lease: int, kind: str, now: int, req: Request | None) -> None:
        waiter, self._next_waiter = self._next_waiter, self._next_waiter + 1
        deadline = now + self.opts.op_timeout_ticks
        self.pending[waiter] = _Pending(lease, node.id, node.incarnation, kind, now, deadline)
        if req is None:
            node.request(node.core.lease_keep_alive(waiter, lease))
        else:
            node.request(node.core.propose(waiter, encode_command(Command(waiter, req))))

    # -- outcomes ----------------------------------------------------------------------------

    def outcome(self, node: SimNode, outcome: Resolve | Fail, now: int) -> bool:
        """Take the member's answer if it is a lease op's; True if it was."""
        op = self.pending.get(outcome.waiter)
        if op is None:
            return outcome.waiter >= _WAITER_BASE
        if op.node != node.id:
            return True
        del self.pending[outcome.waiter]
        lease = self.leases.get(op.lease)
        result = outcome.result if isinstance(outcome, Resolve) else None
        if lease is None or not isinstance(result, LeaseKeepAliveResult):
            return True
        if result.ttl == 0:
            lease.keep_until = 0  # gone: stop keeping it alive
            return True
        if lease.expired_at:
            raise SimulationError(
                f"lease {lease.id}: keep-alive at n{node.id} answered TTL {result.ttl} after"
                f" its expiry applied at tick {lease.expired_at}"
            )
        self.stats.lease_renewals += 1
        lease.renewed = max(lease.renewed, op.invoked)
        return True

    def node_crashed(self, node_id: NodeId) -> None:
        for waiter in [w for w, op in self.pending.items() if op.node == node_id]:
            del self.pending[waiter]

    def expire(self, now: int, nodes: Mapping[NodeId, SimNode]) -> None:
        for waiter, op in list(self.pending.items()):
            if op.deadline > now:
                continue
            node = nodes[op.node]
            if node.alive and node.incarnation == op.incarnation:
                node.request(node.core.expire(waiter))
            self.pending.pop(waiter, None)

    # -- invariants --------------------------------------------------------------------------

    def applied(
        self, entries: Sequence[Entry], results: Sequence[ApplyResult], first: set[int], now: int
    ) -> None:
        """Entries a member applied; ``first`` holds the indexes no member had applied yet."""
        if not first:
            return
        by_index = {e.index: e for e in entries}
        for r in results:
            if r.index not in first or not isinstance(r.result, LeaseRevokeResponse):
                continue
            req = decode_command(by_index[r.index].data).request
            lease = self.leases.get(r.result.id)
            if lease is None:
                continue
            if isinstance(req, LeaseRevokeRequest) and req.term:
                self._expired(lease, now)
            else:
                # A client's revoke: a keep-alive the leader confirmed before the revoke
                # committed may still be answered after a follower applied it.
                lease.keep_until = 0

    def _expired(self, lease: _Lease, now: int) -> None:
        self.stats.lease_expiries += 1
        lease.expired_at = now
        lease.keep_until = 0
        if now - lease.renewed < lease.ttl_ticks // 2:
            raise SimulationError(
                f"lease {lease.id} (TTL {lease.ttl_ticks} ticks) expired at tick {now}, only"
                f" {now - lease.renewed} ticks after a keep-alive that was answered arrived"
            )

    def stop(self) -> None:
        """The liveness phase: no more lease ops, no more keep-alives."""
        self.enabled = False
        for lease in self.leases.values():
            lease.keep_until = 0

    def drain_budget(self) -> int:
        longest = max((lease.ttl_ticks for lease in self.leases.values()), default=0)
        return longest + self.bound_slack

    @staticmethod
    def leftovers(node: SimNode) -> str | None:
        """What a member still holds of the lease clients' state (None: nothing)."""
        leases = node.sm.leases()
        end = LEASE_KEY_PREFIX[:-1] + bytes([LEASE_KEY_PREFIX[-1] + 1])
        keys = node.sm.store.range(RangeRequest(LEASE_KEY_PREFIX, end, count_only=True)).count
        if leases or keys:
            return f"n{node.id} still has leases {[i for i, _ in leases]} and {keys} leased keys"
        return None
