"""SimNode: one simulated member: the production driver core over a SimDisk, with the real etcd
state machine (``raftkv.kv``) on an in-memory backend.

The server runs the driver core on its event loop, persists on a disk thread and applies on an
apply thread. A SimNode keeps the same three as queues and runs one step at a time, in an order
the chooser picks among the steps that could run, so a crash can land between any two steps and
the threads' interleavings vary with the seed:

    LOOP   hand one finished job's completion to the core, or pump its Ready pipeline
    DISK   run the disk thread's next job: a Persist, a TakeSnapshot, or a light apply batch
    APPLY  run the apply thread's next batch, once the disk batches handed over before it ran
           (the server's apply thread waits for them the same way)

The state machine survives a crash whole, as LMDB's committed transactions survive a killed
process; the Raft log keeps what was synced plus a random prefix of the rest (``SimDisk``).
The node reports what it does through ``NodeHooks`` (the cluster), which checks invariants and
completes client operations.
"""

from __future__ import annotations

import functools
import random
from collections import deque
from collections.abc import Callable, Sequence
from typing import Protocol

from raftkv.driver import (
    Action,
    Apply,
    CoreConfig,
    DriverCore,
    Fail,
    FlushReadsSoon,
    Forward,
    Persist,
    Resolve,
    Send,
    TakeSnapshot,
    Worker,
)
from raftkv.errors import SnapshotTemporarilyUnavailable
from raftkv.kv.backend import MemoryBackend
from raftkv.kv.state_machine import ApplyResult, KVStateMachine
from raftkv.raft.config import RaftConfig
from raftkv.raft.messages import Message
from raftkv.raft.rawnode import RawNode
from raftkv.raft.ready import Ready
from raftkv.raft.storage import MemoryStorage
from raftkv.raft.types import (
    EMPTY_SNAPSHOT,
    ConfState,
    Entry,
    Index,
    NodeId,
    Snapshot,
    SnapshotMeta,
)
from raftkv.sim.chooser import Chooser
from raftkv.sim.disk import SimDisk
from raftkv.sim.options import SimOptions

__all__ = ["NodeHooks", "SimNode", "SimulationError", "core_config_of", "snapshot_of"]

LEASE_TICKS_PER_SECOND = 10
"""A simulated second: 10 ticks, so the default 10-tick election timeout is the server's 1 s."""


def core_config_of(opts: SimOptions, member_id: NodeId) -> CoreConfig:
    return CoreConfig(
        member_id=member_id,
        snapshot_count=opts.snapshot_threshold,
        snapshot_catchup_entries=opts.snapshot_keep,
        light_apply_max_entries=opts.light_apply_max_entries,
        max_applies_in_flight=opts.max_applies_in_flight,
        lease_ticks_per_second=LEASE_TICKS_PER_SECOND,
        lease_extend_ticks=opts.election_ticks,
        lease_revokes_per_tick=opts.lease_revokes_per_tick,
    )


_LOOP, _DISK, _APPLY = "loop", "disk", "apply"


def snapshot_of(storage: MemoryStorage) -> Snapshot:
    """The storage's latest snapshot, or the empty snapshot if none was taken."""
    try:
        return storage.snapshot()
    except SnapshotTemporarilyUnavailable:
        return EMPTY_SNAPSHOT


class SimulationError(Exception):
    """An invariant was violated, or the core misbehaved. The message is one line."""


class NodeHooks(Protocol):
    def send(self, node: SimNode, msg: Message) -> None: ...

    def forward(self, node: SimNode, forward: Forward) -> None: ...

    def on_ready(self, node: SimNode, rd: Ready) -> None: ...

    def on_persisted(self, node: SimNode, entries: Sequence[Entry], prev_term: int) -> None: ...

    def on_durable(self, node: SimNode) -> None: ...

    def on_snapshot_restored(self, node: SimNode, meta: SnapshotMeta) -> None: ...

    def on_snapshot_taken(self, node: SimNode, meta: SnapshotMeta) -> None: ...

    def on_applied(
        self, node: SimNode, entries: Sequence[Entry], results: Sequence[ApplyResult]
    ) -> None: ...

    def on_outcome(self, node: SimNode, outcome: Resolve | Fail) -> None: ...


