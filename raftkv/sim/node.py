"""SimNode: one simulated server: the production RawNode, a SimDisk and the KV state machine.

The Ready pipeline is split into separate stages so that a crash can land between any two:

    TAKE     rd = ready(); send rd.messages at once
    PERSIST  write snapshot + entries + hard state as one transaction (fsync if must_sync)
    SEND     send rd.persisted_messages
    APPLY    apply the snapshot and committed entries; serve read states; maybe snapshot+compact
    ADVANCE  advance(rd)

The node reports what it does through ``NodeHooks`` (the cluster), which checks invariants and
completes client operations.
"""

from __future__ import annotations

import random
from typing import Protocol

from raftkv.errors import SnapshotTemporarilyUnavailable
from raftkv.raft.config import RaftConfig
from raftkv.raft.messages import Message
from raftkv.raft.rawnode import RawNode
from raftkv.raft.ready import Ready
from raftkv.raft.storage import MemoryStorage
from raftkv.raft.types import (
    EMPTY_SNAPSHOT,
    ConfState,
    Entry,
    EntryKind,
    Index,
    NodeId,
    ReadState,
    Snapshot,
)
from raftkv.sim.chooser import Chooser
from raftkv.sim.disk import (
    AppendOp,
    CompactOp,
    CreateSnapshotOp,
    DiskOp,
    HardStateOp,
    InstallSnapshotOp,
    SimDisk,
)
from raftkv.sim.kv import KVStore
from raftkv.sim.options import SimOptions

__all__ = ["STAGE_NAMES", "NodeHooks", "SimNode", "SimulationError", "snapshot_of"]

IDLE, PERSIST, SEND, APPLY, ADVANCE = range(5)
STAGE_NAMES = ("idle", "persist", "send", "apply", "advance")


def snapshot_of(storage: MemoryStorage) -> Snapshot:
    """The storage's latest snapshot, or the empty snapshot if none was taken."""
    try:
        return storage.snapshot()
    except SnapshotTemporarilyUnavailable:
        return EMPTY_SNAPSHOT


class SimulationError(Exception):
    """An invariant was violated, or the core misbehaved. The message is one line."""


class NodeHooks(Protocol):
    def send(self, msg: Message) -> None: ...

    def on_ready(self, node: SimNode, rd: Ready) -> None: ...

    def on_persisted(self, node: SimNode, rd: Ready, prev_term: int) -> None: ...

    def on_durable(self, node: SimNode) -> None: ...

    def on_persisted_sent(self, node: SimNode, msg: Message) -> None: ...

    def on_snapshot_applied(self, node: SimNode, snapshot: Snapshot) -> None: ...

    def on_snapshot_taken(self, node: SimNode, snapshot: Snapshot) -> None: ...

    def on_applied(self, node: SimNode, entry: Entry, request_id: int, success: bool) -> None: ...

    def on_read(self, node: SimNode, context: bytes) -> None: ...


