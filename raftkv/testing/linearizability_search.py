"""The two searches of the linearizability checker over one key's ops.

The algorithm, and why there are two searches, is described in
:mod:`raftkv.testing.linearizability`. Both take a :class:`KeyOps` (the key's numbered ops), add
what they explore to a :class:`SearchReport`, and return True (linearizable), False (not) or
None (the budget of configurations was exhausted).
"""

from __future__ import annotations

from bisect import bisect_right
from typing import TypeAlias

from raftkv.testing.linearizability_ops import CAS, READ, WRITE, KeyOps, SearchReport, Value

__all__ = ["breadth_first_search", "depth_first_search"]

# Linked list entry tags.
_END = 0  # a sentinel
_RETURN = 1  # the return of an ok op
_CALL = 2  # the call of an ok op
_INFO = 3  # the call of an info op (_CALL and _INFO are the tags >= _CALL)

_NO_OPS: list[int] = []  # never changed: the cas of a value that no info cas expects

# A path of the breadth-first search: (the path it extends, the ops linearized by this step).
_Path: TypeAlias = "tuple[_Path | None, tuple[int, ...]]"
# A level of the breadth-first search: (ok bits, value) -> [(info bits, path)].
_Level: TypeAlias = "dict[tuple[int, Value], list[tuple[int, _Path | None]]]"
# A frame of the depth-first search: the entry linearized, and the walk's state, first_ret,
# must_observe and wanted before it.
_Frame: TypeAlias = tuple[int, Value, int, bool, frozenset[Value]]


def depth_first_search(key_ops: KeyOps, report: SearchReport, budget: int) -> bool | None:
    """Lowe's search. True: linearizable; False: not; None: budget exhausted."""
    if not key_ops.ok_ids:
        return True
    search = _DepthFirstSearch(key_ops, report, budget)
    outcome = search.walk()
    report.states += search.pushes
    return outcome


def breadth_first_search(key_ops: KeyOps, report: SearchReport, budget: int) -> bool | None:
    """Level-by-level search: level ``L`` holds the configurations with ``L`` ok ops
    linearized. True: linearizable; False: not; None: budget exhausted."""
    if not key_ops.ok_ids:
        return True
    return _BreadthFirstSearch(key_ops, report, budget).run()


def _lowest_zero(bits: int) -> int:
    return (~bits & (bits + 1)).bit_length() - 1


class _EntryLists:
    """Two doubly linked lists over one index space, each with head and tail sentinels:

    - main: calls and returns of ok ops, in time order (calls first at equal times);
    - info: calls of info ops, in invoke order. They have no return (complete at +inf).

    Per entry: its tag, its op (an index into the key's ops; -1 for a sentinel), its time, and
    for a call entry of the main list, its return entry; per ok op, its call entry.
    """

    def __init__(self, key_ops: KeyOps) -> None:
        ops = key_ops.ops
        info_ids = key_ops.info_ids
        events: list[tuple[int, int, int]] = []
        for i in key_ops.ok_ids:
            complete = ops[i].complete_time
            assert complete is not None
            events.append((ops[i].invoke_time, 0, i))
            events.append((complete, 1, i))
        events.sort()
        m = len(events)
        self.main_head, self.main_tail = 0, m + 1
        self.info_head, self.info_tail = m + 2, m + 3 + len(info_ids)
        size = self.info_tail + 1
        self.tag = [_END] * size
        self.op = [-1] * size
        self.time = [0] * size
        self.ret_of = [0] * size
        self.call_entry = call_entry = [0] * len(ops)
        for e, (t, phase, i) in enumerate(events, start=1):
            self.op[e] = i
            self.time[e] = t
            if phase == 0:
                self.tag[e] = _CALL
                call_entry[i] = e
            else:
                self.tag[e] = _RETURN
                self.ret_of[call_entry[i]] = e
        for e, i in enumerate(info_ids, start=self.info_head + 1):
            self.tag[e] = _INFO
            self.op[e] = i
            self.time[e] = ops[i].invoke_time
        self.nxt = [-1] * size
        self.prv = [-1] * size
        for lo, hi in ((self.main_head, self.main_tail), (self.info_head, self.info_tail)):
            for e in range(lo, hi):
                self.nxt[e] = e + 1
                self.prv[e + 1] = e

    def restore(self, entry: int) -> None:
        """Put back an entry lifted out of its list (which kept its own links), the last lifted
        first."""
        self.nxt[self.prv[entry]] = entry
        self.prv[self.nxt[entry]] = entry


