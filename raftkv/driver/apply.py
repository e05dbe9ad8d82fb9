"""The apply pipeline's bookkeeping: which worker applies a batch, and what is in flight.

The Ready loop hands committed entries over and moves on: a large apply (deleting a big prefix
takes seconds) must not stop heartbeats and acks, or the leader loses its quorum. A small batch
of quick entries goes to the log's thread when the apply thread is idle (one fewer thread
trading the GIL with the event loop); anything that may take long goes to the apply thread, so a
persist never waits behind it. Batches finish in the order they were handed over.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Sequence

from raftkv.driver.actions import Apply, Worker
from raftkv.kv.state_machine import quick_to_apply
from raftkv.raft.types import Entry

__all__ = ["ApplyPipeline"]


class ApplyPipeline:
    def __init__(self, *, light_max_entries: int) -> None:
        self._light_max_entries = light_max_entries
        self._ids = itertools.count(1)
        self._in_flight: deque[tuple[int, Worker, tuple[Entry, ...]]] = deque()
        self._apply_thread_batches = 0

    def __len__(self) -> int:
        return len(self._in_flight)

    def hand_over(self, entries: Sequence[Entry]) -> Apply:
        batch = tuple(entries)
        if self._apply_thread_batches == 0 and self._is_light(batch):
            worker = Worker.DISK
        else:
            worker = Worker.APPLY
            self._apply_thread_batches += 1
        batch_id = next(self._ids)
        self._in_flight.append((batch_id, worker, batch))
        return Apply(batch_id, batch, worker)

    def finished(self, batch_id: int) -> tuple[Entry, ...]:
        """The oldest batch finished; returns its entries."""
        head_id, worker, entries = self._in_flight.popleft()
        if head_id != batch_id:
            raise RuntimeError(f"apply batch {batch_id} finished before batch {head_id}")
        if worker is Worker.APPLY:
            self._apply_thread_batches -= 1
        return entries

    def _is_light(self, entries: Sequence[Entry]) -> bool:
        """Bounded and quick: few entries, each quick on its own (a plain put, or skipped)."""
        return len(entries) <= self._light_max_entries and all(map(quick_to_apply, entries))
