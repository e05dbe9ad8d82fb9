"""Per-key linearizability checker for register histories (Wing-Gong-Lowe, as in Porcupine).

The model is one register per key: it starts absent (``None``); a write sets it (a write of
``None`` deletes); a cas sets it to ``value`` iff it currently equals ``expected``; a read
returns the current value. Linearizability is P-compositional, so the history is partitioned by
key and each key is checked on its own.

Per key, the search is the algorithm of Lowe, "Testing for linearizability" (2017), which is also
the one Porcupine implements:

- Every ok op contributes a *call* entry at ``invoke_time`` and a *return* entry at
  ``complete_time``. Entries form a doubly linked list in time order, with calls before returns
  at equal times, so that ``A`` precedes ``B`` iff ``A.complete_time < B.invoke_time``.
- A depth-first search walks the list from its head. At a call entry it tries to linearize that
  op now: if the model accepts it and the resulting configuration (set of linearized ops,
  register value) is new, the op's two entries are *lifted* out of the list and the walk restarts
  from the head. Reaching a return entry means that op should already have been linearized:
  backtrack (pop, unlift, and try the next entry).
- Sets of linearized ops are bitsets held in Python ``int``s. Configurations that were fully
  explored without success are memoized, so none is explored twice.

Unknown outcomes (``info`` ops) complete at +infinity and are optional: the search succeeds as
soon as every ``ok`` op is linearized. ``fail`` ops never took effect and are dropped. An info
cas may be linearized only where its compare succeeds (a cas whose compare fails has no effect,
which is the same as leaving it out). Info ops are the expensive part of the problem, so they
sit in a second linked list (they have no return entry), are tried only after the ok ops, and
the search is restricted to canonical linearizations, which lose no generality:

- Info reads are dropped, and so are info writes/cas whose new value no op could observe (no ok
  read returns it, no cas expects it): such an op is always immediately overwritten, or last.
- An info op is linearized only if the very next op observes its new value (a read returning it,
  or a cas expecting it). Otherwise the next op is a write and the info op can be left out.
- Identical info ops (same kind, expected and value) are used in invoke order.
- A configuration is hopeless if a failed one has the same ok ops, the same value, and at least
  the same unused info ops, where an unused write of ``v`` can stand in for an unused cas
  ``e -> v``.

Failures are where a depth-first search is weakest: to prove one it must exhaust every way of
explaining the history up to the failure point, and different uses of info ops can make it
revisit the same region many times. So if the depth-first search has not decided after a modest
budget, a breadth-first search over the same configurations takes over. It advances one ok op at
a time and keeps, per (ok ops, value), only the configurations with the most unused info ops, so
it never revisits anything; its first empty level is exactly where linearization becomes
impossible.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeAlias

from raftkv.testing.history import Op

__all__ = ["DEFAULT_MAX_STATES", "CheckResult", "check_history", "check_key"]

DEFAULT_MAX_STATES = 2_000_000
"""Default search budget per key: configurations explored by each search before giving up."""

_DFS_BUDGET_MIN = 20_000
_DFS_BUDGET_PER_OP = 20
"""The depth-first search hands over to the breadth-first one after
``max(_DFS_BUDGET_MIN, _DFS_BUDGET_PER_OP * ops)`` configurations (at most ``max_states``)."""

_READ = 0
_WRITE = 1
_CAS = 2
_KIND_CODE = {"read": _READ, "write": _WRITE, "cas": _CAS}
# Linked list entry tags.
_END = 0  # a sentinel
_RETURN = 1  # the return of an ok op
_CALL = 2  # the call of an ok op
_INFO = 3  # the call of an info op (_CALL and _INFO are the tags >= _CALL)
_SHOW = 12  # ops listed per section of an explanation

_Value: TypeAlias = int | None
_Class: TypeAlias = tuple[int, _Value, _Value]
# A path of the breadth-first search: (the path it extends, the ops linearized by this step).
_Path: TypeAlias = "tuple[_Path | None, tuple[int, ...]]"
# A level of the breadth-first search: (ok bits, value) -> [(info bits, path)].
_Level: TypeAlias = "dict[tuple[int, _Value], list[tuple[int, _Path | None]]]"


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The verdict of a check.

    ``ok`` is True only if the history is linearizable. If the search budget was exhausted, the
    verdict is unknown: ``ok`` is False, ``timed_out`` is True and the explanation says "unknown".
    ``key`` names the first non-linearizable (or undecided) key, ``ops_checked`` counts the input
    ops of the keys that were examined.
    """

    ok: bool
    key: str | None
    explanation: str
    ops_checked: int
    timed_out: bool = False


