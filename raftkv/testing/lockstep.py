"""A lockstep in-memory cluster for unit tests of the core (etcd raft_test's ``network``).

Every node runs the real RawNode over a MemoryStorage. ``stabilize()`` handles Readys and
delivers messages until nothing is left to do. Links can be cut, and message kinds ignored.
It is deliberately simple: fault *schedules* are the simulator's job (raftkv.sim).
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from raftkv.raft.config import RaftConfig
from raftkv.raft.messages import Message
from raftkv.raft.rawnode import RawNode
from raftkv.raft.storage import MemoryStorage
from raftkv.raft.types import ConfState, Entry, EntryKind, NodeId, ReadState, Role


@dataclass
class LockstepNode:
    id: NodeId
    node: RawNode
    storage: MemoryStorage
    applied: list[Entry] = field(default_factory=list)
    read_states: list[ReadState] = field(default_factory=list)

    @property
    def role(self) -> Role:
        return self.node.status().role

    @property
    def term(self) -> int:
        return self.node.status().term


class LockstepNetwork:
    def __init__(
        self,
        size: int,
        *,
        seed: int = 1,
        config: Callable[[NodeId], RaftConfig] | None = None,
    ) -> None:
        self._make_config = config or (lambda node_id: RaftConfig(node_id=node_id))
        self._rng = random.Random(seed)
        self.voters = tuple(range(1, size + 1))
        self.nodes: dict[NodeId, LockstepNode] = {}
        for node_id in self.voters:
            storage = MemoryStorage(ConfState(voters=self.voters))
            self.nodes[node_id] = self._start(node_id, storage)
        self.cut_links: set[tuple[NodeId, NodeId]] = set()
        self.ignored: set[type] = set()
        self.in_flight: list[Message] = []
        self.delivered: list[Message] = []

    def _start(self, node_id: NodeId, storage: MemoryStorage, applied: int = 0) -> LockstepNode:
        base = self._make_config(node_id)
        cfg = dataclasses.replace(base, node_id=node_id, applied=applied)
        rng = random.Random(self._rng.randrange(1 << 30))
        return LockstepNode(node_id, RawNode(cfg, storage, rng), storage)

    # -- faults ---------------------------------------------------------------------------------

    def isolate(self, node_id: NodeId) -> None:
        for other in self.voters:
            if other != node_id:
                self.cut(node_id, other)

    def cut(self, a: NodeId, b: NodeId) -> None:
        self.cut_links.add((a, b))
        self.cut_links.add((b, a))

    def recover(self) -> None:
        self.cut_links.clear()
        self.ignored.clear()

    def restart(self, node_id: NodeId) -> None:
        """Crash and restart from storage (MemoryStorage is written synchronously here)."""
        old = self.nodes[node_id]
        self.nodes[node_id] = self._start(node_id, old.storage, applied=len(old.applied))
        self.nodes[node_id].applied = list(old.applied)

    # -- driving --------------------------------------------------------------------------------

    def handle_ready(self, node_id: NodeId) -> bool:
        n = self.nodes[node_id]
        if not n.node.has_ready():
            return False
        rd = n.node.ready()
        self.in_flight.extend(rd.messages)
        if rd.snapshot is not None:
            n.storage.apply_snapshot(rd.snapshot)
        n.storage.append(rd.entries)
        if rd.hard_state is not None:
            n.storage.set_hard_state(rd.hard_state)
        self.in_flight.extend(rd.persisted_messages)
        n.applied.extend(e for e in rd.committed_entries if e.kind is EntryKind.NORMAL)
        n.read_states.extend(rd.read_states)
        n.node.advance(rd)
        return True

    def deliver_all(self) -> int:
        batch, self.in_flight = self.in_flight, []
        count = 0
        for msg in batch:
            if (msg.src, msg.dst) in self.cut_links or type(msg) in self.ignored:
                continue
            if msg.dst in self.nodes:
                self.delivered.append(msg)
                self.nodes[msg.dst].node.step(msg)
                count += 1
        return count

    def stabilize(self, max_rounds: int = 1000) -> None:
        for _ in range(max_rounds):
            progressed = False
            for node_id in self.voters:
                progressed |= self.handle_ready(node_id)
            progressed |= self.deliver_all() > 0
            if not progressed:
                return
        raise RuntimeError("cluster did not stabilize")

    def tick(self, node_ids: Iterable[NodeId] | None = None, times: int = 1) -> None:
        for _ in range(times):
            for node_id in node_ids or self.voters:
                self.nodes[node_id].node.tick()
            self.stabilize()

    def elect(self, node_id: NodeId) -> None:
        self.nodes[node_id].node.campaign()
        self.stabilize()

    def leaders(self) -> list[NodeId]:
        return [i for i in self.voters if self.nodes[i].role is Role.LEADER]
