"""What the driver counts for ``/metrics``: plain numbers, updated once per batch or event.

The driver (``raftkv.server.driver``) owns one :class:`DriverMetrics` and updates it where the
work happens: the Raft log's durable write on the disk thread (etcd's WAL fsync), each applied
batch's LMDB write transaction (etcd's backend commit), proposals started and failed, leader
changes, peers reported unreachable. Nothing here knows Prometheus: the HTTP side reads these
numbers when scraped (``raftkv.server.http.metrics``), so the driver's hot paths pay for a few
integer additions and, per batch, one timed histogram observation.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

__all__ = ["DISK_BUCKETS", "DriverMetrics", "Histogram", "MetricsSource"]

DISK_BUCKETS: tuple[float, ...] = tuple(0.001 * 2**k for k in range(14))
"""etcd's buckets for etcd_disk_wal_fsync_duration_seconds and
etcd_disk_backend_commit_duration_seconds: 1 ms doubling to 8.192 s."""


class Histogram:
    """Counts per bucket (upper bounds inclusive, as Prometheus' ``le``) and a sum.

    Observed from the driver's two disk threads, hence the lock: one acquisition per batch."""

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self._counts = [0] * (len(self.bounds) + 1)
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe(self, value: float) -> None:
        i = bisect.bisect_left(self.bounds, value)
        with self._lock:
            self._counts[i] += 1
            self._sum += value

    def snapshot(self) -> tuple[list[int], float]:
        """(cumulative counts for each bound and then +Inf, sum), consistent with each other."""
        with self._lock:
            counts, total = list(self._counts), self._sum
        running = 0
        for i, n in enumerate(counts):
            running += n
            counts[i] = running
        return counts, total


@dataclass(eq=False)
class DriverMetrics:
    leader_changes: int = 0
    """A leader became known that differs from the leader known just before (etcd's count)."""
    last_leader: int = 0
    proposals_pending: int = 0
    proposals_failed: int = 0
    """Proposals that ended without an applied result: timeouts, lost leaders, no leader."""
    wal_fsync: Histogram = field(default_factory=lambda: Histogram(DISK_BUCKETS))
    backend_commit: Histogram = field(default_factory=lambda: Histogram(DISK_BUCKETS))
    peer_sent_failures: dict[int, int] = field(default_factory=dict)
    """Member id -> times the transport reported it unreachable (a broken stream, a dropped
    burst of messages)."""

    def saw_leader(self, leader: int) -> None:
        # etcd compares with the leader it knew last, none included: A, none, A counts twice.
        if leader and leader != self.last_leader:
            self.leader_changes += 1
        self.last_leader = leader

    def peer_unreachable(self, member_id: int) -> None:
        self.peer_sent_failures[member_id] = self.peer_sent_failures.get(member_id, 0) + 1


@runtime_checkable
class MetricsSource(Protocol):
    """A node that keeps :class:`DriverMetrics` (the real driver; fakes need not)."""

    @property
    def metrics(self) -> DriverMetrics: ...