def check_history(ops: Sequence[Op], *, max_states: int = DEFAULT_MAX_STATES) -> CheckResult:
    """Check a multi-key register history.

    Keys are checked in sorted order, each with its own budget of ``max_states``. The first key
    that is definitely not linearizable is reported at once; a key whose search runs out of budget
    is reported (as ``timed_out``) only if no other key definitely fails.
    """
    by_key: dict[str, list[Op]] = {}
    for op in ops:
        by_key.setdefault(op.key, []).append(op)
    checked = 0
    undecided: CheckResult | None = None
    for key in sorted(by_key):
        result = check_key(key, by_key[key], max_states=max_states)
        checked += result.ops_checked
        if result.timed_out:
            if undecided is None:
                undecided = result
        elif not result.ok:
            return CheckResult(False, key, result.explanation, checked)
    if undecided is not None:
        return CheckResult(False, undecided.key, undecided.explanation, checked, timed_out=True)
    return CheckResult(True, None, f"linearizable: {checked} ops over {len(by_key)} keys", checked)


def check_key(key: str, ops: Sequence[Op], *, max_states: int = DEFAULT_MAX_STATES) -> CheckResult:
    """Check the history of a single key; every op must have ``op.key == key``."""
    return _check_key(key, ops, max_states=max_states, dfs_budget=None)


def _check_key(
    key: str, ops: Sequence[Op], *, max_states: int, dfs_budget: int | None
) -> CheckResult:
    for op in ops:
        _validate(key, op)
    live = _prune([op for op in ops if op.status != "fail"])
    return _Search(key, live, max_states).run(len(ops), dfs_budget)


def _validate(key: str, op: Op) -> None:
    if op.key != key:
        raise ValueError(f"op on key {op.key!r} passed to check_key({key!r}): {op!r}")
    if op.kind not in _KIND_CODE:
        raise ValueError(f"unknown op kind: {op!r}")
    if op.status not in ("ok", "fail", "info"):
        raise ValueError(f"unknown op status: {op!r}")
    if op.status == "ok" and op.complete_time is None:
        raise ValueError(f"an ok op needs a complete_time: {op!r}")
    if op.complete_time is not None and op.complete_time < op.invoke_time:
        raise ValueError(f"op completes before it is invoked: {op!r}")
    if op.kind == "read" and (op.value is not None or op.expected is not None):
        raise ValueError(f"a read takes no value or expected: {op!r}")
    if op.kind == "write" and op.expected is not None:
        raise ValueError(f"a write takes no expected value: {op!r}")
    if op.kind != "read" and op.output is not None:
        raise ValueError(f"only a read has an output: {op!r}")


def _prune(ops: list[Op]) -> list[Op]:
    """Drop info ops that can never matter.

    - Info reads constrain nothing.
    - An info op invoked after every ok op completed would be linearized after all of them.
    - Suppose an info write/cas sets the register to ``v`` and nothing but a write can follow on
      state ``v`` (no ok read returns ``v``, no remaining cas expects ``v``). Then in any
      linearization that contains it, the op is immediately overwritten (or is last), so
      removing it leaves a valid linearization. Dropping an info cas may make another value
      unobservable, hence the fixpoint.
    """
    last = max((op.complete_time or 0 for op in ops if op.status == "ok"), default=-1)
    ops = [op for op in ops if op.status == "ok" or (op.kind != "read" and op.invoke_time <= last)]
    while True:
        observed: set[_Value] = set()
        for op in ops:
            if op.kind == "read":
                observed.add(op.output)
            elif op.kind == "cas":
                observed.add(op.expected)
        kept = [op for op in ops if op.status == "ok" or op.value in observed]
        if len(kept) == len(ops):
            return ops
        ops = kept


def _fmt_value(v: _Value) -> str:
    return "absent" if v is None else str(v)


def _fmt_op(op: Op) -> str:
    if op.kind == "read":
        what = f"read -> {_fmt_value(op.output)}"
    elif op.kind == "write":
        what = f"write {_fmt_value(op.value)}"
    else:
        what = f"cas {_fmt_value(op.expected)} -> {_fmt_value(op.value)}"
    end = "inf" if op.status == "info" or op.complete_time is None else str(op.complete_time)
    return f"p{op.process} {what} [{op.invoke_time}, {end}] {op.status}"


