"""The lessor: lease clocks, kept by the leader only, in ticks (etcd's primary lessor).

Which leases exist, and their TTLs, is replicated state (``raftkv.kv.leases``): a lease is
granted and revoked by log entries. When a lease *expires* is not: every member would read a
different clock. So only the leader keeps expiry times, in memory, and expiring a lease means
proposing its revoke. Renewals (keep-alives) never touch the log: they move the leader's
in-memory expiry.

Rules, and why they are safe:

1. **Primary only after catching up.** A leader's lessor becomes primary (``promote``) when
   the leader applies the first entry of its own term: everything committed before it has then
   applied, including any revoke an earlier leader decided. Promotion gives every lease its
   full TTL again, plus ``extend_ticks`` (etcd extends by the election timeout), so a lease
   never expires because of the time it took to elect a leader.
2. **Demoted at once.** Losing leadership (or a new term) clears every clock and every pending
   revoke; keep-alives and TimeToLive are refused unless the lessor is primary.
3. **A keep-alive is confirmed before it counts.** It joins a ReadIndex round; it renews only
   once a quorum confirmed this member still leads *after the keep-alive arrived*, and only if
   the lessor is still primary in the term the keep-alive arrived in. The new expiry counts
   from the arrival tick. Any later leader is elected after that confirmation, so it promotes
   after the keep-alive arrived and gives the lease at least a full TTL from then: a renewed
   lease outlives ``arrival + TTL`` under every leader.
4. **A revoke is bound to its leader's term.** An expired lease's revoke is proposed directly
   by the primary (never parked or forwarded), as ``LeaseRevokeRequest(id, term)``; the state
   machine applies it only in an entry of that same term. An entry of term T that commits
   late, under the leader of T+1, still applies before that leader promotes (rule 1), so it is
   ordered before every keep-alive T+1 answers. What etcd got wrong (etcd-io/etcd#15247: a
   deposed leader's revoke forwarded to the new leader and committed in its term, after the
   lease was renewed there) cannot happen: a revoke re-proposed in another term is void.
5. **Rate-limited, proposed once.** At most ``revokes_per_tick`` revokes are proposed per tick
   (etcd: 1,000 per second). A revoke the primary appended is in its own log, and commits
   unless this member is deposed, when the next leader starts over: so it is never proposed
   again on a timer (etcd re-queues after 3 s; here, with followers slow to catch up, the
   copies fed a log that kept growing faster than it committed). Only a proposal the Raft
   core refused (a leadership transfer) is tried again at the next tick. An expired lease
   answers keep-alives with TTL 0 from the moment it expires.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass

from raftkv.driver.actions import Fail, Resolve
from raftkv.driver.errors import LeaderChangedError
from raftkv.kv.types import LeaseKeepAliveResult, LeaseRemaining

__all__ = ["LeaseIds", "Lessor"]


@dataclass(frozen=True, slots=True)
class _Query:
    lease: int
    renew: bool
    """A keep-alive (True) or a TimeToLive (False)."""
    term: int
    arrival: int
    """The tick it arrived at: a renewal counts from here."""


class Lessor:
    def __init__(
        self,
        *,
        ticks_per_second: int,
        extend_ticks: int,
        revokes_per_tick: int,
    ) -> None:
        self._tps = ticks_per_second
        self._extend = extend_ticks
        self._rate = revokes_per_tick
        self._ttl: dict[int, int] = {}
        """Every lease in the applied state: id -> granted TTL in seconds."""
        self._expiry: dict[int, int] = {}
        """Primary only: id -> the tick it expires at."""
        self._heap: list[tuple[int, int]] = []
        """(expiry, id), with stale pairs skipped when popped."""
        self._revoking: set[int] = set()
        """Expired leases whose revoke this primary proposed."""
        self._queries: dict[int, _Query] = {}
        self.primary_term = 0
        """The term this member's lessor is primary in; 0 when it is not."""

    def __len__(self) -> int:
        return len(self._ttl)

    # -- the replicated lease table ----------------------------------------------------------

    def load(self, leases: Iterable[tuple[int, int]], now: int) -> None:
        """Replace the table (at boot, after a snapshot was restored)."""
        self._ttl = dict(leases)
        if self.primary_term:
            self._reset_clocks(now)

    def granted(self, lease: int, ttl: int, now: int) -> None:
        self._ttl[lease] = ttl
        if self.primary_term:
            self._set_expiry(lease, now + ttl * self._tps)

    def revoked(self, lease: int) -> None:
        self._ttl.pop(lease, None)
        self._expiry.pop(lease, None)
        self._revoking.discard(lease)

    def leases(self) -> dict[int, int]:
        """The table (for tests and status)."""
        return dict(self._ttl)

    # -- leadership ------------------------------------------------------------------------

    def promote(self, term: int, now: int) -> None:
        self.primary_term = term
        self._reset_clocks(now)

    def demote(self) -> None:
        self.primary_term = 0
        self._expiry.clear()
        self._heap.clear()
        self._revoking.clear()

    def _reset_clocks(self, now: int) -> None:
        self._expiry.clear()
        self._heap.clear()
        self._revoking.clear()
        for lease, ttl in self._ttl.items():
            self._set_expiry(lease, now + ttl * self._tps + self._extend)

    def _set_expiry(self, lease: int, at: int) -> None:
        self._expiry[lease] = at
        heapq.heappush(self._heap, (at, lease))

    # -- expiry ------------------------------------------------------------------------------

    def expired(self, now: int) -> list[int]:
        """Leases to revoke now (at most ``revokes_per_tick``), each marked revoking: the
        caller proposes their revokes, and hands back with ``postpone`` those it could not."""
        out: list[int] = []
        heap = self._heap
        while heap and heap[0][0] <= now and len(out) < self._rate:
            at, lease = heapq.heappop(heap)
            if self._expiry.get(lease) != at or lease in self._revoking:
                continue  # renewed or revoked since, or its revoke is in the log already
            out.append(lease)
            self._revoking.add(lease)
        return out

    def postpone(self, lease: int) -> None:
        """The revoke of ``lease`` could not be proposed: offer it again at the next tick (it
        stays expired meanwhile)."""
        if lease in self._revoking and lease in self._expiry:
            self._revoking.discard(lease)
            heapq.heappush(self._heap, (self._expiry[lease], lease))

    def _alive(self, lease: int, now: int) -> bool:
        return lease in self._ttl and lease not in self._revoking and self._expiry[lease] > now

    # -- keep-alive and TimeToLive -----------------------------------------------------------

    def query(self, waiter: int, lease: int, *, renew: bool, term: int, now: int) -> None:
        self._queries[waiter] = _Query(lease, renew, term, now)

    def is_query(self, waiter: int) -> bool:
        return waiter in self._queries

    def drop(self, waiter: int) -> None:
        self._queries.pop(waiter, None)

    def clear_queries(self) -> None:
        self._queries.clear()

    def answer(self, waiter: int, term: int, now: int) -> Resolve | Fail:
        """The query's ReadIndex round confirmed this member leads in ``term``: renew, or say
        how much time is left."""
        q = self._queries.pop(waiter)
        if not self.primary_term or self.primary_term != q.term or term != q.term:
            return Fail(waiter, LeaderChangedError())
        lease, ttl = q.lease, self._ttl.get(q.lease)
        if q.renew:
            if ttl is None or not self._alive(lease, now):
                return Resolve(waiter, LeaseKeepAliveResult(lease, 0))
            renewed = q.arrival + ttl * self._tps
            if renewed > self._expiry[lease]:
                self._set_expiry(lease, renewed)
            return Resolve(waiter, LeaseKeepAliveResult(lease, ttl))
        if ttl is None:
            return Resolve(waiter, LeaseRemaining(lease, -1))
        left = max(0, self._expiry[lease] - now) if self._alive(lease, now) else 0
        return Resolve(waiter, LeaseRemaining(lease, left // self._tps))


class LeaseIds:
    """Lease ids a member picks for grants that name none (etcd's ``idutil.Generator``): the
    member id's low 16 bits, then 40 bits of ``prefix`` (etcd: the start time in ms, so ids do
    not repeat across restarts), then a counter that carries into the prefix; always positive.
    Unique across members as long as their ids differ in the low 16 bits; a clash is still
    caught at apply ("lease already exists")."""

    def __init__(self, member_id: int, prefix: int) -> None:
        self._next = ((member_id & 0xFFFF) << 48) | ((prefix & ((1 << 40) - 1)) << 8)

    def next(self) -> int:
        self._next += 1
        return self._next & ((1 << 63) - 1)
