"""SimNetwork: a pool of in-flight messages with drop, duplicate, delay and partitions.

A message sent at tick ``t`` becomes due at ``t + delay`` (delay drawn per copy), so copies and
messages with different delays overtake each other; the cluster also delivers the messages that
fall due in one tick in a random order. A partition is a set of cut directed links; a message on
a cut link is dropped both when sent and when it falls due. In-flight messages survive crashes.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from raftkv.driver import Refusal
from raftkv.raft.messages import AppendEntries, InstallSnapshot, Message
from raftkv.raft.ready import Ready
from raftkv.raft.types import Entry, NodeId
from raftkv.sim.chooser import Chooser, pick

__all__ = [
    "ForwardPacket",
    "Link",
    "Packet",
    "RefusalPacket",
    "SimNetwork",
    "SwizzleClog",
    "describe_message",
    "describe_ready",
    "make_partition",
]

Link = tuple[NodeId, NodeId]
"""A directed link (src, dst)."""


@dataclass(frozen=True, slots=True)
class ForwardPacket:
    """A client's write that a follower forwards to the leader (the peer stream carries it)."""

    src: NodeId
    dst: NodeId
    incarnation: int
    """The sender's: a restarted member has new streams, so nothing about an old one reaches it."""
    forward_id: int
    command: bytes


@dataclass(frozen=True, slots=True)
class RefusalPacket:
    """The leader's only answer to a forward: it turned it down (nothing was proposed)."""

    src: NodeId
    dst: NodeId
    incarnation: int
    """The forward's sender's (``dst``) incarnation."""
    forward_id: int
    refusal: Refusal


Packet = Message | ForwardPacket | RefusalPacket


def _entries(entries: Sequence[Entry]) -> str:
    if not entries:
        return "[]"
    return f"[{entries[0].index}..{entries[-1].index} t{entries[0].term}..t{entries[-1].term}]"


def describe_message(msg: Packet) -> str:
    """One short line for traces (entries and snapshot data are summarised)."""
    if isinstance(msg, ForwardPacket):
        return f"Forward {msg.src}>{msg.dst} id={msg.forward_id} {msg.command[:40]!r}"
    if isinstance(msg, RefusalPacket):
        return f"Refusal {msg.src}>{msg.dst} id={msg.forward_id} {msg.refusal.value}"
    head = f"{type(msg).__name__} {msg.src}>{msg.dst} t{msg.term}"
    if isinstance(msg, AppendEntries):
        return (
            f"{head} prev=({msg.prev_index},{msg.prev_term}) {_entries(msg.entries)}"
            f" commit={msg.commit}"
        )
    if isinstance(msg, InstallSnapshot):
        meta = msg.snapshot.meta
        return f"{head} snapshot=({meta.index},{meta.term})"
    fields = [
        f"{name}={getattr(msg, name)!r}"
        for name in msg.__slots__
        if name not in ("src", "dst", "term")
    ]
    return f"{head} {' '.join(fields)}"


def describe_ready(rd: Ready) -> str:
    parts = ["ready"]
    if rd.soft_state is not None:
        parts.append(f"soft={rd.soft_state.role.value}/lead{rd.soft_state.leader}")
    if rd.hard_state is not None:
        hs = rd.hard_state
        parts.append(f"hard=(t{hs.term},v{hs.vote},c{hs.commit})")
    if rd.snapshot is not None:
        parts.append(f"snapshot=({rd.snapshot.meta.index},{rd.snapshot.meta.term})")
    if rd.entries:
        parts.append(f"entries={_entries(rd.entries)}")
    if rd.committed_entries:
        parts.append(f"apply={_entries(rd.committed_entries)}")
    parts.append(f"msgs={len(rd.messages)}+{len(rd.persisted_messages)}")
    if rd.read_states:
        parts.append(f"reads={[(r.index, r.context.hex()) for r in rd.read_states]}")
    if rd.must_sync:
        parts.append("sync")
    return " ".join(parts)


def make_partition(
    mode: str, nodes: Sequence[NodeId], chooser: Chooser, leader: NodeId = 0
) -> frozenset[Link]:
    """The cut links of a fresh partition of ``mode`` (see options.PARTITION_MODES);
    ``leader`` is the node believed to lead (0: none), which mode "leader" isolates."""
    n = len(nodes)
    if n < 2:
        return frozenset()
    if mode == "leader" and leader in nodes:
        side = [leader]
    elif mode in ("isolate", "leader"):
        side = [pick(chooser, nodes)]
    elif mode == "halves":
        order = list(nodes)
        chooser.shuffle(order)
        side = order[: chooser.between(1, n - 1)]
    elif mode == "oneway":
        links = [(a, b) for a in nodes for b in nodes if a != b]
        cut = [link for link in links if chooser.chance(0.4)]
        if not cut:
            cut = [pick(chooser, links)]
        return frozenset(cut)
    else:
        raise ValueError(f"unknown partition mode {mode!r}")
    return _cut_off(side, nodes)


def _cut_off(side: Sequence[NodeId], nodes: Sequence[NodeId]) -> frozenset[Link]:
    other = [x for x in nodes if x not in side]
    return frozenset([(a, b) for a in side for b in other] + [(b, a) for a in side for b in other])


