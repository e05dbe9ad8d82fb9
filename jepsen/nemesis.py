"""Faults injected from outside the nodes: kill -9, SIGSTOP, partitions and compaction.

The nemesis thread alternates quiet periods and faults; each fault is one of the enabled kinds,
chosen at random, and lasts ``fault_s``. Compaction, when enabled, runs on its own schedule.
Every fault is logged as a window ``{kind, detail, start, end}`` for the plots and the verdict.
"""

from __future__ import annotations

import logging
import random
import subprocess
import threading
from collections.abc import Callable
from typing import Any

from jepsen.client import Client, ClientError
from jepsen.db import Cluster, Node

log = logging.getLogger(__name__)

__all__ = [
    "KINDS",
    "NETWORK_KINDS",
    "PARTITIONS",
    "PARTITION_WEIGHTS",
    "Nemesis",
    "partition_grudge",
]

KINDS = ("kill", "pause", "partition", "deposed-leader", "compact")
NETWORK_KINDS = frozenset({"partition", "deposed-leader"})
"""Kinds that need the partitioning network (iptables in namespaces, or the peer proxies)."""
PARTITIONS = ("halves", "isolate-leader", "leader-minority", "majorities-ring", "bridge")
# Shapes that strand the leader in a minority come up most: a deposed leader that keeps
# answering is where stale reads and lost writes hide.
PARTITION_WEIGHTS = (1, 3, 2, 1, 1)

Grudge = dict[str, set[str]]  # receiver -> senders whose packets it drops


def _complete(groups: list[list[str]]) -> Grudge:
    """Nodes drop everything from nodes outside their own group."""
    everyone = {n for g in groups for n in g}
    return {n: everyone - set(g) for g in groups for n in g}