def _fmt_list(title: str, ops: Sequence[Op], *, tail: bool = False) -> list[str]:
    lines = [f"{title} ({len(ops)}):"]
    shown = ops[-_SHOW:] if tail else ops[:_SHOW]
    hidden = len(ops) - len(shown)
    if tail and hidden:
        lines.append(f"  ... {hidden} earlier")
    lines.extend(f"  {_fmt_op(op)}" for op in shown)
    if not tail and hidden:
        lines.append(f"  ... {hidden} more")
    return lines


def _lowest_zero(bits: int) -> int:
    return (~bits & (bits + 1)).bit_length() - 1


class _Search:
    """The searches over the (pruned) ops of a single key.

    Ok ops are numbered by completion time (bit ``1 << k`` of an ok bitset is ``ok_ids[k]``),
    info ops by invocation time (bit ``1 << b`` of an info bitset is ``info_ids[b]``).
    """

    def __init__(self, key: str, ops: list[Op], max_states: int) -> None:
        self.key = key
        self.ops = ops
        self.max_states = max_states
        n = len(ops)
        self.kinds = [_KIND_CODE[op.kind] for op in ops]
        # read: arg_a = output; write: arg_a = value; cas: arg_a = expected, arg_b = value.
        self.arg_a: list[_Value] = [
            op.output if op.kind == "read" else op.expected if op.kind == "cas" else op.value
            for op in ops
        ]
        self.arg_b: list[_Value] = [op.value for op in ops]
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
        self.info_class: list[_Class] = []
        self.prev_same: list[int] = []
        last_of_class: dict[_Class, int] = {}
        for b, i in enumerate(self.info_ids):
            cls = (self.kinds[i], self.arg_a[i], self.arg_b[i])
            self.info_class.append(cls)
            self.prev_same.append(last_of_class.get(cls, -1))
            last_of_class[cls] = b
        # Values some info cas compares against: an info op may be followed by one of those.
        self.info_cas_expects = frozenset(
            self.arg_a[i] for i in self.info_ids if self.kinds[i] == _CAS
        )
        # Best partial linearization seen (by number of ok ops), for the explanation.
        self.best_ok = -1
        self.best_seq: list[int] = []
        self.best_state: _Value = None
        self.best_blocker = -1
        self.states = 0
        self.searches = ""

    def run(self, n_input: int, dfs_budget: int | None) -> CheckResult:
        if dfs_budget is None:
            dfs_budget = max(_DFS_BUDGET_MIN, _DFS_BUDGET_PER_OP * len(self.ops))
        outcome = self._dfs(min(dfs_budget, self.max_states))
        self.searches = "depth-first search"
        if outcome is None:
            self.searches = "depth-first, then breadth-first search"
            self.best_ok = -1
            outcome = self._bfs(self.max_states)
        if outcome is True:
            return CheckResult(True, None, f"key {self.key!r}: linearizable", n_input)
        if outcome is None:
            text = (
                f"unknown: key {self.key!r}: search budget of {self.max_states} states exceeded"
                f" ({len(self.ops)} ops after pruning); linearizability not decided"
            )
            return CheckResult(False, self.key, text, n_input, timed_out=True)
        return CheckResult(False, self.key, self._explain(), n_input)

    def _covers(self, f: int, c: int) -> bool:
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
        have: dict[_Class, int] = {}
        while d2:
            low = d2 & -d2
            b = low.bit_length() - 1
            have[cls[b]] = have.get(cls[b], 0) + 1
            d2 ^= low
        need_writes: dict[_Value, int] = {}
        while d1:
            low = d1 & -d1
            b = low.bit_length() - 1
            d1 ^= low
            kind, _, value = cls[b]
            if kind == _CAS and have.get(cls[b], 0) > 0:
                have[cls[b]] -= 1
            else:
                need_writes[value] = need_writes.get(value, 0) + 1
        return all(have.get((_WRITE, v, v), 0) >= n for v, n in need_writes.items())

    def _dfs(self, budget: int) -> bool | None:
        """Lowe's search. True: linearizable; False: not; None: budget exhausted."""
        ops = self.ops
        kinds = self.kinds
        arg_a = self.arg_a
        arg_b = self.arg_b
        ok_ids = self.ok_ids
        info_ids = self.info_ids
        n_ok = len(ok_ids)
        if n_ok == 0:
            return True
        bit = [0] * len(ops)
        for k, i in enumerate(ok_ids):
            bit[i] = 1 << k
        for b, i in enumerate(info_ids):
            bit[i] = 1 << b
        prev_same = [-1] * len(ops)
        for b, i in enumerate(info_ids):
            if self.prev_same[b] >= 0:
                prev_same[i] = info_ids[self.prev_same[b]]
        info_cas_expects = self.info_cas_expects

        # Two doubly linked lists over one index space, each with head and tail sentinels:
        # - main: calls and returns of ok ops, in time order (calls first at equal times);
        # - info: calls of info ops, in invoke order. They have no return (complete at +inf).
        events: list[tuple[int, int, int]] = []
        for i in ok_ids:
            complete = ops[i].complete_time
            assert complete is not None
            events.append((ops[i].invoke_time, 0, i))
            events.append((complete, 1, i))
        events.sort()
        m = len(events)
        main_head, main_tail = 0, m + 1
        info_head, info_tail = m + 2, m + 3 + len(info_ids)
        size = info_tail + 1
        tag = [_END] * size
        ent_op = [-1] * size
        ent_time = [0] * size
        ret_of = [0] * size  # main call entry -> its return entry
        call_entry = [0] * len(ops)
        for e, (t, phase, i) in enumerate(events, start=1):
            ent_op[e] = i
            ent_time[e] = t
            if phase == 0:
                tag[e] = _CALL
                call_entry[i] = e
            else:
                tag[e] = _RETURN
                ret_of[call_entry[i]] = e
        for e, i in enumerate(info_ids, start=info_head + 1):
            tag[e] = _INFO
            ent_op[e] = i
            ent_time[e] = ops[i].invoke_time
        nxt = [-1] * size
        prv = [-1] * size
        for lo, hi in ((main_head, main_tail), (info_head, info_tail)):
            for e in range(lo, hi):
                nxt[e] = e + 1
                prv[e + 1] = e

        # failed[(ok bits, value)]: the info-bit sets with which that configuration was fully
        # explored without success, none covering another. (Configurations on the stack are
        # never met again: the set of linearized ops grows strictly along a path.)
        failed: dict[tuple[int, _Value], list[int]] = {}
        covers = self._covers
        # Frames: the entry linearized, and state, first_ret, must_observe, wanted before it.
        stack: list[tuple[int, _Value, int, bool, frozenset[_Value]]] = []
        ok_bits = 0
        info_bits = 0
        ok_done = 0
        state: _Value = None
        # In the info pass: the first return entry of the main list, whose time bounds the
        # invocation of usable info ops, and the values that the next op could observe.
        first_ret = main_tail
        wanted: frozenset[_Value] = frozenset()
        # Set right after an info op is linearized: the next op must observe its new value.
        must_observe = False
        pushes = 0
        entry = nxt[main_head]
        while True:
            t = tag[entry]
            if t >= _CALL:
                i = ent_op[entry]
                kind = kinds[i]
                if t == _INFO:
                    if ent_time[entry] > ent_time[first_ret]:
                        entry = info_tail  # invoked too late, and so are all the next ones
                        continue
                    ps = prev_same[i]
                    if arg_b[i] not in wanted or (ps >= 0 and not info_bits & bit[ps]):
                        entry = nxt[entry]
                        continue
                if kind == _WRITE:
                    if must_observe:
                        entry = nxt[entry]
                        continue
                    new_state = arg_a[i]
                elif state != arg_a[i]:
                    entry = nxt[entry]
                    continue
                elif kind == _READ:
                    new_state = state
                else:
                    new_state = arg_b[i]
                if t == _CALL:
                    new_ok = ok_bits | bit[i]
                    new_info = info_bits
                else:
                    new_ok = ok_bits
                    new_info = info_bits | bit[i]
                seen = failed.get((new_ok, new_state))
                if seen is not None and (
                    any(f & new_info == f for f in seen) or any(covers(f, new_info) for f in seen)
                ):
                    entry = nxt[entry]
                    continue
                pushes += 1
                if pushes > budget:
                    self.states += pushes
                    return None
                stack.append((entry, state, first_ret, must_observe, wanted))
                state = new_state
                ok_bits = new_ok
                info_bits = new_info
                must_observe = t == _INFO
                # Lift the entry (and the return entry of an ok op) out of its list.
                nx = nxt[entry]
                pv = prv[entry]
                nxt[pv] = nx
                prv[nx] = pv
                if t == _CALL:
                    ok_done += 1
                    if ok_done == n_ok:
                        self.states += pushes
                        return True
                    r = ret_of[entry]
                    nx = nxt[r]
                    pv = prv[r]
                    nxt[pv] = nx
                    prv[nx] = pv
                entry = nxt[main_head]
            elif t == _RETURN:
                # No ok op can be linearized next: the op returning here would be left behind.
                # Try the info ops invoked by then, if one could be observed right after it.
                first_ret = entry
                entry = nxt[info_head]
                if (
                    tag[entry] != _INFO
                    or ent_time[entry] > ent_time[first_ret]
                    or (must_observe and state not in info_cas_expects)
                ):
                    entry = info_tail
                    continue
                observed = set(info_cas_expects)
                e = nxt[main_head]
                while e != first_ret:
                    if kinds[ent_op[e]] != _WRITE:
                        observed.add(arg_a[ent_op[e]])
                    e = nxt[e]
                wanted = frozenset(observed)
            else:
                # Every candidate of this configuration failed: record it and backtrack.
                if not must_observe:
                    if ok_done > self.best_ok:
                        self.best_ok = ok_done
                        self.best_seq = [ent_op[frame[0]] for frame in stack]
                        self.best_state = state
                        self.best_blocker = ent_op[first_ret]
                    key = (ok_bits, state)
                    seen = failed.get(key)
                    if seen is None:
                        failed[key] = [info_bits]
                    else:
                        seen[:] = [f for f in seen if not covers(info_bits, f)]
                        seen.append(info_bits)
                if not stack:
                    self.states += pushes
                    return False
                entry, state, first_ret, must_observe, wanted = stack.pop()
                i = ent_op[entry]
                if tag[entry] == _CALL:
                    ok_bits ^= bit[i]
                    ok_done -= 1
                    r = ret_of[entry]
                    nxt[prv[r]] = r
                    prv[nxt[r]] = r
                else:
                    info_bits ^= bit[i]
                nxt[prv[entry]] = entry
                prv[nxt[entry]] = entry
                entry = nxt[entry]

    def _bfs(self, budget: int) -> bool | None:
        """Level-by-level search: level ``L`` holds the configurations with ``L`` ok ops
        linearized. True: linearizable; False: not; None: budget exhausted."""
        ops = self.ops
        ok_ids = self.ok_ids
        info_ids = self.info_ids
        n_ok = len(ok_ids)
        if n_ok == 0:
            return True
        ok_kind = [self.kinds[i] for i in ok_ids]
        ok_a = [self.arg_a[i] for i in ok_ids]
        ok_b = [self.arg_b[i] for i in ok_ids]
        comp = [ops[i].complete_time or 0 for i in ok_ids]
        inv = [ops[i].invoke_time for i in ok_ids]
        info_kind = [self.kinds[i] for i in info_ids]
        info_a = [self.arg_a[i] for i in info_ids]
        info_b = [self.arg_b[i] for i in info_ids]
        info_inv = [ops[i].invoke_time for i in info_ids]
        # Info bit indices (so in invoke order) of the writes, and of the cas by expected value.
        info_writes = [b for b in range(len(info_ids)) if info_kind[b] == _WRITE]
        cas_by_expected: dict[_Value, list[int]] = {}
        no_ops: list[int] = []
        for b in range(len(info_ids)):
            if info_kind[b] == _CAS:
                cas_by_expected.setdefault(info_a[b], []).append(b)
        prev_same = self.prev_same
        info_cas_expects = self.info_cas_expects
        covers = self._covers

        # If k is the first ok op (by completion) not yet linearized, the candidates are the
        # unlinearized ok ops invoked by comp[k]: windows[k] lists the ok ops >= k invoked by
        # then; the info ops invoked by then are the first bisect_right(info_inv, comp[k]).
        windows: list[tuple[int, ...]] = []
        by_invoke = sorted(range(n_ok), key=lambda k: inv[k])
        active: set[int] = set()
        p = 0
        for k in range(n_ok):
            while p < n_ok and inv[by_invoke[p]] <= comp[k]:
                active.add(by_invoke[p])
                p += 1
            active.discard(k - 1)
            windows.append(tuple(sorted(active)))

        full = (1 << n_ok) - 1
        generated = 0
        done = False
        level: _Level = {(0, None): [(0, None)]}
        new_level: _Level = {}

        def add(ok2: int, state2: _Value, info2: int, path: _Path) -> None:
            nonlocal generated, done
            generated += 1
            if ok2 == full:
                done = True
                return
            entries = new_level.get((ok2, state2))
            if entries is None:
                new_level[(ok2, state2)] = [(info2, path)]
                return
            if any(covers(f, info2) for f, _ in entries):
                return
            entries[:] = [(f, q) for f, q in entries if not covers(info2, f)]
            entries.append((info2, path))

        while True:
            new_level = {}
            for (ok, state), entries in level.items():
                z = _lowest_zero(ok)
                cands = [k for k in windows[z] if not ok >> k & 1]
                n_avail = bisect_right(info_inv, comp[z])
                wanted = {ok_a[k] for k in cands if ok_kind[k] != _WRITE} | info_cas_expects
                for info, path in entries:
                    if done:
                        return True
                    if generated > budget:
                        self.states += generated
                        return None
                    # Linearize one ok op now...
                    for k in cands:
                        if ok_kind[k] == _WRITE:
                            add(ok | 1 << k, ok_a[k], info, (path, (ok_ids[k],)))
                        elif state == ok_a[k]:
                            new = state if ok_kind[k] == _READ else ok_b[k]
                            add(ok | 1 << k, new, info, (path, (ok_ids[k],)))
                    # ... or a chain of info ops, each observed by the next, then an ok op.
                    if not n_avail:
                        continue
                    chains: list[tuple[_Value, int, tuple[int, ...]]] = [(state, info, ())]
                    # Chain heads reached, per value: none covering another (see _covers).
                    reached: dict[_Value, list[int]] = {state: [info]}
                    while chains:
                        cur, used, chain = chains.pop()
                        # Only a cas can observe the previous info op of a chain.
                        observers = cas_by_expected.get(cur, no_ops)
                        groups = (observers,) if chain else (info_writes, observers)
                        for group in groups:
                            for b in group:
                                if b >= n_avail:
                                    break
                                if used >> b & 1:
                                    continue
                                ps = prev_same[b]
                                if ps >= 0 and not used >> ps & 1:
                                    continue
                                val = info_b[b]
                                if val not in wanted:
                                    continue
                                used2 = used | 1 << b
                                chain2 = (*chain, info_ids[b])
                                for k in cands:
                                    if ok_kind[k] != _WRITE and ok_a[k] == val:
                                        new = val if ok_kind[k] == _READ else ok_b[k]
                                        add(ok | 1 << k, new, used2, (path, (*chain2, ok_ids[k])))
                                if val not in info_cas_expects:
                                    continue
                                heads = reached.setdefault(val, [])
                                if any(covers(f, used2) for f in heads):
                                    continue
                                heads[:] = [f for f in heads if not covers(used2, f)]
                                heads.append(used2)
                                chains.append((val, used2, chain2))
            if done:
                return True
            if not new_level:
                self.states += generated
                (ok, state), entries = next(iter(level.items()))
                seq: list[int] = []
                node = entries[0][1]
                while node is not None:
                    seq[:0] = node[1]
                    node = node[0]
                self.best_ok = ok.bit_count()
                self.best_seq = seq
                self.best_state = state
                self.best_blocker = ok_ids[_lowest_zero(ok)]
                return False
            level = new_level

    def _explain(self) -> str:
        ops = self.ops
        prefix = [ops[i] for i in self.best_seq]
        in_prefix = set(self.best_seq)
        blocker = ops[self.best_blocker]
        assert blocker.complete_time is not None
        deadline = blocker.complete_time
        # ok ops left over, that were invoked by the time the blocking op returned: these are
        # the candidates the search tried and could not fit in.
        stuck = [
            op
            for i, op in enumerate(ops)
            if i not in in_prefix and op.status == "ok" and op.invoke_time <= deadline
        ]
        stuck.sort(key=lambda op: (op.invoke_time, op is not blocker))
        n_ok = len(self.ok_ids)
        lines = [
            f"key {self.key!r} is not linearizable ({len(ops)} ops checked after pruning,"
            f" {self.states} states explored by {self.searches})",
            f"could not linearize: {_fmt_op(blocker)}",
            "  (it completed before any consistent linearization point was found for it)",
            *_fmt_list(
                f"ok ops that could not be linearized after the longest prefix,"
                f" invoked by time {deadline}",
                stuck,
            ),
            *_fmt_list(
                f"longest linearizable prefix: {self.best_ok} of {n_ok} ok ops"
                f" ({len(prefix)} ops incl. info), ending with value"
                f" {_fmt_value(self.best_state)}",
                prefix,
                tail=True,
            ),
        ]
        return "\n".join(lines)