class SimNode:
    __slots__ = (
        "alive",
        "chooser",
        "conf_state",
        "disk",
        "hooks",
        "id",
        "incarnation",
        "kv",
        "opts",
        "raw",
        "rd",
        "reads",
        "stage",
    )

    def __init__(
        self,
        node_id: NodeId,
        conf_state: ConfState,
        opts: SimOptions,
        chooser: Chooser,
        hooks: NodeHooks,
    ) -> None:
        self.id = node_id
        self.conf_state = conf_state
        self.opts = opts
        self.chooser = chooser
        self.hooks = hooks
        self.disk = SimDisk(conf_state)
        self.kv = KVStore()
        self.incarnation = 0
        self.alive = False
        self.stage = IDLE
        self.rd: Ready | None = None
        self.reads: list[ReadState] = []
        self.raw: RawNode = self._boot(chooser.fork())

    def _boot(self, rng: random.Random) -> RawNode:
        """Build a RawNode over the durable state, as after a (re)start."""
        storage = self.disk.storage
        snap = snapshot_of(storage)
        snap_index = snap.meta.index
        self.kv = KVStore.restore(snap_index, snap.data)
        config = RaftConfig(
            node_id=self.id,
            election_ticks=self.opts.election_ticks,
            heartbeat_ticks=self.opts.heartbeat_ticks,
            max_size_per_msg_bytes=self.opts.max_size_per_msg_bytes,
            max_inflight_msgs=self.opts.max_inflight_msgs,
            max_uncommitted_entries_bytes=self.opts.max_uncommitted_entries_bytes,
            applied=snap_index,
        )
        self.alive = True
        self.stage = IDLE
        self.rd = None
        self.reads = []
        return RawNode(config, storage, rng)

    # -- lifecycle --------------------------------------------------------------------------

    def crash(self) -> int:
        """Lose all memory and the unsynced writes (but a random prefix); returns how many
        unsynced transactions survived."""
        kept = self.disk.crash(self.chooser)
        self.alive = False
        self.stage = IDLE
        self.rd = None
        self.reads = []
        self.kv = KVStore()
        return kept

    def restart(self) -> None:
        self.incarnation += 1
        self.raw = self._boot(self.chooser.fork())

    # -- the Ready pipeline -----------------------------------------------------------------

    def busy(self) -> bool:
        return self.stage != IDLE or self.raw.has_ready()

    def run(self, pause_prob: float) -> None:
        """Run pipeline stages until there is no more work, pausing between two stages with
        probability ``pause_prob`` (the rest then waits for the next call)."""
        chooser = self.chooser
        while self.alive:
            if self.stage == IDLE and not self.raw.has_ready():
                return
            self.step_stage()
            if chooser.chance(pause_prob):
                return

    def step_stage(self) -> None:
        """Run exactly one stage."""
        stage = self.stage
        if stage == IDLE:
            self._take()
            return
        rd = self.rd
        assert rd is not None
        if stage == PERSIST:
            self._persist(rd)
            self.stage = SEND
        elif stage == SEND:
            for msg in rd.persisted_messages:
                self.hooks.on_persisted_sent(self, msg)
                self.hooks.send(msg)
            self.stage = APPLY
        elif stage == APPLY:
            self._apply(rd)
            self.stage = ADVANCE
        else:
            self.raw.advance(rd)
            self.rd = None
            self.stage = IDLE

    def _take(self) -> None:
        rd = self.raw.ready()
        self.rd = rd
        self.hooks.on_ready(self, rd)
        send = self.hooks.send
        for msg in rd.messages:
            send(msg)
        self.stage = PERSIST

    def _persist(self, rd: Ready) -> None:
        if not rd.must_sync:
            self._check_needs_no_sync(rd)
        ops: list[DiskOp] = []
        if rd.snapshot is not None:
            ops.append(InstallSnapshotOp(rd.snapshot))
        if rd.entries:
            ops.append(AppendOp(rd.entries))
        if rd.hard_state is not None:
            ops.append(HardStateOp(rd.hard_state))
        prev_term = -1
        if ops:
            sync = rd.must_sync or self.chooser.chance(self.opts.sync_prob)
            self.disk.write(tuple(ops), sync=sync)
            if rd.entries:
                prev_term = self._term_or(rd.entries[0].index - 1)
            self.hooks.on_persisted(self, rd, prev_term)
            if sync:
                self.hooks.on_durable(self)
        elif rd.must_sync:
            self.disk.sync()
            self.hooks.on_durable(self)

    def _check_needs_no_sync(self, rd: Ready) -> None:
        """The Ready contract: entries, a snapshot, or a new term or vote must be fsynced
        (etcd's MustSync); only a commit-index change may skip it."""
        hs, old = rd.hard_state, self.disk.storage.hard_state
        if (
            rd.entries
            or rd.snapshot is not None
            or (hs is not None and (hs.term != old.term or hs.vote != old.vote))
        ):
            raise SimulationError(
                f"node {self.id}: Ready with must_sync=False carries entries, a snapshot or a"
                f" new term/vote: hard state {old} -> {hs}, {len(rd.entries)} entries"
            )

    def _term_or(self, index: Index) -> int:
        """The term at ``index`` in the visible log, or -1 if compacted or missing."""
        storage = self.disk.storage
        if index < storage.first_index() - 1 or index > storage.last_index():
            return -1
        return storage.term(index)

    def _apply(self, rd: Ready) -> None:
        hooks = self.hooks
        if rd.snapshot is not None:
            snap = rd.snapshot
            if snap.meta.index <= self.kv.applied:
                raise SimulationError(
                    f"node {self.id}: snapshot at {snap.meta.index} handed out for apply,"
                    f" but applied is already {self.kv.applied}"
                )
            self.kv = KVStore.restore(snap.meta.index, snap.data)
            hooks.on_snapshot_applied(self, snap)
        kv = self.kv
        for entry in rd.committed_entries:
            if entry.index != kv.applied + 1:
                raise SimulationError(
                    f"node {self.id}: committed entry {entry.index} handed out after applied"
                    f" {kv.applied} (gap or repeat)"
                )
            payload = entry.data if entry.kind == EntryKind.NORMAL else b""
            request_id, success = kv.apply(entry.index, payload)
            hooks.on_applied(self, entry, request_id, success)
        if rd.read_states:
            self.reads.extend(rd.read_states)
        if self.reads:
            self._serve_reads()
        self._maybe_snapshot()

    def _serve_reads(self) -> None:
        applied = self.kv.applied
        waiting: list[ReadState] = []
        for rs in self.reads:
            if rs.index <= applied:
                self.hooks.on_read(self, rs.context)
            else:
                waiting.append(rs)
        self.reads = waiting

    def _maybe_snapshot(self) -> None:
        storage = self.disk.storage
        snap_index = snapshot_of(storage).meta.index
        applied = self.kv.applied
        if applied - snap_index < self.opts.snapshot_threshold or applied > storage.last_index():
            return
        ops: tuple[DiskOp, ...] = (
            CreateSnapshotOp(applied, self.conf_state, self.kv.snapshot()),
            CompactOp(applied - self.opts.snapshot_keep),
        )
        sync = self.chooser.chance(0.5)
        self.disk.write(ops, sync=sync)
        self.hooks.on_snapshot_taken(self, storage.snapshot())
        if sync:
            self.hooks.on_durable(self)
