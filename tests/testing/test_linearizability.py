"""Tests for raftkv.testing.history and raftkv.testing.linearizability."""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from itertools import combinations, permutations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raftkv.testing.history import History, Op, OpKind, Status
from raftkv.testing.linearizability import CheckResult, _check_key, check_history, check_key

# --------------------------------------------------------------------------------------------
# helpers


def mk(
    kind: OpKind,
    inv: int,
    comp: int | None,
    *,
    value: int | None = None,
    expected: int | None = None,
    output: int | None = None,
    status: Status = "ok",
    key: str = "x",
    process: int = 0,
) -> Op:
    if status == "info":
        comp = None
    return Op(process, kind, key, value, expected, output, status, inv, comp)


def w(v: int | None, inv: int, comp: int | None, status: Status = "ok", **kw: object) -> Op:
    return mk("write", inv, comp, value=v, status=status, **kw)  # type: ignore[arg-type]


def r(out: int | None, inv: int, comp: int | None, status: Status = "ok", **kw: object) -> Op:
    return mk("read", inv, comp, output=out, status=status, **kw)  # type: ignore[arg-type]


def cas(exp: int | None, new: int | None, inv: int, comp: int | None, status: Status = "ok") -> Op:
    return mk("cas", inv, comp, value=new, expected=exp, status=status)


def lin(*ops: Op) -> bool:
    result = check_history(ops)
    assert not result.timed_out
    return result.ok


# --------------------------------------------------------------------------------------------
# sequential histories


def test_empty_history() -> None:
    result = check_history([])
    assert result == CheckResult(True, None, result.explanation, 0)


def test_sequential_valid() -> None:
    assert lin(w(1, 0, 1), r(1, 2, 3), w(2, 4, 5), r(2, 6, 7), r(2, 8, 9))


def test_initial_read_is_absent() -> None:
    assert lin(r(None, 0, 1), w(1, 2, 3), r(1, 4, 5))
    assert not lin(r(1, 0, 1))


def test_write_none_deletes() -> None:
    assert lin(w(1, 0, 1), w(None, 2, 3), r(None, 4, 5))
    assert not lin(w(1, 0, 1), w(None, 2, 3), r(1, 4, 5))


def test_sequential_invalid_reports_key_and_ops() -> None:
    ops = [w(1, 0, 1), r(2, 2, 3)]
    result = check_history(ops)
    assert not result.ok
    assert not result.timed_out
    assert result.key == "x"
    assert result.ops_checked == 2
    assert "read -> 2" in result.explanation
    assert "longest linearizable prefix: 1 of 2 ok ops" in result.explanation
    assert "write 1" in result.explanation


def test_stale_read_detected() -> None:
    # the read starts after write 2 completed, yet returns 1
    assert not lin(w(1, 0, 1), w(2, 2, 3), r(1, 4, 5))
    # ... but if it overlaps write 2 it is fine
    assert lin(w(1, 0, 1), w(2, 2, 5), r(1, 4, 6))


def test_lost_write_detected() -> None:
    # write 2 was acknowledged, then every later sequential read sees the older value
    assert not lin(w(1, 0, 1), w(2, 2, 3), r(1, 4, 5), r(1, 6, 7), r(1, 8, 9))
    # an acknowledged write followed by reads of "absent"
    assert not lin(w(1, 0, 1), r(None, 2, 3))


def test_fail_ops_are_dropped() -> None:
    # a write that definitely failed must not be visible
    assert not lin(w(1, 0, 1, "fail"), r(1, 2, 3))
    assert lin(w(1, 0, 1, "fail"), r(None, 2, 3))
    assert lin(r(7, 0, 1, "fail"))  # a failed read constrains nothing


# --------------------------------------------------------------------------------------------
# concurrency and real-time order


