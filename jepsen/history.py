"""The run's operation log: every op is invoked, then completes ok, fail or info.

Times are seconds since the start of the run (floats, from ``time.monotonic``). A process has at
most one op outstanding; after an ``info`` the worker continues as a fresh process, as in Jepsen,
because the old op may still be in flight.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["Op", "Recorder"]


@dataclass
class Op:
    index: int
    process: int
    node: str
    f: str
    key: str | None
    value: Any
    invoke: float
    complete: float | None = None
    status: str | None = None  # ok | fail | info
    output: Any = None
    error: str | None = None

    @property
    def latency(self) -> float | None:
        return None if self.complete is None else self.complete - self.invoke

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Op:
        return cls(**d)


class Recorder:
    """A thread-safe history."""

    def __init__(self, t0: float | None = None) -> None:
        self.t0 = time.monotonic() if t0 is None else t0
        self._lock = threading.Lock()
        self.ops: list[Op] = []

    def now(self) -> float:
        return time.monotonic() - self.t0

    def invoke(self, process: int, node: str, f: str, key: str | None, value: Any) -> Op:
        with self._lock:
            op = Op(len(self.ops), process, node, f, key, value, self.now())
            self.ops.append(op)
        return op

    def complete(self, op: Op, status: str, output: Any = None, error: str | None = None) -> None:
        if status not in ("ok", "fail", "info"):
            raise ValueError(status)
        op.complete = self.now()
        op.status = status
        op.output = output
        op.error = error

    def finish(self) -> None:
        """Ops still open at the end become info."""
        with self._lock:
            for op in self.ops:
                if op.status is None:
                    op.status = "info"
                    op.error = "still open at the end of the run"

    def to_jsonl(self) -> str:
        with self._lock:
            return "".join(op.to_json() + "\n" for op in self.ops)

    @staticmethod
    def from_jsonl(text: str) -> list[Op]:
        return [Op.from_dict(json.loads(line)) for line in text.splitlines() if line.strip()]