class _ObservedRawNode(RawNode):
    """The production RawNode, reporting each Ready it hands out (for the invariant checks)."""

    observer: Callable[[Ready], None]

    def ready(self) -> Ready:
        rd = super().ready()
        self.observer(rd)
        return rd


class SimNode:
    __slots__ = (
        "_apply_jobs",
        "_disk_applies_done",
        "_disk_applies_given",
        "_disk_jobs",
        "_inbox",
        "_wake",
        "alive",
        "backend",
        "chooser",
        "conf_state",
        "core",
        "disk",
        "hooks",
        "id",
        "incarnation",
        "opts",
        "sm",
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
        self.backend = MemoryBackend()
        self.sm = KVStateMachine(self.backend)
        self.incarnation = 0
        self.alive = False
        self.core = self._boot(chooser.fork())

    def _boot(self, rng: random.Random) -> DriverCore:
        """Build the core over the durable state, as after a (re)start."""
        applied = self.sm.applied_index()
        config = RaftConfig(
            node_id=self.id,
            election_ticks=self.opts.election_ticks,
            heartbeat_ticks=self.opts.heartbeat_ticks,
            max_size_per_msg_bytes=self.opts.max_size_per_msg_bytes,
            max_inflight_msgs=self.opts.max_inflight_msgs,
            max_uncommitted_entries_bytes=self.opts.max_uncommitted_entries_bytes,
            applied=applied,
        )
        raw = _ObservedRawNode(config, self.disk, rng)
        raw.observer = functools.partial(self.hooks.on_ready, self)
        core_config = core_config_of(self.opts, self.id)
        self.alive = True
        self._wake = True
        self._inbox: deque[Callable[[], list[Action]]] = deque()
        self._disk_jobs: deque[Persist | TakeSnapshot | Apply] = deque()
        self._apply_jobs: deque[tuple[int, Apply]] = deque()
        self._disk_applies_given = 0
        self._disk_applies_done = 0
        return DriverCore(core_config, raw, self.disk, applied=applied, leases=self.sm.leases())

    @property
    def raw(self) -> RawNode:
        return self.core.node

    # -- lifecycle --------------------------------------------------------------------------

    def crash(self) -> int:
        """Lose all memory and the unsynced log writes (but a random prefix); returns how many
        unsynced transactions survived."""
        kept = self.disk.crash(self.chooser)
        self.alive = False
        self._inbox.clear()
        self._disk_jobs.clear()
        self._apply_jobs.clear()
        return kept

    def restart(self) -> None:
        self.incarnation += 1
        self.core = self._boot(self.chooser.fork())

    def describe(self) -> str:
        return (
            f"inbox {len(self._inbox)}, disk jobs {len(self._disk_jobs)},"
            f" apply jobs {len(self._apply_jobs)}"
        )

    # -- events from the cluster ------------------------------------------------------------

    def tick(self) -> None:
        self.execute(self.core.tick())
        self._wake = True

    def step(self, msg: Message) -> None:
        self.core.step((msg,))
        self._wake = True

    def request(self, actions: list[Action]) -> None:
        """Carry out what the core answered to a client request or a transport report."""
        self.execute(actions)
        self._wake = True

    # -- the steps --------------------------------------------------------------------------

    def busy(self) -> bool:
        return bool(self._runnable())

    def _runnable(self) -> list[str]:
        steps: list[str] = []
        if self._inbox or (self._wake and not self.core.stopped):
            steps.append(_LOOP)
        if self._disk_jobs:
            steps.append(_DISK)
        if self._apply_jobs and self._apply_jobs[0][0] <= self._disk_applies_done:
            steps.append(_APPLY)
        return steps

    def run(self, pause_prob: float) -> None:
        """Run steps until there is no more work, pausing between two steps with probability
        ``pause_prob`` (the rest then waits for the next call)."""
        chooser = self.chooser
        while self.alive and self.step_once() is not None:
            if chooser.chance(pause_prob):
                return

    def step_once(self) -> str | None:
        """Run one step the chooser picks among those that can run; returns which kind it was
        ("loop", "disk" or "apply"), or None when there is nothing to do."""
        steps = self._runnable()
        if not steps:
            return None
        step = steps[0] if len(steps) == 1 else steps[self.chooser.below(len(steps))]
        if step == _LOOP:
            self._run_loop()
        elif step == _DISK:
            self._run_disk_job(self._disk_jobs.popleft())
        else:
            self._run_apply(self._apply_jobs.popleft()[1])
        return step

    def _run_loop(self) -> None:
        if self._inbox:
            self.execute(self._inbox.popleft()())
            self._wake = True
        else:
            self._wake = False
            self.execute(self.core.pump())

    def execute(self, actions: Sequence[Action]) -> None:
        hooks = self.hooks
        for action in actions:
            if isinstance(action, Send):
                for msg in action.messages:
                    hooks.send(self, msg)
            elif isinstance(action, Resolve | Fail):
                hooks.on_outcome(self, action)
            elif isinstance(action, Apply):
                if action.worker is Worker.DISK:
                    self._disk_applies_given += 1
                    self._disk_jobs.append(action)
                else:
                    self._apply_jobs.append((self._disk_applies_given, action))
            elif isinstance(action, Persist | TakeSnapshot):
                self._disk_jobs.append(action)
            elif isinstance(action, Forward):
                hooks.forward(self, action)
            elif isinstance(action, FlushReadsSoon):
                self._inbox.append(self._issue_reads)
            # LeaderChanged, AppliedTo, RecordAttributes: nothing to do here.

    def _issue_reads(self) -> list[Action]:
        self.core.issue_reads()
        return []

    def _run_disk_job(self, job: Persist | TakeSnapshot | Apply) -> None:
        if isinstance(job, Persist):
            self._persist(job)
        elif isinstance(job, TakeSnapshot):
            self._take_snapshot(job)
        else:
            self._run_apply(job)
            self._disk_applies_done += 1

    def _persist(self, job: Persist) -> None:
        restored = 0
        leases: list[tuple[int, int]] | None = None
        snapshot = job.snapshot
        if snapshot is not None:
            # The state machine first, as the server does; the log keeps only the metadata.
            if snapshot.data:
                self.sm.restore((snapshot.data,))
                restored = self.sm.applied_index()
                leases = self.sm.leases()
            self.hooks.on_snapshot_restored(self, snapshot.meta)
            snapshot = Snapshot(snapshot.meta, b"")
        prev_term = self._term_or(job.entries[0].index - 1) if job.entries else -1
        self.disk.save(job.hard_state, job.entries, snapshot, sync=True)
        if job.entries:
            self.hooks.on_persisted(self, job.entries, prev_term)
        self.hooks.on_durable(self)
        self._inbox.append(functools.partial(self.core.persisted, restored, leases))

    def _take_snapshot(self, job: TakeSnapshot) -> None:
        disk = self.disk
        sync = self.chooser.chance(0.5)
        snapshot = disk.create_snapshot(job.index, job.conf_state, b"", sync=sync)
        if job.index - job.keep > disk.first_index():
            disk.compact(job.index - job.keep, sync=sync)
        self.hooks.on_snapshot_taken(self, snapshot.meta)
        if sync:
            self.hooks.on_durable(self)

    def _run_apply(self, job: Apply) -> None:
        results = self.sm.apply(job.entries)
        self.hooks.on_applied(self, job.entries, results)
        self._inbox.append(functools.partial(self.core.applied_batch, job.batch, results))

    def _term_or(self, index: Index) -> int:
        """The term at ``index`` in the visible log, or -1 if compacted or missing."""
        storage = self.disk.storage
        if index < storage.first_index() - 1 or index > storage.last_index():
            return -1
        return storage.term(index)