def test_concurrent_writes_either_order() -> None:
    assert lin(w(1, 0, 10), w(2, 1, 9, process=1), r(1, 11, 12))
    assert lin(w(1, 0, 10), w(2, 1, 9, process=1), r(2, 11, 12))
    # but the final value cannot flip back afterwards
    assert not lin(w(1, 0, 10), w(2, 1, 9, process=1), r(1, 11, 12), r(2, 13, 14))
    assert not lin(w(1, 0, 10), w(2, 1, 9, process=1), r(2, 11, 12), r(1, 13, 14))


def test_concurrent_reads_see_both_values() -> None:
    # two reads concurrent with a write can observe old-then-new, even overlapping each other
    assert lin(w(1, 0, 1), w(2, 2, 10), r(1, 3, 6, process=1), r(2, 4, 5, process=2))
    # a read that completed before another started cannot see the newer value first
    assert not lin(w(1, 0, 1), w(2, 2, 10), r(2, 3, 4, process=1), r(1, 5, 6, process=2))


def test_equal_times_are_concurrent() -> None:
    # A precedes B iff A.complete_time < B.invoke_time: touching intervals are concurrent
    assert lin(w(1, 0, 5), r(None, 5, 6, process=1))
    assert not lin(w(1, 0, 5), r(None, 6, 7, process=1))
    # a zero-length op
    assert lin(w(1, 3, 3), r(1, 3, 3, process=1))
    assert lin(r(None, 3, 3, process=1), w(1, 3, 3))


# --------------------------------------------------------------------------------------------
# info (unknown outcome) ops


def test_info_write_seen_later_is_valid() -> None:
    assert lin(w(1, 5, None, "info"), r(None, 6, 7, process=1), r(1, 8, 9, process=1))
    # it may take effect long after any other op completed
    assert lin(w(1, 0, 1), w(2, 2, None, "info"), r(1, 3, 4), r(1, 50, 51), r(2, 100, 101))


def test_info_write_may_never_happen() -> None:
    assert lin(w(1, 0, None, "info"), r(None, 1, 2, process=1), r(None, 3, 4, process=1))


def test_info_write_read_before_invoked_is_invalid() -> None:
    assert not lin(r(1, 0, 1, process=1), w(1, 2, None, "info"))


def test_info_write_happens_at_most_once() -> None:
    assert lin(w(1, 0, None, "info"), r(1, 1, 2), w(2, 3, 4), r(2, 5, 6))
    assert not lin(w(1, 0, None, "info"), r(1, 1, 2), w(2, 3, 4), r(2, 5, 6), r(1, 7, 8))


def test_info_read_constrains_nothing() -> None:
    assert lin(w(1, 0, 1), r(42, 2, None, "info"))


# --------------------------------------------------------------------------------------------
# cas


def test_cas_ok_requires_expected() -> None:
    assert lin(w(1, 0, 1), cas(1, 2, 2, 3), r(2, 4, 5))
    assert not lin(w(1, 0, 1), cas(3, 2, 2, 3))
    assert not lin(w(1, 0, 1), cas(1, 2, 2, 3), r(1, 4, 5))


def test_cas_on_absent_key() -> None:
    assert lin(cas(None, 1, 0, 1), r(1, 2, 3))
    assert not lin(w(5, 0, 1), cas(None, 1, 2, 3))


def test_cas_fail_has_no_effect() -> None:
    assert lin(w(1, 0, 1), cas(1, 2, 2, 3, "fail"), r(1, 4, 5))
    assert not lin(w(1, 0, 1), cas(1, 2, 2, 3, "fail"), r(2, 4, 5))


def test_cas_info() -> None:
    # took effect
    assert lin(w(1, 0, 1), cas(1, 2, 2, None, "info"), r(2, 3, 4))
    # took effect late
    assert lin(w(1, 0, 1), cas(1, 2, 2, None, "info"), r(1, 3, 4), r(2, 5, 6))
    # cannot undo itself
    assert not lin(w(1, 0, 1), cas(1, 2, 2, None, "info"), r(2, 3, 4), r(1, 5, 6))
    # it can only take effect where its compare succeeds
    assert not lin(w(1, 0, 1), cas(5, 2, 2, None, "info"), r(2, 3, 4))
    assert lin(w(1, 0, 1), cas(5, 2, 2, None, "info"), w(5, 3, 4), r(2, 5, 6))
    # a chain of info cas
    assert lin(
        w(1, 0, 1),
        cas(1, 2, 2, None, "info"),
        cas(2, 3, 2, None, "info"),
        r(3, 10, 11),
    )