def partition_grudge(kind: str, names: list[str], rng: random.Random, leader: str | None) -> Grudge:
    """Who drops whose packets for a partition ``kind``."""
    names = list(names)
    n = len(names)
    if kind == "isolate-leader":
        target = leader if leader in names else rng.choice(names)
        return _complete([[target], [x for x in names if x != target]])
    if kind == "leader-minority":
        # The leader and others, as many as still leave a majority out: with 5 nodes the
        # leader keeps a follower, so it does not lose touch with every peer at once.
        target = leader if leader in names else rng.choice(names)
        rest = [x for x in names if x != target]
        rng.shuffle(rest)
        k = (n - 1) // 2 - 1
        return _complete([[target, *rest[:k]], rest[k:]])
    rng.shuffle(names)
    if kind == "halves":
        return _complete([names[: n // 2], names[n // 2 :]])
    if kind == "bridge":
        # Two halves that cannot talk, and one node in the middle that talks to both.
        left, mid, right = names[: n // 2], names[n // 2], names[n // 2 + 1 :]
        grudge: Grudge = {x: set(right) for x in left}
        grudge.update({x: set(left) for x in right})
        grudge[mid] = set()
        return grudge
    if kind == "majorities-ring":
        # Each node sees a majority made of its ring neighbours; no two see the same majority.
        m = n // 2 + 1
        grudge = {}
        for i, x in enumerate(names):
            sees = {names[(i + d) % n] for d in range(-(m // 2), m - m // 2)}
            grudge[x] = set(names) - sees
        return grudge
    raise ValueError(f"unknown partition kind {kind!r}")


class Net:
    """Applies grudges: iptables inside each node's namespace, or the peer proxies."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.iptables = "iptables"

    def apply(self, grudge: Grudge) -> None:
        if self.cluster.proxies is not None:
            self.cluster.proxies.grudge = {k: set(v) for k, v in grudge.items()}
            return
        by_name = {n.name: n for n in self.cluster.nodes}
        for dst, srcs in grudge.items():
            node = by_name[dst]
            for src in sorted(srcs):
                self._ipt(node, "-A", "INPUT", "-s", by_name[src].ip, "-j", "DROP")

    def heal(self) -> None:
        if self.cluster.proxies is not None:
            self.cluster.proxies.grudge = {}
            return
        for node in self.cluster.nodes:
            self._ipt(node, "-F", "INPUT")

    def _ipt(self, node: Node, *args: str) -> None:
        if node.netns is None:
            raise RuntimeError("partitions need the netns network (run as root)")
        subprocess.run(
            ["ip", "netns", "exec", node.netns, self.iptables, "-w", *args],
            check=True,
            capture_output=True,
            timeout=20,
        )


class Nemesis:
    def __init__(
        self,
        cluster: Cluster,
        kinds: list[str],
        now: Callable[[], float],
        seed: int,
        *,
        interval_s: float = 5.0,
        fault_s: float = 5.0,
        compact_every_s: float = 5.0,
    ) -> None:
        bad = set(kinds) - set(KINDS)
        if bad:
            raise ValueError(f"unknown nemesis {sorted(bad)}; known: {', '.join(KINDS)}")
        self.cluster = cluster
        self.kinds = [k for k in kinds if k != "compact"]
        self.compact = "compact" in kinds
        self.now = now
        self.rng = random.Random(seed)
        self.interval_s = interval_s
        self.fault_s = fault_s
        self.compact_every_s = compact_every_s
        self.net = Net(cluster) if NETWORK_KINDS & set(kinds) else None
        self.windows: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._heal: Callable[[], None] | None = None

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        if self.kinds:
            self._threads.append(threading.Thread(target=self._loop, name="nemesis", daemon=True))
        if self.compact:
            self._threads.append(
                threading.Thread(target=self._compact_loop, name="compactor", daemon=True)
            )
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        """Stop and heal everything: restart killed nodes, resume paused ones, drop rules."""
        self._stop.set()
        for t in self._threads:
            t.join(timeout=self.fault_s + 30)
        self.heal_all()

    def heal_all(self) -> None:
        if self.net is not None:
            try:
                self.net.heal()
            except (subprocess.SubprocessError, OSError) as e:
                log.warning("heal partitions: %s", e)
        for node in self.cluster.nodes:
            if node.paused:
                self.cluster.resume(node)
            if not node.alive:
                self.cluster.start(node)

    # --- faults ---------------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            kind = self.rng.choice(self.kinds)
            start = self.now()
            try:
                detail, heal = getattr(self, f"_fault_{kind.replace('-', '_')}")()
            except Exception as e:  # a fault that could not be applied is logged, not fatal
                log.warning("nemesis %s failed: %s", kind, e)
                continue
            log.info("nemesis %s: %s", kind, detail)
            self._stop.wait(self.fault_s)
            try:
                heal()
            except Exception as e:
                log.warning("nemesis heal %s failed: %s", kind, e)
            self.windows.append({"kind": kind, "detail": detail, "start": start, "end": self.now()})

    def _pick(self, leader_bias: float = 0.5) -> list[Node]:
        nodes = [n for n in self.cluster.nodes if n.alive and not n.paused]
        if self.rng.random() < leader_bias:
            leader = self.cluster.leader()
            if leader is not None:
                return [leader]
        minority = (len(self.cluster.nodes) - 1) // 2
        return self.rng.sample(nodes, self.rng.randint(1, max(1, minority)))

    def _fault_kill(self) -> tuple[str, Callable[[], None]]:
        victims = self._pick()
        for n in victims:
            self.cluster.kill(n)

        def heal() -> None:
            for n in victims:
                if not n.alive:
                    self.cluster.start(n)

        return "kill -9 " + ",".join(n.name for n in victims), heal

    def _fault_pause(self) -> tuple[str, Callable[[], None]]:
        victims = self._pick()
        for n in victims:
            self.cluster.pause(n)

        def heal() -> None:
            for n in victims:
                self.cluster.resume(n)

        return "SIGSTOP " + ",".join(n.name for n in victims), heal

    def _fault_partition(self) -> tuple[str, Callable[[], None]]:
        assert self.net is not None
        kind = self.rng.choices(PARTITIONS, weights=PARTITION_WEIGHTS)[0]
        leader = self.cluster.leader() if "leader" in kind else None
        names = [n.name for n in self.cluster.nodes]
        grudge = partition_grudge(kind, names, self.rng, leader.name if leader else None)
        self.net.apply(grudge)
        desc = "; ".join(f"{d} drops {','.join(sorted(s))}" for d, s in sorted(grudge.items()) if s)
        return f"{kind}: {desc}", self.net.heal

    def _fault_deposed_leader(self) -> tuple[str, Callable[[], None]]:
        """Cut the leader off from every peer, and keep it cut off while watching the others
        elect a new leader: clients bound to the old leader keep talking to it through its
        last moments as leader (until it notices it lost its quorum) and after."""
        assert self.net is not None
        old = self.cluster.leader()
        if old is None:
            raise RuntimeError("no leader to depose")
        names = [n.name for n in self.cluster.nodes]
        self.net.apply(partition_grudge("isolate-leader", names, self.rng, old.name))
        t0 = self.now()
        new = self._await_new_leader(old, timeout_s=max(self.fault_s, 5.0))
        if new is None:
            return f"deposed {old.name}: no new leader seen", self.net.heal
        return f"deposed {old.name}: {new} leads after {self.now() - t0:.2f}s", self.net.heal

    def _await_new_leader(self, old: Node, timeout_s: float) -> str | None:
        """The name of the leader the other nodes agree on once it is not ``old``."""
        others = [n for n in self.cluster.nodes if n is not old]
        deadline = self.now() + timeout_s
        while self.now() < deadline and not self._stop.is_set():
            for node in others:
                if not node.alive or node.paused:
                    continue
                try:
                    with Client(node.endpoint) as c:
                        _mid, lead, _term = c.status(timeout_s=0.3)
                except ClientError:
                    continue
                name = self.cluster.member_names.get(lead)
                if lead and name is not None and name != old.name:
                    return name
            self._stop.wait(0.05)
        return None

    def _compact_loop(self) -> None:
        while not self._stop.wait(self.compact_every_s):
            nodes = [n for n in self.cluster.nodes if n.alive and not n.paused]
            if not nodes:
                continue
            node = self.rng.choice(nodes)
            try:
                with Client(node.endpoint, timeout_s=2.0) as c:
                    _v, _m, rev = c.get("jepsen-compact-probe")
                    target = max(1, rev - 50)
                    c.compact(target)
                self.events.append({"kind": "compact", "time": self.now(), "revision": target})
            except ClientError as e:
                text = str(e)
                if "compacted" not in text:
                    log.info("compaction on %s failed: %s", node.name, text)