class SwizzleClog:
    """FoundationDB's swizzle-clog: cut off a random subset of nodes one at a time, hold, then
    reconnect them one at a time in a different random order."""

    def __init__(
        self, nodes: Sequence[NodeId], chooser: Chooser, now: int, hold_ticks: int
    ) -> None:
        subset = list(nodes)
        chooser.shuffle(subset)
        subset = subset[: chooser.between(1, len(subset))]
        step = chooser.between(1, 10)
        self.events: list[tuple[int, bool, NodeId]] = [
            (now + i * step, True, node) for i, node in enumerate(subset)
        ]
        order = list(subset)
        chooser.shuffle(order)
        start = now + len(subset) * step + hold_ticks
        self.events += [(start + i * step, False, node) for i, node in enumerate(order)]
        self.nodes = tuple(nodes)
        self.clogged: list[NodeId] = []

    @property
    def done(self) -> bool:
        return not self.events

    def advance(self, now: int) -> frozenset[Link] | None:
        """Apply the events due by ``now``; the new cut links if anything changed."""
        changed = False
        while self.events and self.events[0][0] <= now:
            _, clog, node = self.events.pop(0)
            if clog:
                self.clogged.append(node)
            else:
                self.clogged.remove(node)
            changed = True
        return _cut_off(self.clogged, self.nodes) if changed else None


class SimNetwork:
    __slots__ = (
        "_heap",
        "_seq",
        "blocked",
        "chooser",
        "delay_max",
        "delay_min",
        "delivered",
        "drop_prob",
        "dropped",
        "dup_prob",
        "duplicated",
        "extra_delay",
        "now",
        "on_drop",
        "sent",
    )

    def __init__(
        self,
        chooser: Chooser,
        *,
        drop_prob: float = 0.0,
        dup_prob: float = 0.0,
        delay_min: int = 1,
        delay_max: int = 1,
    ) -> None:
        if not 1 <= delay_min <= delay_max:
            raise ValueError(f"bad delay range [{delay_min}, {delay_max}]")
        self.chooser = chooser
        self.drop_prob = drop_prob
        self.dup_prob = dup_prob
        self.delay_min = delay_min
        self.delay_max = delay_max
        self.blocked: frozenset[Link] = frozenset()
        self.now = 0
        self._heap: list[tuple[int, int, Packet]] = []
        self._seq = 0
        self.sent = 0
        self.delivered = 0
        self.dropped = 0
        self.duplicated = 0
        self.extra_delay: dict[NodeId, int] = {}
        """Node -> extra ticks its outbound messages take (a slow node)."""
        self.on_drop: Callable[[Packet, bool], None] | None = None
        """Called with (message, cut) for every dropped message; ``cut``: by a partition."""

    def __len__(self) -> int:
        return len(self._heap)

    def configure(
        self, *, drop_prob: float, dup_prob: float, delay_min: int, delay_max: int
    ) -> None:
        self.drop_prob = drop_prob
        self.dup_prob = dup_prob
        self.delay_min = delay_min
        self.delay_max = delay_max

    def _enqueue(self, msg: Packet) -> None:
        lo, hi = self.delay_min, self.delay_max
        delay = lo if lo == hi else lo + self.chooser.below(hi - lo + 1)
        if self.extra_delay:
            extra = self.extra_delay.get(msg.src, 0)
            if extra:
                delay += self.chooser.between(0, extra)
        self._seq += 1
        heapq.heappush(self._heap, (self.now + delay, self._seq, msg))

    def send(self, msg: Packet) -> None:
        self.sent += 1
        cut = (msg.src, msg.dst) in self.blocked
        if cut or self.chooser.chance(self.drop_prob):
            self.dropped += 1
            if self.on_drop is not None:
                self.on_drop(msg, cut)
            return
        self._enqueue(msg)
        # The peer stream never duplicates a forward (a duplicate would propose a write twice).
        if isinstance(msg, Message) and self.chooser.chance(self.dup_prob):
            self.duplicated += 1
            self._enqueue(msg)

    def pop_due(self) -> list[Packet]:
        """Remove and return the messages due by ``now`` whose link is not cut."""
        heap = self._heap
        now = self.now
        out: list[Packet] = []
        blocked = self.blocked
        while heap and heap[0][0] <= now:
            msg = heapq.heappop(heap)[2]
            if blocked and (msg.src, msg.dst) in blocked:
                self.dropped += 1
                if self.on_drop is not None:
                    self.on_drop(msg, True)
            else:
                out.append(msg)
        self.delivered += len(out)
        return out

    # -- explicit control, for scripted and hypothesis-driven runs ------------------------------

    def in_flight(self) -> list[Packet]:
        """Every in-flight message, earliest due first."""
        return [item[2] for item in sorted(self._heap)[: len(self._heap)]]

    def _remove(self, k: int) -> Packet:
        items = sorted(self._heap)
        item = items.pop(k)
        self._heap = items  # a sorted list is a valid heap
        return item[2]

    def take(self, k: int) -> Packet | None:
        """Remove the k-th in-flight message (see ``in_flight``) for immediate delivery;
        None if its link is cut (the message is then dropped)."""
        msg = self._remove(k)
        if (msg.src, msg.dst) in self.blocked:
            self.dropped += 1
            if self.on_drop is not None:
                self.on_drop(msg, True)
            return None
        self.delivered += 1
        return msg

    def drop(self, k: int) -> None:
        msg = self._remove(k)
        self.dropped += 1
        if self.on_drop is not None:
            self.on_drop(msg, False)

    def duplicate(self, k: int) -> None:
        self.duplicated += 1
        self._enqueue(sorted(self._heap)[k][2])

    def partition(self, links: frozenset[Link]) -> None:
        self.blocked = links

    def heal(self) -> None:
        self.blocked = frozenset()
