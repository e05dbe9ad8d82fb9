"""Counters of one simulated run."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Stats"]


@dataclass(slots=True)
class Stats:
    ticks: int = 0
    elections: int = 0
    crashes: int = 0
    restarts: int = 0
    partitions: int = 0
    snapshots_taken: int = 0
    snapshots_installed: int = 0
    applied: int = 0
    ops_ok: int = 0
    ops_fail: int = 0
    ops_info: int = 0
    lease_renewals: int = 0
    """Keep-alives answered with the lease's TTL."""
    lease_expiries: int = 0
    """Leases revoked by the leader's lessor (first applied)."""
