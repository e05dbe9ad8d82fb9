"""One key's ops as the linearizability searches see them (:mod:`raftkv.testing.linearizability`).

Both searches, depth-first and breadth-first (:mod:`raftkv.testing.linearizability_search`),
work on the same numbering of a key's pruned ops, built once here by :class:`KeyOps`: ok ops by
completion time, info ops by invocation time, each op's kind and arguments as register-model
codes, the classes of identical info ops, and when one set of used info ops leaves at least the
options of another (:meth:`KeyOps.covers`). :class:`SearchReport` collects what the searches
learned, for the verdict's explanation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeAlias

from raftkv.testing.history import Op

__all__ = ["CAS", "KIND_CODE", "READ", "WRITE", "InfoClass", "KeyOps", "SearchReport", "Value"]

READ = 0
WRITE = 1
CAS = 2
KIND_CODE = {"read": READ, "write": WRITE, "cas": CAS}

Value: TypeAlias = int | None
InfoClass: TypeAlias = tuple[int, Value, Value]
"""(kind, first argument, second argument): info ops of one class are interchangeable."""


@dataclass
class SearchReport:
    """What the searches of one key learned: how many configurations they explored, and the
    longest partial linearization seen (by number of ok ops), for the explanation."""

    states: int = 0
    best_ok: int = -1
    best_seq: list[int] = field(default_factory=list)
    best_state: Value = None
    best_blocker: int = -1


class KeyOps:
    """The (pruned) ops of a single key, numbered for the searches.

    Ok ops are numbered by completion time (bit ``1 << k`` of an ok bitset is ``ok_ids[k]``),
    info ops by invocation time (bit ``1 << b`` of an info bitset is ``info_ids[b]``).
    """

    def __init__(self, ops: list[Op]) -> None:
        self.ops = ops
        n = len(ops)
        self.kinds = [KIND_CODE[op.kind] for op in ops]
        # read: arg_a = output; write: arg_a = value; cas: arg_a = expected, arg_b = value.
        self.arg_a: list[Value] = [
            op.output if op.kind == "read" else op.expected if op.kind == "cas" else op.value
            for op in ops
        ]
        self.arg_b: list[Value] = [op.value for op in ops]
        self.ok_ids = sorted(
            (i for i in range(n) if ops[i].status == "ok"),
            key=lambda i: (ops[i].complete_time, ops[i].invoke_time, i),
        )
        self.info_ids = sorted(
            (i for i in range(n) if ops[i].status == "info"),
            key=lambda i: (ops[i].invoke_time, i),
        )
        # Identical info ops are used in invoke order: prev_same[b] is the previous info op of
        # the same class (an info bit index), or -1.
        self.info_class: list[InfoClass] = []
        self.prev_same: list[int] = []
        last_of_class: dict[InfoClass, int] = {}
        for b, i in enumerate(self.info_ids):
            cls = (self.kinds[i], self.arg_a[i], self.arg_b[i])
            self.info_class.append(cls)
            self.prev_same.append(last_of_class.get(cls, -1))
            last_of_class[cls] = b
        # Values some info cas compares against: an info op may be followed by one of those.
        self.info_cas_expects = frozenset(
            self.arg_a[i] for i in self.info_ids if self.kinds[i] == CAS
        )

    def covers(self, f: int, c: int) -> bool:
        """Whether a configuration that used the info ops ``f`` has at least the options of one
        that used ``c``, everything else being equal.

        Every used info op has been invoked, so each op either one has used is available to the
        other from now on. ``f`` is at least as good as ``c`` if the ops ``f`` used and ``c`` did
        not (``d1``) can be matched one-to-one with ops ``c`` used and ``f`` did not (``d2``),
        each replaced by one at least as flexible: a write of ``v`` by a write of ``v``; a cas
        ``e -> v`` by the same cas or by a write of ``v`` (which needs no compare).
        """
        d1 = f & ~c
        if not d1:
            return True
        d2 = c & ~f
        if d2.bit_count() < d1.bit_count():
            return False
        cls = self.info_class
        have: dict[InfoClass, int] = {}
        while d2:
            low = d2 & -d2
            b = low.bit_length() - 1
            have[cls[b]] = have.get(cls[b], 0) + 1
            d2 ^= low
        need_writes: dict[Value, int] = {}
        while d1:
            low = d1 & -d1
            b = low.bit_length() - 1
            d1 ^= low
            kind, _, value = cls[b]
            if kind == CAS and have.get(cls[b], 0) > 0:
                have[cls[b]] -= 1
            else:
                need_writes[value] = need_writes.get(value, 0) + 1
        return all(have.get((WRITE, v, v), 0) >= n for v, n in need_writes.items())