def test_concurrent_cas_only_one_wins() -> None:
    assert lin(w(0, 0, 1), cas(0, 1, 2, 5), cas(0, 2, 2, 5, "fail"), r(1, 6, 7))
    assert not lin(w(0, 0, 1), cas(0, 1, 2, 5), cas(0, 2, 3, 6), r(1, 7, 8))
    assert lin(w(0, 0, 1), cas(0, 1, 2, 5), cas(1, 2, 3, 6), r(2, 7, 8))


# --------------------------------------------------------------------------------------------
# multiple keys, budget, validation


def test_keys_are_independent() -> None:
    ops = [w(1, 0, 1, key="a"), w(2, 2, 3, key="b"), r(1, 4, 5, key="a"), r(2, 6, 7, key="b")]
    result = check_history(ops)
    assert result.ok
    assert result.key is None
    assert result.ops_checked == 4
    bad = [*ops, r(1, 8, 9, key="b")]
    result = check_history(bad)
    assert not result.ok
    assert result.key == "b"
    assert "key 'b'" in result.explanation


def test_first_failing_key_in_sorted_order() -> None:
    ops = [w(1, 0, 1, key="z"), r(2, 2, 3, key="z"), w(1, 0, 1, key="m"), r(2, 2, 3, key="m")]
    assert check_history(ops).key == "m"


def _hard_history(n: int) -> list[Op]:
    """Many concurrent writes of the same two values, one long read window: explodes."""
    ops = [w(i % 2, 0, 100, process=i) for i in range(n)]
    ops.append(r(7, 101, 102, process=n))
    return ops


def test_budget_exhaustion_is_unknown() -> None:
    result = check_history(_hard_history(40), max_states=1_000)
    assert not result.ok
    assert result.timed_out
    assert result.key == "x"
    assert "unknown" in result.explanation
    # a definite failure on another key wins over an undecided one
    ops = [*_hard_history(40), w(1, 0, 1, key="y"), r(2, 2, 3, key="y")]
    result = check_history(ops, max_states=1_000)
    assert not result.ok
    assert not result.timed_out
    assert result.key == "y"


def test_validation() -> None:
    with pytest.raises(ValueError, match="complete_time"):
        check_history([Op(0, "write", "x", 1, None, None, "ok", 0, None)])
    with pytest.raises(ValueError, match="before it is invoked"):
        check_history([w(1, 5, 4)])
    with pytest.raises(ValueError, match="check_key"):
        check_key("y", [w(1, 0, 1)])
    with pytest.raises(ValueError, match="output"):
        check_history([Op(0, "write", "x", 1, None, 1, "ok", 0, 1)])


def test_check_key_direct() -> None:
    assert check_key("x", [w(1, 0, 1), r(1, 2, 3)]).ok
    result = check_key("x", [w(1, 0, 1), r(2, 2, 3)])
    assert not result.ok
    assert result.key == "x"


# --------------------------------------------------------------------------------------------
# History recorder


def test_history_recorder() -> None:
    h = History()
    a = h.invoke(0, "write", "k", 1, time=0)
    b = h.invoke(1, "read", "k", time=1)
    c = h.invoke(2, "cas", "k", 2, 1, time=2)
    with pytest.raises(ValueError, match="outstanding"):
        h.invoke(0, "read", "k", time=3)
    h.ok(a, time=4)
    h.ok(b, time=5, output=1)
    assert [op.process for op in h.ops()] == [0, 1]  # c is still open
    h.fail(c, time=6)
    d = h.invoke(0, "write", "k", 3, time=7)
    e = h.invoke(1, "write", "k", 4, time=8)
    h.info(d, time=9)
    h.finish(time=10)
    ops = h.ops()
    assert [op.status for op in ops] == ["ok", "ok", "fail", "info", "info"]
    assert ops[1].output == 1
    assert ops[2] == Op(2, "cas", "k", 2, 1, None, "fail", 2, 6)
    assert ops[3].complete_time is None
    assert ops[4].complete_time is None
    assert len(h) == 5
    del e
    with pytest.raises(ValueError, match="already completed"):
        h.ok(a, time=11)
    with pytest.raises(ValueError, match="unknown op handle"):
        h.ok(99, time=11)


