"""Linearizable reads by ReadIndex, batched: the analogue of etcd's ``linearizableReadLoop``.

A read waits for a round: the member asks the leader for its commit index (one heartbeat round
confirms the leadership), then waits until its own state machine has applied that index. A
bounded number of rounds are in flight; the reads that arrive meanwhile share the next round,
so one round answers any number of reads. A round that gets no answer (a lost message, a
leader change) is issued again after ``retry_ticks``.
"""

from __future__ import annotations

import contextlib
import itertools
from dataclasses import dataclass

from raftkv.driver.actions import Action, Resolve
from raftkv.errors import NotLeader
from raftkv.raft.rawnode import RawNode

__all__ = ["ReadIndexBatcher"]


@dataclass(slots=True)
class _Round:
    waiters: list[int]
    issued_tick: int


class ReadIndexBatcher:
    def __init__(self, member_id: int, *, max_rounds: int, retry_ticks: int) -> None:
        self._max_rounds = max_rounds
        self._retry_ticks = retry_ticks
        # Contexts must be unique across members: the leader keys pending reads by them.
        self._contexts = itertools.count((member_id & (2**64 - 1)) << 64 | 1)
        self._live: set[int] = set()
        self._batch: list[int] = []
        self._rounds: dict[bytes, _Round] = {}
        self._confirmed: list[tuple[int, int]] = []
        """(read index, waiter): confirmed by the leader, waiting for the local apply."""

    def __len__(self) -> int:
        return len(self._live)

    def add(self, waiter: int) -> bool:
        """Queue a read; True if it starts a new batch (the caller then flushes it soon)."""
        self._live.add(waiter)
        self._batch.append(waiter)
        return len(self._batch) == 1

    def drop(self, waiter: int) -> bool:
        if waiter not in self._live:
            return False
        self._live.discard(waiter)
        return True

    def issue(self, node: RawNode, now_tick: int, waiters: list[int] | None = None) -> None:
        """Start a round for the batch (or for ``waiters``, a stale round's)."""
        if waiters is None:
            if len(self._rounds) >= self._max_rounds:
                return  # the batch goes when a round in flight completes
            waiters, self._batch = self._batch, []
        waiters = [w for w in waiters if w in self._live]
        if not waiters:
            return
        context = next(self._contexts).to_bytes(16, "big")
        with contextlib.suppress(NotLeader):  # no leader known: issued again after retry_ticks
            node.read_index(context)
        self._rounds[context] = _Round(waiters, now_tick)

    def confirmed(self, node: RawNode, now_tick: int, index: int, context: bytes) -> None:
        """The leader confirmed the round ``context`` at commit ``index``."""
        rnd = self._rounds.pop(context, None)
        if rnd is None:
            return
        self._confirmed.extend((index, w) for w in rnd.waiters if w in self._live)
        if self._batch:
            self.issue(node, now_tick)

    def release(self, applied: int, out: list[Action]) -> None:
        """Answer every confirmed read whose index the state machine has applied."""
        if not self._confirmed:
            return
        still: list[tuple[int, int]] = []
        for index, waiter in self._confirmed:
            if waiter not in self._live:
                continue
            if index <= applied:
                self._live.discard(waiter)
                out.append(Resolve(waiter, None))
            else:
                still.append((index, waiter))
        self._confirmed = still

    def retry_stale(self, node: RawNode, now_tick: int) -> None:
        live = self._live
        for context, rnd in list(self._rounds.items()):
            stale = now_tick - rnd.issued_tick >= self._retry_ticks
            if stale or not any(w in live for w in rnd.waiters):
                del self._rounds[context]
                self.issue(node, now_tick, rnd.waiters)
        if self._batch:
            self.issue(node, now_tick)

    def waiters(self) -> list[int]:
        return list(self._live)

    def clear(self) -> None:
        self._live.clear()
        self._batch.clear()
        self._rounds.clear()
        self._confirmed.clear()