class _DepthFirstSearch:
    """The walk of Lowe's search over the entry lists, with its backtracking stack.

    Per entry, the op's kind, first argument, new value (the register after the op, once the
    model accepts it) and second argument (the value an info op writes), and the bits the entry
    sets in the ok and info bitsets (0 in the other one). ``prev_bit`` is, for an info op, the
    info bit of the previous identical one, which must have been used first (0: none).
    """

    def __init__(self, key_ops: KeyOps, report: SearchReport, budget: int) -> None:
        self.key_ops = key_ops
        self.report = report
        self.budget = budget
        self.n_ok = len(key_ops.ok_ids)
        self.lists = lists = _EntryLists(key_ops)
        size = len(lists.tag)
        # Per op, with one more element at the end: the one a sentinel's op -1 finds.
        kinds = [*key_ops.kinds, -1]
        arg_a: list[Value] = [*key_ops.arg_a, None]
        arg_b: list[Value] = [*key_ops.arg_b, None]
        # A read leaves the value it returned (equal to arg_a), a write sets arg_a, a cas arg_b.
        after = [b if k == CAS else a for k, a, b in zip(kinds, arg_a, arg_b, strict=True)]
        self.kind = [kinds[i] for i in lists.op]
        self.arg = [arg_a[i] for i in lists.op]
        self.value = [arg_b[i] for i in lists.op]
        self.after = [after[i] for i in lists.op]
        self.ok_bit = [0] * size
        for k, i in enumerate(key_ops.ok_ids):
            self.ok_bit[lists.call_entry[i]] = 1 << k
        self.info_bit = [0] * size
        self.prev_bit = [0] * size
        for b, prev in enumerate(key_ops.prev_same):
            self.info_bit[lists.info_head + 1 + b] = 1 << b
            if prev >= 0:
                self.prev_bit[lists.info_head + 1 + b] = 1 << prev
        # failed[(ok bits, value)]: the info-bit sets with which that configuration was fully
        # explored without success, none covering another. (Configurations on the stack are
        # never met again: the set of linearized ops grows strictly along a path.)
        self.failed: dict[tuple[int, Value], list[int]] = {}
        self.stack: list[_Frame] = []
        self.pushes = 0
        self.ok_done = 0
        # The configuration: the ok and info ops linearized, and the register's value.
        self.ok_bits = 0
        self.info_bits = 0
        self.state: Value = None
        # In the info pass: the first return entry of the main list, whose time bounds the
        # invocation of usable info ops, and the values that the next op could observe.
        self.first_ret = lists.main_tail
        self.wanted: frozenset[Value] = frozenset()
        # Set right after an info op is linearized: the next op must observe its new value.
        self.must_observe = False

    def walk(self) -> bool | None:
        """From the head of the main list, linearize ops until every ok op is, or no op can be
        and the stack is empty. True: linearizable; False: not; None: budget exhausted."""
        lists = self.lists
        tag, ent_time, nxt = lists.tag, lists.time, lists.nxt
        main_head, info_tail = lists.main_head, lists.info_tail
        kind, arg, after, value = self.kind, self.arg, self.after, self.value
        ok_bit, info_bit, prev_bit = self.ok_bit, self.info_bit, self.prev_bit
        failed, covers = self.failed, self.key_ops.covers
        # Local copies of the fields that a candidate's check reads (this loop is the hot path);
        # each call that changes the fields (_push, _start_info_pass, _backtrack) refreshes them.
        state, ok_bits, info_bits = self.state, self.ok_bits, self.info_bits
        must_observe, first_ret, wanted = self.must_observe, self.first_ret, self.wanted
        entry = nxt[main_head]
        while True:
            t = tag[entry]
            if t < _CALL:
                if t == _RETURN:
                    entry = self._start_info_pass(entry)
                    first_ret, wanted = self.first_ret, self.wanted
                    continue
                entry = self._backtrack()  # at the end of a list
                if entry < 0:
                    return False
                state, ok_bits, info_bits = self.state, self.ok_bits, self.info_bits
                must_observe, first_ret, wanted = self.must_observe, self.first_ret, self.wanted
                continue
            if t == _INFO:
                if ent_time[entry] > ent_time[first_ret]:
                    entry = info_tail  # invoked too late, and so are all the next ones
                    continue
                need = prev_bit[entry]
                if value[entry] not in wanted or (need and not info_bits & need):
                    entry = nxt[entry]
                    continue
            if kind[entry] == WRITE:
                if must_observe:
                    entry = nxt[entry]
                    continue
            elif state != arg[entry]:
                entry = nxt[entry]
                continue
            new_state = after[entry]
            new_ok = ok_bits | ok_bit[entry]
            new_info = info_bits | info_bit[entry]
            seen = failed.get((new_ok, new_state))
            if seen is not None and (
                any(f & new_info == f for f in seen) or any(covers(f, new_info) for f in seen)
            ):
                entry = nxt[entry]
                continue
            outcome = self._push(entry, new_ok, new_state, new_info)
            if outcome is not False:
                return outcome
            state, ok_bits, info_bits = new_state, new_ok, new_info
            must_observe = t == _INFO
            entry = nxt[main_head]

    def _push(self, entry: int, ok_bits: int, state: Value, info_bits: int) -> bool | None:
        """Linearize the op of ``entry`` now, moving to the configuration given. True once every
        ok op is linearized, None if that exceeds the budget, else False."""
        self.pushes += 1
        if self.pushes > self.budget:
            return None
        self.stack.append((entry, self.state, self.first_ret, self.must_observe, self.wanted))
        self.state, self.ok_bits, self.info_bits = state, ok_bits, info_bits
        lists = self.lists
        nxt, prv = lists.nxt, lists.prv
        is_call = lists.tag[entry] == _CALL
        self.must_observe = not is_call
        # Lift the entry (and the return entry of an ok op) out of its list, inline rather than
        # by _EntryLists.lift: this runs once per configuration explored.
        nx = nxt[entry]
        pv = prv[entry]
        nxt[pv] = nx
        prv[nx] = pv
        if is_call:
            self.ok_done += 1
            if self.ok_done == self.n_ok:
                return True
            r = lists.ret_of[entry]
            nx = nxt[r]
            pv = prv[r]
            nxt[pv] = nx
            prv[nx] = pv
        return False

    def _start_info_pass(self, ret_entry: int) -> int:
        """No ok op can be linearized next: the op returning at ``ret_entry`` would be left
        behind. Try the info ops invoked by then, if one could be observed right after it.
        Returns the entry to visit next."""
        lists = self.lists
        info_cas_expects = self.key_ops.info_cas_expects
        self.first_ret = ret_entry
        entry = lists.nxt[lists.info_head]
        if (
            lists.tag[entry] != _INFO
            or lists.time[entry] > lists.time[ret_entry]
            or (self.must_observe and self.state not in info_cas_expects)
        ):
            return lists.info_tail
        observed = set(info_cas_expects)
        e = lists.nxt[lists.main_head]
        while e != ret_entry:
            if self.kind[e] != WRITE:
                observed.add(self.arg[e])
            e = lists.nxt[e]
        self.wanted = frozenset(observed)
        return entry

    def _backtrack(self) -> int:
        """Every candidate of this configuration failed: record it, then take the last op
        linearized back. Returns the entry after that op, to try next; -1 if none is left."""
        if not self.must_observe:
            self._record_failure()
        if not self.stack:
            return -1
        entry, self.state, self.first_ret, self.must_observe, self.wanted = self.stack.pop()
        self.ok_bits ^= self.ok_bit[entry]
        self.info_bits ^= self.info_bit[entry]
        lists = self.lists
        if lists.tag[entry] == _CALL:
            self.ok_done -= 1
            lists.restore(lists.ret_of[entry])
        lists.restore(entry)
        return lists.nxt[entry]

    def _record_failure(self) -> None:
        report = self.report
        if self.ok_done > report.best_ok:
            report.best_ok = self.ok_done
            report.best_seq = [self.lists.op[frame[0]] for frame in self.stack]
            report.best_state = self.state
            report.best_blocker = self.lists.op[self.first_ret]
        key = (self.ok_bits, self.state)
        seen = self.failed.get(key)
        if seen is None:
            self.failed[key] = [self.info_bits]
        else:
            covers = self.key_ops.covers
            seen[:] = [f for f in seen if not covers(self.info_bits, f)]
            seen.append(self.info_bits)