def test_history_rejects_bad_ops() -> None:
    h = History()
    with pytest.raises(ValueError):
        h.invoke(0, "read", "k", 1, time=0)
    with pytest.raises(ValueError):
        h.invoke(0, "write", "k", 1, 2, time=0)
    with pytest.raises(ValueError):
        h.invoke(0, "delete", "k", time=0)  # type: ignore[arg-type]
    a = h.invoke(0, "write", "k", 1, time=5)
    with pytest.raises(ValueError, match="before its invocation"):
        h.ok(a, time=4)
    with pytest.raises(ValueError, match="output"):
        h.ok(a, time=6, output=1)
    h.ok(a, time=6)


def test_history_ops_sorted_by_invoke_time() -> None:
    h = History()
    a = h.invoke(0, "write", "k", 1, time=5)
    b = h.invoke(1, "write", "k", 2, time=3)
    h.ok(b, time=6)
    h.ok(a, time=7)
    assert [op.invoke_time for op in h.ops()] == [3, 5]


def test_jsonl_round_trip() -> None:
    h = History()
    a = h.invoke(0, "write", "k", 1, time=0)
    b = h.invoke(1, "read", "k", time=1)
    c = h.invoke(2, "cas", "j", None, None, time=2)
    h.invoke(3, "read", "j", time=3)  # left open
    h.ok(a, time=4)
    h.ok(b, time=5, output=None)
    h.info(c)
    text = h.to_jsonl()
    assert text.count("\n") == 4
    h2 = History.from_jsonl(text + "\n\n")
    assert h2.to_jsonl() == text
    assert h2.ops() == h.ops()
    # the open op is still open in the copy
    with pytest.raises(ValueError, match="outstanding"):
        h2.invoke(3, "read", "j", time=9)
    h2.finish(time=10)
    assert [op.status for op in h2.ops()] == ["ok", "ok", "info", "info"]


def test_jsonl_errors() -> None:
    with pytest.raises(ValueError, match="line 1"):
        History.from_jsonl('{"kind": "nope"}\n')
    with pytest.raises(ValueError, match="line 2"):
        History.from_jsonl(
            '{"process":0,"kind":"read","key":"k","invoke_time":0}\n'
            '{"process":0,"kind":"read","key":"k","invoke_time":true}\n'
        )


def test_history_feeds_checker() -> None:
    h = History()
    a = h.invoke(0, "write", "k", 1, time=0)
    h.ok(a, time=1)
    b = h.invoke(0, "write", "k", 2, time=2)
    h.info(b, time=3)
    c = h.invoke(1, "read", "k", time=4)
    h.ok(c, time=5, output=2)
    h.finish(time=6)
    assert check_history(h.ops()).ok


# --------------------------------------------------------------------------------------------
# generated histories: a simulated atomic register


@dataclass
class _Pending:
    kind: OpKind
    key: str
    value: int | None
    expected: int | None
    invoke_time: int
    applied: bool = False
    output: int | None = None
    cas_ok: bool = True


