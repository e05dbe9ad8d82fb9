"""SimDisk: a node's log storage with honest durability.

``storage`` is what the running node sees (every write lands there at once). ``durable`` is what
has been fsynced. Writes are whole transactions; unsynced transactions wait in ``pending`` in
order. ``sync`` makes them durable. A crash keeps the durable state plus a random prefix of the
pending transactions (a transaction survives whole or not at all, like LMDB with NOSYNC), and the
restarted node sees exactly that.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from raftkv.raft.storage import MemoryStorage
from raftkv.raft.types import ConfState, Entry, HardState, Index, Snapshot
from raftkv.sim.chooser import Chooser

__all__ = [
    "AppendOp",
    "CompactOp",
    "CreateSnapshotOp",
    "DiskOp",
    "HardStateOp",
    "InstallSnapshotOp",
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


DiskOp = InstallSnapshotOp | AppendOp | HardStateOp | CreateSnapshotOp | CompactOp
Txn = tuple[DiskOp, ...]


class SimDisk:
    __slots__ = ("crashes", "durable", "pending", "storage", "syncs", "writes")

    def __init__(self, conf_state: ConfState) -> None:
        self.durable = MemoryStorage(conf_state)
        self.storage = self.durable.copy()
        self.pending: list[Txn] = []
        self.writes = 0
        self.syncs = 0
        self.crashes = 0

    def write(self, txn: Txn, *, sync: bool) -> None:
        """Apply ``txn`` to the visible storage; durable only once synced."""
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
