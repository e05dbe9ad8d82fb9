"""Waiting proposals and forwarded writes: the analogue of etcd's ``pkg/wait``.

A proposal's outcome is decided by the entry that applies at its index: the term it was
appended in means it applied (its result is the answer); another term means another leader's
entry replaced it and it will never apply ("leader changed"). A follower does not learn the
index of a write it forwarded from the leader: it finds the command among the entries of its
own Readies, which gives the index and the term.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from raftkv.driver.actions import Action, Fail, Forward, Refusal, Resolve
from raftkv.driver.errors import LeaderChangedError, RequestTimeoutError
from raftkv.kv.errors import KVError
from raftkv.kv.state_machine import is_command
from raftkv.kv.types import Response
from raftkv.raft.types import Entry

__all__ = ["Forwarder", "ProposalWaiters"]


@dataclass(frozen=True, slots=True)
class _Appended:
    waiter: int
    term: int
    """The term the command was appended in: the entry that applies at the index must have it."""


class ProposalWaiters:
    """Proposals appended to the log, by index, until the entry at that index applies.

    Two waiters can share an index: a member that proposed at an index as leader may, after a
    leader change, find a forwarded write at the same index in another term. At most one of
    them can have the term of the entry that applies there."""

    def __init__(self) -> None:
        self._by_index: dict[int, list[_Appended]] = {}
        self._index_of: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self._index_of)

    def wait(self, waiter: int, index: int, term: int) -> None:
        self._by_index.setdefault(index, []).append(_Appended(waiter, term))
        self._index_of[waiter] = index

    def drop(self, waiter: int) -> bool:
        index = self._index_of.pop(waiter, None)
        if index is None:
            return False
        waiting = [a for a in self._by_index[index] if a.waiter != waiter]
        if waiting:
            self._by_index[index] = waiting
        else:
            del self._by_index[index]
        return True

    def on_applied(
        self,
        entries: Sequence[Entry],
        results: Mapping[int, Response | KVError],
        out: list[Action],
    ) -> None:
        """Decide the outcome of every proposal waiting at one of these (applied) indexes."""
        by_index = self._by_index
        if not by_index:
            return
        for entry in entries:
            waiting = by_index.pop(entry.index, None)
            if waiting is None:
                continue
            for appended in waiting:
                del self._index_of[appended.waiter]
                out.append(_outcome(appended, entry, results.get(entry.index)))

    def fail_all(self, error: KVError, out: list[Action]) -> None:
        for waiting in self._by_index.values():
            out.extend(Fail(a.waiter, error) for a in waiting)
        self._by_index.clear()
        self._index_of.clear()


def _outcome(appended: _Appended, entry: Entry, result: Response | KVError | None) -> Action:
    if entry.term != appended.term:
        return Fail(appended.waiter, LeaderChangedError())  # replaced: it never applies
    if result is None and is_command(entry):
        # The state machine had applied it already, through a snapshot image restored from
        # the leader: it applied, but its result is not known here (etcd times out too).
        return Fail(appended.waiter, RequestTimeoutError())
    return Resolve(appended.waiter, result)


@dataclass(slots=True)
class _Forwarded:
    waiter: int
    command: bytes


class Forwarder:
    """Writes this member forwarded to the leader and has not yet seen in its own log."""

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self._by_id: dict[int, _Forwarded] = {}
        self._id_of_command: dict[bytes, int] = {}
        self._id_of_waiter: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self._by_id)

    def commands(self) -> list[bytes]:
        """The commands still waiting to be seen in the log (for tests)."""
        return [f.command for f in self._by_id.values()]

    def forward(self, waiter: int, command: bytes, leader: int, out: list[Action]) -> None:
        forward_id = next(self._ids)
        self._by_id[forward_id] = _Forwarded(waiter, command)
        self._id_of_waiter[waiter] = forward_id
        # A retry of a command still awaited elsewhere (a member's attributes) may share it:
        # the first one to be found in the log gets the entry.
        self._id_of_command.setdefault(command, forward_id)
        out.append(Forward(leader, forward_id, command))

    def _pop(self, forward_id: int) -> _Forwarded | None:
        forwarded = self._by_id.pop(forward_id, None)
        if forwarded is None:
            return None
        del self._id_of_waiter[forwarded.waiter]
        if self._id_of_command.get(forwarded.command) == forward_id:
            del self._id_of_command[forwarded.command]
        return forwarded

    def drop(self, waiter: int) -> bool:
        forward_id = self._id_of_waiter.get(waiter)
        return forward_id is not None and self._pop(forward_id) is not None

    def find(self, entries: Iterable[Entry]) -> list[tuple[int, Entry]]:
        """The (waiter, entry) of every forwarded command among ``entries``."""
        found: list[tuple[int, Entry]] = []
        if not self._id_of_command:
            return found
        for entry in entries:
            forward_id = self._id_of_command.get(entry.data)
            if forward_id is not None:
                forwarded = self._pop(forward_id)
                assert forwarded is not None
                found.append((forwarded.waiter, entry))
        return found

    def rejected(
        self, forward_ids: Iterable[int], refusal: Refusal | None, out: list[Action]
    ) -> list[tuple[int, bytes]]:
        """Forwards that were certainly not proposed. Returns the (waiter, command) pairs to
        send again (never sent, or refused by a member that is not the leader); those refused
        during a leadership transfer fail."""
        again: list[tuple[int, bytes]] = []
        for forward_id in forward_ids:
            forwarded = self._pop(forward_id)
            if forwarded is None:
                continue
            if refusal is Refusal.LEADER_CHANGED:
                out.append(Fail(forwarded.waiter, LeaderChangedError()))
            else:
                again.append((forwarded.waiter, forwarded.command))
        return again

    def lost(self, forward_ids: Iterable[int], out: list[Action]) -> None:
        """Forwards whose link broke after they were sent: the leader may have proposed them,
        so sending them again could apply a write twice. Their outcome is unknown."""
        for forward_id in forward_ids:
            forwarded = self._pop(forward_id)
            if forwarded is not None:
                out.append(Fail(forwarded.waiter, RequestTimeoutError()))

    def fail_all(self, error: KVError, out: list[Action]) -> None:
        out.extend(Fail(f.waiter, error) for f in self._by_id.values())
        self._by_id.clear()
        self._id_of_command.clear()
        self._id_of_waiter.clear()
