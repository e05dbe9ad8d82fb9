"""An Elle-style checker for list-append transaction histories.

A transaction is a list of micro-ops ``["r", key, None]`` or ``["append", key, value]``; in an ok
transaction every read carries the list it observed. Appended values are unique per key, so a
read names the exact version of its key (the version order of a key is its longest read, and
every other read of it must be a prefix of that one). From that the checker builds a
dependency graph between transactions (Adya's ww, wr and rw edges, plus realtime ``rt`` edges
for strict serializability) and searches it for cycles:

============  =================================================================
G0            a cycle of ww edges (write cycle)
G1c           a cycle of ww and wr edges, at least one wr (circular information flow)
G-single      a cycle with exactly one rw edge (read skew)
G2-item       a cycle with two or more rw edges (write skew and friends)
X-realtime    one of the above, closed only through a realtime edge: the result is
              serializable but not strict serializable (e.g. a stale read)
============  =================================================================

It also reports non-cyclic anomalies: G1a (aborted read: a value from a failed transaction was
read), G1b (intermediate read: a value a transaction later overwrote in the same transaction was
read), incompatible-order (two reads of a key that are not prefixes of each other),
duplicate-elements, garbage reads (values nobody appended), and lost-append (an acknowledged
append missing from a read of its key that began after the append completed; the workload's
final read after healing is one such read for every key).

Each cycle is reported with a shortest witness found by breadth-first search from each edge of
its seed type, and explained edge by edge.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from jepsen.anomalies import Anomalies

__all__ = ["Txn", "check", "txns_from_ops"]

_ORDER = ("ww", "wr", "rw", "rt")
_MAX_SEEDS = 400
_MAX_WITNESSES = 3


@dataclass
class Txn:
    """One transaction of the history."""

    index: int
    process: int
    status: str  # ok | fail | info
    mops: list[list[Any]]  # for ok: reads carry their observed list
    invoke: float
    complete: float | None


def txns_from_ops(ops: Iterable[Any]) -> list[Txn]:
    """Adapt :class:`jepsen.history.Op` records with ``f == "txn"``."""
    out = []
    for op in ops:
        if op.f != "txn":
            continue
        mops = op.output if op.status == "ok" and op.output is not None else op.value
        complete = op.complete if op.status != "info" else None
        out.append(Txn(op.index, op.process, op.status, mops, op.invoke, complete))
    return out


@dataclass
class _Graph:
    # adj[a][b] = {edge type: reason}
    adj: dict[int, dict[int, dict[str, str]]] = field(default_factory=dict)

    def add(self, a: int, b: int, kind: str, why: str) -> None:
        if a == b:
            return
        self.adj.setdefault(a, {}).setdefault(b, {}).setdefault(kind, why)
        self.adj.setdefault(b, {})

    def edges(self, kind: str) -> list[tuple[int, int]]:
        return [(a, b) for a, bs in self.adj.items() for b, ks in bs.items() if kind in ks]


def _fmt_mops(mops: Sequence[Sequence[Any]]) -> str:
    parts = []
    for f, k, v in mops:
        parts.append(f"[{f} {k} {v if v is not None else 'nil'}]")
    return "[" + " ".join(parts) + "]"


def check(txns: Sequence[Txn]) -> dict[str, Any]:
    """Check a history; returns a JSON-able verdict with ``valid`` and ``anomalies``."""
    by_index = {t.index: t for t in txns}
    found = Anomalies()
    writer, intermediate = _writers(txns)
    reads = _external_reads(txns)
    _check_reads(reads, writer, intermediate, by_index, found)
    longest, longest_by = _version_orders(reads)
    _check_orders(reads, longest, longest_by, found)
    _check_acknowledged(txns, reads, longest, found)
    g = _build_graph(txns, reads, longest, writer, by_index)
    for kind, (items, total) in _find_cycles(g, by_index).items():
        found.add(kind, items, total)
    return found.verdict(
        {
            "txns": len(txns),
            "ok": sum(t.status == "ok" for t in txns),
            "fail": sum(t.status == "fail" for t in txns),
            "info": sum(t.status == "info" for t in txns),
            "keys": len(longest),
            "edges": sum(len(bs) for bs in g.adj.values()),
        }
    )


_Read = tuple[int, str, list[Any]]


def _writers(txns: Sequence[Txn]) -> tuple[dict[tuple[str, Any], int], dict[tuple[str, Any], int]]:
    """Who appended what, and which appends are intermediate within their own transaction.

    Appended values are unique per key by construction (the generator draws them from one
    counter); a repeat is a bug of the harness, not an anomaly of the system under test."""
    writer: dict[tuple[str, Any], int] = {}
    intermediate: dict[tuple[str, Any], int] = {}
    for t in txns:
        last: dict[str, Any] = {}
        for f, k, v in t.mops:
            if f == "append":
                if (k, v) in writer:
                    raise ValueError(f"history appends {v} to {k} twice: values must be unique")
                writer[(k, v)] = t.index
                if k in last:
                    intermediate[(k, last[k])] = t.index
                last[k] = v
    return writer, intermediate


def _external_reads(txns: Sequence[Txn]) -> list[_Read]:
    """Reads of committed transactions: the first read of a key before any own append."""
    reads: list[_Read] = []
    for t in txns:
        if t.status != "ok":
            continue
        appended: set[str] = set()
        for f, k, v in t.mops:
            if f == "append":
                appended.add(k)
            elif f == "r" and k not in appended and v is not None:
                reads.append((t.index, k, list(v)))
    return reads


def _check_reads(
    reads: list[_Read],
    writer: dict[tuple[str, Any], int],
    intermediate: dict[tuple[str, Any], int],
    by_index: dict[int, Txn],
    found: Anomalies,
) -> None:
    """Duplicate elements, garbage reads, G1a (aborted reads) and G1b (intermediate reads)."""
    for r, k, lst in reads:
        if len(set(lst)) != len(lst):
            found.report("duplicate-elements", f"T{r} read {k} = {lst}: an element appears twice")
        for v in lst:
            w = writer.get((k, v))
            if w is None:
                found.report("garbage-read", f"T{r} read {v} in {k}, which no transaction appended")
            elif by_index[w].status == "fail":
                found.report(
                    "G1a",
                    f"T{r} read {k} = {lst}, including {v} appended by T{w}, which failed "
                    f"(aborted read): {_fmt_mops(by_index[w].mops)}",
                    ops=[r, w],
                )
        if lst and (k, lst[-1]) in intermediate and intermediate[(k, lst[-1])] != r:
            w = intermediate[(k, lst[-1])]
            found.report(
                "G1b",
                f"T{r} read {k} = {lst}, ending in {lst[-1]}, an intermediate value of T{w}, "
                f"which appended more to {k} in the same transaction: "
                f"{_fmt_mops(by_index[w].mops)}",
                ops=[r, w],
            )


def _version_orders(reads: list[_Read]) -> tuple[dict[str, list[Any]], dict[str, int]]:
    """The version order of each key: its longest read (and the transaction that read it)."""
    longest: dict[str, list[Any]] = {}
    longest_by: dict[str, int] = {}
    for r, k, lst in reads:
        if len(lst) > len(longest.get(k, [])):
            longest[k] = lst
            longest_by[k] = r
    return longest, longest_by


def _check_orders(
    reads: list[_Read], longest: dict[str, list[Any]], longest_by: dict[str, int], found: Anomalies
) -> None:
    """Every read of a key must be a prefix of its longest read."""
    for r, k, lst in reads:
        full = longest.get(k, [])  # absent when every read of k was empty
        if full[: len(lst)] != lst:
            found.report(
                "incompatible-order",
                f"T{r} read {k} = {lst} but T{longest_by[k]} read {k} = {full}: neither is a "
                f"prefix of the other, so there is no single order of appends to {k}",
                ops=[r, longest_by[k]],
            )


def _check_acknowledged(
    txns: Sequence[Txn], reads: list[_Read], longest: dict[str, list[Any]], found: Anomalies
) -> None:
    """An acknowledged append must be in every read of its key that began after it completed.

    An append that some read did see is in its key's version order, and a later read without
    it is already a cycle through a realtime edge (G-single-realtime) or an incompatible order:
    reported there. What this adds is the append that no read ever saw (a transaction that
    applied only part of its writes, a write lost on a deposed leader): the cycle search has no
    edge to a missing element. The final read after healing (the workload's last transactions)
    makes sure every key is read at least once at the end."""
    by_index = {t.index: t for t in txns}
    acked: dict[str, list[tuple[float, Any, int]]] = {}
    for t in txns:
        if t.status == "ok" and t.complete is not None:
            for f, k, v in t.mops:
                if f == "append":
                    acked.setdefault(k, []).append((t.complete, v, t.index))
    for lst in acked.values():
        lst.sort(key=lambda a: a[0])
    for r, k, seen_list in sorted(reads, key=lambda x: by_index[x[0]].invoke):
        appends = acked.get(k)
        if not appends:
            continue
        began = by_index[r].invoke
        seen = set(seen_list)
        ordered = set(longest.get(k, ()))
        for done, v, w in appends:
            if done >= began:
                break
            if v not in seen and v not in ordered and w != r:
                found.report(
                    "lost-append",
                    f"T{w} appended {v} to {k} and was acknowledged at {done:.3f}s, but T{r}, "
                    f"which began later at {began:.3f}s, read {k} = {seen_list} without it",
                    ops=[w, r],
                )


def _build_graph(
    txns: Sequence[Txn],
    reads: list[tuple[int, str, list[Any]]],
    longest: dict[str, list[Any]],
    writer: dict[tuple[str, Any], int],
    by_index: dict[int, Txn],
) -> _Graph:
    g = _Graph()
    for k, order in longest.items():
        for x, y in itertools.pairwise(order):
            a, b = writer.get((k, x)), writer.get((k, y))
            if a is not None and b is not None:
                g.add(a, b, "ww", f"T{a} appended {x} to {k}, and T{b} appended {y} right after")
    for r, k, lst in reads:
        if lst and (w := writer.get((k, lst[-1]))) is not None:
            g.add(w, r, "wr", f"T{r} read {k} = {lst}, whose last element {lst[-1]} T{w} appended")
        order = longest.get(k, [])
        if len(order) > len(lst) and order[: len(lst)] == lst:
            nxt = order[len(lst)]
            w2 = writer.get((k, nxt))
            if w2 is not None:
                g.add(
                    r,
                    w2,
                    "rw",
                    f"T{r} read {k} = {lst}, which does not yet have {nxt}, appended next by T{w2}",
                )
    # Realtime: a -> b when a completed before b was invoked. Only the first "wave" after each a
    # (b invoked before any such b' completed) is linked: the rest is reachable through it.
    committed = [t for t in txns if t.status == "ok" or (t.status == "info" and t.index in g.adj)]
    by_invoke = sorted(committed, key=lambda t: t.invoke)
    invokes = [t.invoke for t in by_invoke]
    suffix_min = [float("inf")] * (len(by_invoke) + 1)
    for i in range(len(by_invoke) - 1, -1, -1):
        c = by_invoke[i].complete
        suffix_min[i] = min(suffix_min[i + 1], c if c is not None else float("inf"))
    import bisect

    for t in committed:
        if t.complete is None:
            continue
        i = bisect.bisect_right(invokes, t.complete)
        bound = suffix_min[i]
        j = i
        while j < len(by_invoke) and by_invoke[j].invoke < bound:
            u = by_invoke[j]
            g.add(
                t.index,
                u.index,
                "rt",
                f"T{t.index} completed at {t.complete:.3f}s, before T{u.index} began at "
                f"{u.invoke:.3f}s",
            )
            j += 1
    del by_index
    return g


def _sccs(adj: dict[int, dict[int, dict[str, str]]]) -> list[list[int]]:
    """Tarjan's algorithm, iterative; only components with more than one node."""
    index: dict[int, int] = {}
    low: dict[int, int] = {}
    on_stack: set[int] = set()
    stack: list[int] = []
    out: list[list[int]] = []
    counter = 0
    for root in adj:
        if root in index:
            continue
        work = [(root, iter(adj[root]))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            v, it = work[-1]
            advanced = False
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(adj[w])))
                    advanced = True
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(comp)
    return out


