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

This module holds the API, validation, pruning and the verdict's explanation; the two searches
are in :mod:`raftkv.testing.linearizability_search`, over the numbering of a key's ops that
:mod:`raftkv.testing.linearizability_ops` builds once for both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from raftkv.testing.history import Op
from raftkv.testing.linearizability_ops import KIND_CODE, KeyOps, SearchReport, Value
from raftkv.testing.linearizability_search import breadth_first_search, depth_first_search

__all__ = ["DEFAULT_MAX_STATES", "CheckResult", "check_history", "check_key"]

DEFAULT_MAX_STATES = 2_000_000
"""Default search budget per key: configurations explored by each search before giving up."""

_DFS_BUDGET_MIN = 20_000
_DFS_BUDGET_PER_OP = 20
"""The depth-first search hands over to the breadth-first one after
``max(_DFS_BUDGET_MIN, _DFS_BUDGET_PER_OP * ops)`` configurations (at most ``max_states``)."""

_SHOW = 12  # ops listed per section of an explanation


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
    if op.kind not in KIND_CODE:
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
        observed: set[Value] = set()
        for op in ops:
            if op.kind == "read":
                observed.add(op.output)
            elif op.kind == "cas":
                observed.add(op.expected)
        kept = [op for op in ops if op.status == "ok" or op.value in observed]
        if len(kept) == len(ops):
            return ops
        ops = kept


def _fmt_value(v: Value) -> str:
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


class _Search:
    """The depth-first search of one key's ops, then the breadth-first one if that is
    undecided, and the verdict."""

    def __init__(self, key: str, ops: list[Op], max_states: int) -> None:
        self.key = key
        self.ops = ops
        self.key_ops = KeyOps(ops)
        self.max_states = max_states
        self.report = SearchReport()
        self.searches = ""

    def run(self, n_input: int, dfs_budget: int | None) -> CheckResult:
        if dfs_budget is None:
            dfs_budget = max(_DFS_BUDGET_MIN, _DFS_BUDGET_PER_OP * len(self.ops))
        report = self.report
        outcome = depth_first_search(self.key_ops, report, min(dfs_budget, self.max_states))
        self.searches = "depth-first search"
        if outcome is None:
            self.searches = "depth-first, then breadth-first search"
            report.best_ok = -1
            outcome = breadth_first_search(self.key_ops, report, self.max_states)
        if outcome is True:
            return CheckResult(True, None, f"key {self.key!r}: linearizable", n_input)
        if outcome is None:
            text = (
                f"unknown: key {self.key!r}: search budget of {self.max_states} states exceeded"
                f" ({len(self.ops)} ops after pruning); linearizability not decided"
            )
            return CheckResult(False, self.key, text, n_input, timed_out=True)
        return CheckResult(False, self.key, self._explain(), n_input)

    def _explain(self) -> str:
        ops = self.ops
        prefix = [ops[i] for i in self.report.best_seq]
        in_prefix = set(self.report.best_seq)
        blocker = ops[self.report.best_blocker]
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
        n_ok = len(self.key_ops.ok_ids)
        lines = [
            f"key {self.key!r} is not linearizable ({len(ops)} ops checked after pruning,"
            f" {self.report.states} states explored by {self.searches})",
            f"could not linearize: {_fmt_op(blocker)}",
            "  (it completed before any consistent linearization point was found for it)",
            *_fmt_list(
                f"ok ops that could not be linearized after the longest prefix,"
                f" invoked by time {deadline}",
                stuck,
            ),
            *_fmt_list(
                f"longest linearizable prefix: {self.report.best_ok} of {n_ok} ok ops"
                f" ({len(prefix)} ops incl. info), ending with value"
                f" {_fmt_value(self.report.best_state)}",
                prefix,
                tail=True,
            ),
        ]
        return "\n".join(lines)