def _candidate_windows(inv: list[int], comp: list[int]) -> list[tuple[int, ...]]:
    """If k is the first ok op (by completion) not yet linearized, the candidates are the
    unlinearized ok ops invoked by comp[k]: windows[k] lists the ok ops >= k invoked by then."""
    n_ok = len(comp)
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
    return windows


class _BreadthFirstSearch:
    """The levels of the breadth-first search; ok ops by their ok bit, info ops by their info
    bit. Per (ok bits, value), a level keeps only the configurations with the most unused info
    ops (none covering another)."""

    def __init__(self, key_ops: KeyOps, report: SearchReport, budget: int) -> None:
        self.key_ops = key_ops
        self.report = report
        self.budget = budget
        ops = key_ops.ops
        ok_ids = self.ok_ids = key_ops.ok_ids
        info_ids = self.info_ids = key_ops.info_ids
        self.ok_kind = [key_ops.kinds[i] for i in ok_ids]
        self.ok_a = [key_ops.arg_a[i] for i in ok_ids]
        self.ok_b = [key_ops.arg_b[i] for i in ok_ids]
        self.comp = [ops[i].complete_time or 0 for i in ok_ids]
        inv = [ops[i].invoke_time for i in ok_ids]
        info_kind = [key_ops.kinds[i] for i in info_ids]
        self.info_b = [key_ops.arg_b[i] for i in info_ids]
        self.info_inv = [ops[i].invoke_time for i in info_ids]
        # Info bit indices (so in invoke order) of the writes, and of the cas by expected value.
        self.info_writes = [b for b in range(len(info_ids)) if info_kind[b] == WRITE]
        self.cas_by_expected: dict[Value, list[int]] = {}
        for b in range(len(info_ids)):
            if info_kind[b] == CAS:
                self.cas_by_expected.setdefault(key_ops.arg_a[info_ids[b]], []).append(b)
        # The info ops invoked by comp[k] are the first bisect_right(info_inv, comp[k]).
        self.windows = _candidate_windows(inv, self.comp)
        self.full = (1 << len(ok_ids)) - 1
        self.generated = 0
        self.done = False
        self.new_level: _Level = {}

    def run(self) -> bool | None:
        level: _Level = {(0, None): [(0, None)]}
        while True:
            self.new_level = {}
            for (ok, state), entries in level.items():
                outcome = self._expand(ok, state, entries)
                if outcome is not False:
                    return outcome
            if self.done:
                return True
            if not self.new_level:
                self.report.states += self.generated
                self._record_failure(level)
                return False
            level = self.new_level

    def _add(self, ok2: int, state2: Value, info2: int, path: _Path) -> None:
        self.generated += 1
        if ok2 == self.full:
            self.done = True
            return
        entries = self.new_level.get((ok2, state2))
        if entries is None:
            self.new_level[(ok2, state2)] = [(info2, path)]
            return
        covers = self.key_ops.covers
        if any(covers(f, info2) for f, _ in entries):
            return
        entries[:] = [(f, q) for f, q in entries if not covers(info2, f)]
        entries.append((info2, path))

    def _expand(
        self, ok: int, state: Value, entries: list[tuple[int, _Path | None]]
    ) -> bool | None:
        """Add to the next level what one step leads to from the configurations with the ok ops
        ``ok`` and the value ``state``. True once every ok op is linearized, None if the budget
        is exhausted, else False."""
        ok_ids, ok_kind, ok_a, ok_b, add = (
            self.ok_ids,
            self.ok_kind,
            self.ok_a,
            self.ok_b,
            self._add,
        )
        z = _lowest_zero(ok)
        cands = [k for k in self.windows[z] if not ok >> k & 1]
        n_avail = bisect_right(self.info_inv, self.comp[z])
        info_cas_expects = self.key_ops.info_cas_expects
        wanted = {ok_a[k] for k in cands if ok_kind[k] != WRITE} | info_cas_expects
        for info, path in entries:
            if self.done:
                return True
            if self.generated > self.budget:
                self.report.states += self.generated
                return None
            # Linearize one ok op now...
            for k in cands:
                if ok_kind[k] == WRITE:
                    add(ok | 1 << k, ok_a[k], info, (path, (ok_ids[k],)))
                elif state == ok_a[k]:
                    new = state if ok_kind[k] == READ else ok_b[k]
                    add(ok | 1 << k, new, info, (path, (ok_ids[k],)))
            # ... or a chain of info ops, each observed by the next, then an ok op.
            if n_avail:
                self._expand_chains(ok, state, info, path, cands, n_avail, wanted)
        return False

    def _expand_chains(
        self,
        ok: int,
        state: Value,
        info: int,
        path: _Path | None,
        cands: list[int],
        n_avail: int,
        wanted: set[Value],
    ) -> None:
        """The steps of a chain of info ops (of the first ``n_avail``), each observed by the
        next, then one of the ok ops ``cands``."""
        ok_ids, ok_kind, ok_a, ok_b, add = (
            self.ok_ids,
            self.ok_kind,
            self.ok_a,
            self.ok_b,
            self._add,
        )
        info_ids, info_b, prev_same = self.info_ids, self.info_b, self.key_ops.prev_same
        info_cas_expects, covers = self.key_ops.info_cas_expects, self.key_ops.covers
        chains: list[tuple[Value, int, tuple[int, ...]]] = [(state, info, ())]
        # Chain heads reached, per value: none covering another (see KeyOps.covers).
        reached: dict[Value, list[int]] = {state: [info]}
        while chains:
            cur, used, chain = chains.pop()
            # Only a cas can observe the previous info op of a chain.
            observers = self.cas_by_expected.get(cur, _NO_OPS)
            groups = (observers,) if chain else (self.info_writes, observers)
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
                        if ok_kind[k] != WRITE and ok_a[k] == val:
                            new = val if ok_kind[k] == READ else ok_b[k]
                            add(ok | 1 << k, new, used2, (path, (*chain2, ok_ids[k])))
                    if val not in info_cas_expects:
                        continue
                    heads = reached.setdefault(val, [])
                    if any(covers(f, used2) for f in heads):
                        continue
                    heads[:] = [f for f in heads if not covers(used2, f)]
                    heads.append(used2)
                    chains.append((val, used2, chain2))

    def _record_failure(self, level: _Level) -> None:
        """The longest prefix, for the explanation: any configuration of the last level."""
        (ok, state), entries = next(iter(level.items()))
        seq: list[int] = []
        node = entries[0][1]
        while node is not None:
            seq[:0] = node[1]
            node = node[0]
        report = self.report
        report.best_ok = ok.bit_count()
        report.best_seq = seq
        report.best_state = state
        report.best_blocker = self.ok_ids[_lowest_zero(ok)]