def simulate(
    rng: random.Random,
    *,
    n_ops: int,
    n_procs: int,
    n_keys: int,
    n_values: int,
    p_info: float = 0.05,
    p_tie: float = 0.2,
) -> list[Op]:
    """Run ``n_procs`` concurrent clients against a real atomic register per key.

    Each op is invoked, later applied atomically (its linearization point), later completed.
    Some ops become ``info`` (applied or not), some are dropped before taking effect (``fail``);
    a cas whose compare fails is recorded as ``fail``. Time sometimes stands still, to produce
    equal timestamps.
    """
    keys = [f"k{i}" for i in range(n_keys)]
    reg: dict[str, int | None] = {}
    pending: dict[int, _Pending] = {}
    ops: list[Op] = []
    started = 0
    now = 0

    def done(p: int, status: Status, output: int | None, comp: int | None) -> None:
        op = pending.pop(p)
        ops.append(
            Op(p, op.kind, op.key, op.value, op.expected, output, status, op.invoke_time, comp)
        )

    while started < n_ops or pending:
        if rng.random() >= p_tie:
            now += 1
        idle = [p for p in range(n_procs) if p not in pending]
        if started < n_ops and idle and (not pending or rng.random() < 0.4):
            p = rng.choice(idle)
            key = rng.choice(keys)
            kind: OpKind = rng.choice(["read", "write", "write", "cas"])
            value = rng.randrange(n_values) if kind != "read" else None
            expected = None
            if kind == "cas":
                # usually compare against the current value, so that cas often succeeds
                expected = reg.get(key) if rng.random() < 0.6 else rng.randrange(n_values)
            pending[p] = _Pending(kind, key, value, expected, now)
            started += 1
            continue
        p = rng.choice(sorted(pending))
        op = pending[p]
        if not op.applied:
            roll = rng.random()
            if roll < p_info / 2:
                done(p, "info", None, None)  # never takes effect
            elif roll < p_info:
                done(p, "fail", None, now)  # definitely never takes effect
            else:
                op.applied = True
                cur = reg.get(op.key)
                if op.kind == "read":
                    op.output = cur
                elif op.kind == "write" or cur == op.expected:
                    reg[op.key] = op.value
                else:
                    op.cas_ok = False
            continue
        if rng.random() < p_info:
            done(p, "info", None, None)  # took effect, but the client never learned
        elif op.kind == "cas" and not op.cas_ok:
            done(p, "fail", None, now)
        else:
            done(p, "ok", op.output if op.kind == "read" else None, now)
    ops.sort(key=lambda op: op.invoke_time)
    return ops


history_params = st.fixed_dictionaries(
    {
        "seed": st.integers(0, 2**32 - 1),
        "n_ops": st.integers(1, 60),
        "n_procs": st.integers(1, 6),
        "n_keys": st.integers(1, 3),
        "n_values": st.integers(1, 4),
        "p_info": st.sampled_from([0.0, 0.05, 0.2]),
        "p_tie": st.sampled_from([0.0, 0.3, 0.7]),
    }
)


def _gen(params: dict[str, object]) -> list[Op]:
    p = dict(params)
    seed = p.pop("seed")
    assert isinstance(seed, int)
    return simulate(random.Random(seed), **p)  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None)
@given(history_params)
def test_simulated_register_histories_are_linearizable(params: dict[str, object]) -> None:
    ops = _gen(params)
    result = check_history(ops)
    assert result.ok, result.explanation
    assert result.ops_checked == len(ops)


@settings(max_examples=150, deadline=None)
@given(history_params)
def test_breadth_first_search_on_simulated_histories(params: dict[str, object]) -> None:
    ops = _gen(params)
    for key in sorted({op.key for op in ops}):
        key_ops = [op for op in ops if op.key == key]
        assert check_bfs(key, key_ops).ok
        reads = [i for i, op in enumerate(key_ops) if op.kind == "read" and op.status == "ok"]
        if reads:
            key_ops[reads[-1]] = replace(key_ops[reads[-1]], output=-5)
            result = check_bfs(key, key_ops)
            assert not result.ok
            assert not result.timed_out
            assert "read -> -5" in result.explanation


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(history_params, st.integers(0, 10**6))
def test_read_of_unwritten_value_is_rejected(params: dict[str, object], pick: int) -> None:
    ops = _gen(params)
    reads = [i for i, op in enumerate(ops) if op.kind == "read" and op.status == "ok"]
    if not reads:
        return
    i = reads[pick % len(reads)]
    ops[i] = replace(ops[i], output=1_000_000)  # no op ever writes this value
    result = check_history(ops)
    assert not result.ok
    assert not result.timed_out
    assert result.key == ops[i].key


