"""A log-linear latency histogram that worker processes fill and the parent merges."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["Histogram"]


class Histogram:
    """Log-linear latency histogram in microseconds, mergeable across processes.

    Exact below 128 us; above, 64 sub-buckets per power of two (under 1.6% relative error).
    """

    __slots__ = ("counts", "max_us", "min_us", "n", "sum_us")

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.n = 0
        self.sum_us = 0
        self.min_us = 0
        self.max_us = 0

    @staticmethod
    def index(us: int) -> int:
        if us < 128:
            return us
        shift = us.bit_length() - 7
        return 128 + (shift - 1) * 64 + ((us >> shift) - 64)

    @staticmethod
    def upper(idx: int) -> int:
        """The largest value (us) that falls in bucket ``idx``."""
        if idx < 128:
            return idx
        shift = (idx - 128) // 64 + 1
        mantissa = (idx - 128) % 64 + 64
        return ((mantissa + 1) << shift) - 1

    def record(self, us: int) -> None:
        us = max(us, 0)
        i = self.index(us)
        self.counts[i] = self.counts.get(i, 0) + 1
        if self.n == 0 or us < self.min_us:
            self.min_us = us
        self.max_us = max(us, self.max_us)
        self.n += 1
        self.sum_us += us

    def merge(self, other: Histogram) -> None:
        for i, c in other.counts.items():
            self.counts[i] = self.counts.get(i, 0) + c
        if other.n:
            self.min_us = other.min_us if self.n == 0 else min(self.min_us, other.min_us)
            self.max_us = max(self.max_us, other.max_us)
        self.n += other.n
        self.sum_us += other.sum_us

    def percentile(self, q: float) -> int:
        """The value (us) at or below which a fraction ``q`` of the samples fall."""
        if self.n == 0:
            return 0
        rank = max(1, math.ceil(q * self.n))
        seen = 0
        for i in sorted(self.counts):
            seen += self.counts[i]
            if seen >= rank:
                return min(self.upper(i), self.max_us)
        return self.max_us

    def mean_us(self) -> float:
        return self.sum_us / self.n if self.n else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "counts": {str(i): c for i, c in self.counts.items()},
            "n": self.n,
            "sum_us": self.sum_us,
            "min_us": self.min_us,
            "max_us": self.max_us,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Histogram:
        h = cls()
        h.counts = {int(i): int(c) for i, c in d["counts"].items()}
        h.n, h.sum_us = int(d["n"]), int(d["sum_us"])
        h.min_us, h.max_us = int(d["min_us"]), int(d["max_us"])
        return h

    def linear_buckets(self, n: int = 10) -> list[tuple[float, int]]:
        """etcd-style: ``n`` equal-width buckets from min to max, as (upper ms, count)."""
        if self.n == 0:
            return []
        lo, hi = self.min_us, self.max_us
        width = max(1.0, (hi - lo) / n)
        out = [0] * n
        for i, c in self.counts.items():
            v = min(self.upper(i), hi)
            out[min(n - 1, max(0, int((v - lo) / width)))] += c
        return [((lo + width * (k + 1)) / 1000.0, out[k]) for k in range(n)]
