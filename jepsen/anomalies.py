"""Anomaly reports shared by the checkers: a few explained examples per kind, and every total.

The lists of examples are cut at :data:`SHOWN` per kind to keep verdicts readable; the totals
never are, so a verdict always says how many anomalies of each kind the history holds.
"""

from __future__ import annotations

from typing import Any

__all__ = ["SHOWN", "Anomalies"]

SHOWN = 10


class Anomalies:
    """Collects anomalies by kind: up to ``shown`` examples each, and the total of each kind."""

    def __init__(self, shown: int = SHOWN) -> None:
        self.shown = shown
        self.examples: dict[str, list[dict[str, Any]]] = {}
        self.totals: dict[str, int] = {}

    def __bool__(self) -> bool:
        return bool(self.totals)

    def report(self, kind: str, explanation: str, **extra: Any) -> None:
        self.add(kind, [{"explanation": explanation, **extra}], 1)

    def add(self, kind: str, items: list[dict[str, Any]], total: int) -> None:
        """Add ``total`` anomalies of ``kind``, of which ``items`` are examples."""
        if total <= 0:
            return
        self.totals[kind] = self.totals.get(kind, 0) + total
        lst = self.examples.setdefault(kind, [])
        lst.extend(items[: max(0, self.shown - len(lst))])

    def verdict(self, stats: dict[str, Any], **more: Any) -> dict[str, Any]:
        """A JSON-able verdict: valid when nothing was reported."""
        return {
            "valid": not self.totals,
            "anomaly_types": sorted(self.totals),
            "anomalies": {k: self.examples[k] for k in sorted(self.examples)},
            "anomaly_totals": dict(sorted(self.totals.items())),
            "stats": stats,
            **more,
        }