# --------------------------------------------------------------------------------------------
# cross-check against brute force on small arbitrary histories


def brute_force(ops: Sequence[Op]) -> bool:
    """Try every subset of info ops and every order: the definition, verbatim."""
    live = [op for op in ops if op.status != "fail"]
    must = [op for op in live if op.status == "ok"]
    maybe = [op for op in live if op.status == "info"]
    inf = float("inf")

    def end(op: Op) -> float:
        return inf if op.status == "info" or op.complete_time is None else op.complete_time

    for size in range(len(maybe) + 1):
        for extra in combinations(maybe, size):
            for order in permutations([*must, *extra]):
                if any(
                    end(order[j]) < order[i].invoke_time
                    for i in range(len(order))
                    for j in range(i + 1, len(order))
                ):
                    continue
                state: int | None = None
                good = True
                for op in order:
                    if op.kind == "read":
                        good = state == op.output
                    elif op.kind == "write" or state == op.expected:
                        state = op.value
                    else:
                        good = False
                    if not good:
                        break
                if good:
                    return True
    return False


small_values = st.one_of(st.none(), st.integers(0, 2))


@st.composite
def arbitrary_op(draw: st.DrawFn) -> Op:
    kind: OpKind = draw(st.sampled_from(["read", "write", "cas"]))
    status: Status = draw(st.sampled_from(["ok", "ok", "ok", "info", "fail"]))
    inv = draw(st.integers(0, 8))
    comp = None if status == "info" else inv + draw(st.integers(0, 4))
    value = draw(small_values) if kind != "read" else None
    expected = draw(small_values) if kind == "cas" else None
    output = draw(small_values) if kind == "read" and status == "ok" else None
    return Op(draw(st.integers(0, 3)), kind, "x", value, expected, output, status, inv, comp)


def check_bfs(key: str, ops: Sequence[Op]) -> CheckResult:
    """Skip the depth-first search: the breadth-first fallback decides alone."""
    return _check_key(key, ops, max_states=1_000_000, dfs_budget=0)


@settings(max_examples=600, deadline=None)
@given(st.lists(arbitrary_op(), max_size=7))
def test_agrees_with_brute_force(ops: list[Op]) -> None:
    expected = brute_force(ops)
    for result in (check_key("x", ops), check_bfs("x", ops)):
        assert not result.timed_out
        assert result.ok == expected, result.explanation


@settings(max_examples=200, deadline=None)
@given(history_params.map(lambda p: {**p, "n_ops": min(int(p["n_ops"]), 7), "n_keys": 1}))
def test_simulated_small_histories_agree_with_brute_force(params: dict[str, object]) -> None:
    ops = _gen(params)
    assert brute_force(ops)
    assert check_key("k0", ops).ok
    assert check_bfs("k0", ops).ok


# --------------------------------------------------------------------------------------------
# size: a 10,000-op history


@pytest.mark.parametrize(("n_keys", "n_procs"), [(10, 5), (20, 8), (50, 10)])
def test_ten_thousand_ops(n_keys: int, n_procs: int) -> None:
    ops = simulate(
        random.Random(n_keys * 1000 + n_procs),
        n_ops=10_000,
        n_procs=n_procs,
        n_keys=n_keys,
        n_values=5,
        p_info=0.02,
    )
    assert len(ops) == 10_000
    start = time.perf_counter()
    result = check_history(ops)
    elapsed = time.perf_counter() - start
    assert result.ok, result.explanation
    assert result.ops_checked == 10_000
    assert elapsed < 30.0, f"checking 10,000 ops took {elapsed:.1f} s"
    # and a single corrupted read is caught quickly
    i = max(i for i, op in enumerate(ops) if op.kind == "read" and op.status == "ok")
    ops[i] = replace(ops[i], output=-1)
    start = time.perf_counter()
    bad = check_history(ops)
    assert not bad.ok
    assert not bad.timed_out
    assert time.perf_counter() - start < 30.0
