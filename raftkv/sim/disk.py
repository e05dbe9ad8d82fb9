"""SimDisk: a node's log storage with honest durability.

``storage`` is what the running node sees (every write lands there at once). ``durable`` is what
has been fsynced. Writes are whole transactions; unsynced transactions wait in ``pending`` in
order. ``sync`` makes them durable. A crash keeps the durable state plus a random prefix of the
pending transactions (a transaction survives whole or not at all, like LMDB with NOSYNC), and the
restarted node sees exactly that.

SimDisk is a ``DurableLog`` (``raftkv.raft.storage``), the write interface the server's LMDB log
implements too: ``save`` writes one Ready as one transaction, ``create_snapshot`` and ``compact``
one each, and the read side is that of ``storage``. The ``*Op`` values let a caller compose a
transaction of its own with ``write``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from raftkv.errors import SnapshotTemporarilyUnavailable
from raftkv.raft.storage import MemoryStorage
from raftkv.raft.types import (
    EMPTY_SNAPSHOT,
    ConfState,
    Entry,
    HardState,
    Index,
    Snapshot,
    Term,
)
from raftkv.sim.chooser import Chooser

__all__ = [
    "AppendOp",
    "CompactOp",
    "CreateSnapshotOp",
    "DiskOp",
    "HardStateOp",
    "InstallSnapshotOp",
    "SaveOp",
    "SimDisk",
]


@dataclass(frozen=True, slots=True)
class InstallSnapshotOp:
    snapshot: Snapshot

    def apply(self, storage: MemoryStorage) -> None:
        storage.apply_snapshot(self.snapshot)


@dataclass(frozen=True, slots=True)
class AppendOp:
    entries: Sequence[Entry]

    def apply(self, storage: MemoryStorage) -> None:
        storage.append(self.entries)


@dataclass(frozen=True, slots=True)
class HardStateOp:
    hard_state: HardState

    def apply(self, storage: MemoryStorage) -> None:
        storage.set_hard_state(self.hard_state)


@dataclass(frozen=True, slots=True)
class CreateSnapshotOp:
    index: Index
    conf_state: ConfState
    data: bytes

    def apply(self, storage: MemoryStorage) -> None:
        storage.create_snapshot(self.index, self.conf_state, self.data)


@dataclass(frozen=True, slots=True)
class CompactOp:
    index: Index

    def apply(self, storage: MemoryStorage) -> None:
        storage.compact(self.index)


@dataclass(frozen=True, slots=True)
class SaveOp:
    """One Ready's snapshot, entries and hard state (``DurableLog.save``): MemoryStorage checks
    them before it changes anything, so the op applies whole or raises having done nothing."""

    hard_state: HardState | None
    entries: Sequence[Entry]
    snapshot: Snapshot | None

    def apply(self, storage: MemoryStorage) -> None:
        storage.save(self.hard_state, self.entries, self.snapshot, sync=False)


DiskOp = InstallSnapshotOp | AppendOp | HardStateOp | SaveOp | CreateSnapshotOp | CompactOp
Txn = tuple[DiskOp, ...]


class SimDisk:
    """One node's DurableLog with a crash model: see the module docstring."""

    __slots__ = ("crashes", "durable", "pending", "storage", "syncs", "writes")

    def __init__(self, conf_state: ConfState) -> None:
        self.durable = MemoryStorage(conf_state)
        self.storage = self.durable.copy()
        self.pending: list[Txn] = []
        self.writes = 0
        self.syncs = 0
        self.crashes = 0

    # -- DurableLog: the write side ---------------------------------------------------------

    def save(
        self,
        hard_state: HardState | None,
        entries: Sequence[Entry],
        snapshot: Snapshot | None,
        *,
        sync: bool,
    ) -> None:
        if hard_state is None and not entries and snapshot is None:
            if sync:
                self.sync()  # nothing to write, but the caller asks for what came before
            return
        self.write((SaveOp(hard_state, entries, snapshot),), sync=sync)

    def create_snapshot(
        self, index: Index, conf_state: ConfState, data: bytes, *, sync: bool = True
    ) -> Snapshot:
        self.write((CreateSnapshotOp(index, conf_state, data),), sync=sync)
        try:
            return self.storage.snapshot()
        except SnapshotTemporarilyUnavailable:
            return EMPTY_SNAPSHOT  # index 0: nothing to snapshot yet

    def compact(self, index: Index, *, sync: bool = False) -> None:
        self.write((CompactOp(index),), sync=sync)

    # -- DurableLog: the read side, what the running node sees ------------------------------

    def initial_state(self) -> tuple[HardState, ConfState]:
        return self.storage.initial_state()

    def entries(self, lo: Index, hi: Index, max_size: int | None = None) -> Sequence[Entry]:
        return self.storage.entries(lo, hi, max_size)

    def term(self, index: Index) -> Term:
        return self.storage.term(index)

    def first_index(self) -> Index:
        return self.storage.first_index()

    def last_index(self) -> Index:
        return self.storage.last_index()

    def snapshot(self) -> Snapshot:
        return self.storage.snapshot()

    # -- transactions and crashes -----------------------------------------------------------

    def write(self, txn: Txn, *, sync: bool) -> None:
        """Apply ``txn`` to the visible storage; durable only once synced.

        Each op checks before it changes anything, so a one-op transaction (all that the
        DurableLog methods write) that raises leaves the disk as it was."""
        storage = self.storage
        for op in txn:
            op.apply(storage)
        self.pending.append(txn)
        self.writes += 1
        if sync:
            self.sync()

    def sync(self) -> None:
        if not self.pending:
            return
        durable = self.durable
        for txn in self.pending:
            for op in txn:
                op.apply(durable)
        self.pending.clear()
        self.syncs += 1

    def crash(self, chooser: Chooser) -> int:
        """Lose the unsynced writes but a random whole-transaction prefix; returns how many
        pending transactions survived. Afterwards ``storage`` is a copy of ``durable``."""
        keep = chooser.between(0, len(self.pending)) if self.pending else 0
        durable = self.durable
        for txn in self.pending[:keep]:
            for op in txn:
                op.apply(durable)
        self.pending.clear()
        self.storage = durable.copy()
        self.crashes += 1
        return keep

    @property
    def synced(self) -> bool:
        return not self.pending