def _path(
    g: _Graph, src: int, dst: int, allowed: frozenset[str], within: set[int]
) -> list[int] | None:
    """Shortest path src -> dst using edges with a type in ``allowed``."""
    if src == dst:
        return [src]
    prev: dict[int, int] = {src: src}
    q = deque([src])
    while q:
        v = q.popleft()
        for w, kinds in g.adj[v].items():
            if w in prev or w not in within or not (allowed & kinds.keys()):
                continue
            prev[w] = v
            if w == dst:
                path = [w]
                while path[-1] != src:
                    path.append(prev[path[-1]])
                return path[::-1]
            q.append(w)
    return None


def _classify(steps: list[tuple[int, int, str]]) -> str:
    kinds = [k for _a, _b, k in steps]
    rw = kinds.count("rw")
    if rw == 0:
        base = "G1c" if "wr" in kinds else "G0"
    elif rw == 1:
        base = "G-single"
    else:
        base = "G2-item"
    return base + ("-realtime" if "rt" in kinds else "")


def _find_cycles(
    g: _Graph, by_index: dict[int, Txn]
) -> dict[str, tuple[list[dict[str, Any]], int]]:
    """Witness cycles by class: up to ``_MAX_WITNESSES`` explained, and how many were found."""
    searches = [
        ("ww", frozenset({"ww"})),
        ("wr", frozenset({"ww", "wr"})),
        ("rw", frozenset({"ww", "wr"})),
        ("rw", frozenset({"ww", "wr", "rw"})),
        ("rt", frozenset({"ww", "wr", "rt"})),
        ("rt", frozenset({"ww", "wr", "rw", "rt"})),
    ]
    found: dict[str, list[tuple[int, list[tuple[int, int, str]]]]] = {}
    seen: set[frozenset[int]] = set()
    for comp in _sccs(g.adj):
        within = set(comp)
        for seed, allowed in searches:
            seeds = [(a, b) for a, b in g.edges(seed) if a in within and b in within]
            for a, b in seeds[:_MAX_SEEDS]:
                back = _path(g, b, a, allowed, within)
                if back is None:
                    continue
                nodes = [a, *back]
                steps = []
                for x, y in itertools.pairwise(nodes):
                    kinds = g.adj[x][y]
                    pick = (
                        seed
                        if (x, y) == (a, b)
                        else next(k for k in _ORDER if k in kinds and k in allowed)
                    )
                    steps.append((x, y, pick))
                key = frozenset(nodes)
                name = _classify(steps)
                if key in seen and name in found:
                    continue
                seen.add(key)
                found.setdefault(name, []).append((len(steps), steps))
    out: dict[str, tuple[list[dict[str, Any]], int]] = {}
    for name, items in found.items():
        items.sort(key=lambda item: item[0])
        shown = [_explain(name, steps, g, by_index) for _n, steps in items[:_MAX_WITNESSES]]
        out[name] = (shown, len(items))
    return out


def _explain(
    name: str, steps: list[tuple[int, int, str]], g: _Graph, by_index: dict[int, Txn]
) -> dict[str, Any]:
    lines = [f"{name} cycle of {len(steps)} transactions:"]
    for a, _b, _k in steps:
        t = by_index[a]
        lines.append(f"  T{a} (process {t.process}, {t.status}): {_fmt_mops(t.mops)}")
    lines.append("because:")
    for a, b, k in steps:
        lines.append(f"  T{a} -{k}-> T{b}: {g.adj[a][b][k]}")
    lines.append(f"so T{steps[0][0]} must both precede and follow itself.")
    return {
        "explanation": "\n".join(lines),
        "cycle": [a for a, _b, _k in steps],
        "edges": [k for _a, _b, k in steps],
    }
