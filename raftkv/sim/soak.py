"""Run many seeds, optionally across worker processes, within an optional time budget.

Each run is a pure function of its seed; only this batch layer sees processes, and it reads time
only through the ``clock`` its caller injects (the CLI passes ``time.perf_counter``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from raftkv.sim.runner import RunResult, run_seed
from raftkv.sim.stats import Stats

__all__ = ["SoakReport", "run_for_soak", "soak"]


@dataclass(slots=True)
class SoakReport:
    start: int
    ticks: int
    jobs: int
    seeds_run: int = 0
    ticks_run: int = 0
    elapsed_s: float = 0.0
    totals: Stats = field(default_factory=Stats)
    """Counters summed over every seed run: what the batch exercised."""
    failures: list[RunResult] = field(default_factory=list)
    nondeterministic: list[int] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures and not self.nondeterministic

    @property
    def seeds_per_s(self) -> float:
        return self.seeds_run / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def ticks_per_s(self) -> float:
        return self.ticks_run / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def summary(self) -> str:
        return (
            f"{self.seeds_run} seeds from {self.start} x {self.ticks} ticks, {self.jobs} jobs,"
            f" {self.elapsed_s:.1f}s: {self.seeds_per_s:.2f} seeds/s,"
            f" {self.ticks_per_s:,.0f} ticks/s; {len(self.failures)} failed,"
            f" {len(self.nondeterministic)} nondeterministic"
        )

    def coverage(self) -> str:
        t = self.totals
        return (
            f"exercised: {t.elections} elections, {t.crashes} crashes, {t.partitions}"
            f" partitions, {t.snapshots_taken} snapshots taken, {t.snapshots_installed}"
            f" installed from a leader, {t.applied} entries applied, client ops"
            f" ok/fail/info {t.ops_ok}/{t.ops_fail}/{t.ops_info}, leases renewed/expired"
            f" {t.lease_renewals}/{t.lease_expiries}"
        )

    def repro_lines(self) -> list[str]:
        lines = [f"FAIL {r.error}\n  repro: {r.repro}" for r in self.failures]
        lines += [
            f"NONDETERMINISTIC seed {s}\n  repro: python -m raftkv.sim --seed {s}"
            f" --ticks {self.ticks} --check-determinism"
            for s in self.nondeterministic
        ]
        return lines


def run_for_soak(seed: int, ticks: int, check_determinism: bool) -> tuple[RunResult, bool]:
    """One seed (twice if checking determinism); returns the result and whether it repeated."""
    result = run_seed(seed, ticks)
    if not check_determinism:
        return result, True
    return result, run_seed(seed, ticks).trace_hash == result.trace_hash


def _star(args: tuple[int, int, bool]) -> tuple[RunResult, bool]:
    return run_for_soak(*args)


def soak(
    *,
    count: int | None,
    start: int | None,
    ticks: int,
    jobs: int = 1,
    time_budget: float | None = None,
    check_determinism: bool = False,
    clock: Callable[[], float] | None = None,
    progress: Callable[[str], None] | None = None,
) -> SoakReport:
    """Run seeds ``start, start+1, ...``: ``count`` of them, or until ``time_budget`` seconds
    (by ``clock``) have passed, whichever comes first. ``jobs`` 0 means one per core."""
    if start is None:
        raise ValueError("soak needs a start seed (the CLI draws one)")
    if time_budget is not None and clock is None:
        raise ValueError("a time budget needs a clock")
    import multiprocessing

    if jobs <= 0:
        jobs = multiprocessing.cpu_count()
    report = SoakReport(start=start, ticks=ticks, jobs=jobs)
    now = clock or (lambda: 0.0)
    began = now()

    def more() -> bool:
        budget_left = time_budget is None or now() - began < time_budget
        return budget_left and (count is None or report.seeds_run < count)

    def record(result: RunResult, repeated: bool) -> None:
        _record(report, result, repeated, progress, lambda: now() - began)

    if jobs == 1:
        for seed in _seeds(start, count):
            if not more():
                break
            record(*run_for_soak(seed, ticks, check_determinism))
    else:
        _parallel(jobs, _seeds(start, count), ticks, check_determinism, more, record)
    report.failures.sort(key=lambda r: r.seed)
    report.elapsed_s = now() - began
    return report


def _seeds(start: int, count: int | None) -> Iterator[int]:
    """``start, start+1, ...``: ``count`` seeds, or without end if ``count`` is None."""
    seed = start
    while count is None or seed < start + count:
        yield seed
        seed += 1


def _record(
    report: SoakReport,
    result: RunResult,
    repeated: bool,
    progress: Callable[[str], None] | None,
    elapsed: Callable[[], float],
) -> None:
    """Add one seed's run to ``report``; report failures, and every 50 seeds the totals."""
    report.seeds_run += 1
    report.ticks_run += result.stats.ticks
    totals, stats = report.totals, result.stats
    for name in stats.__slots__:
        setattr(totals, name, getattr(totals, name) + getattr(stats, name))
    if not result.ok:
        report.failures.append(result)
        if progress:
            progress(f"FAIL {result.error}\n  repro: {result.repro}")
    if not repeated:
        report.nondeterministic.append(result.seed)
    if progress and (report.seeds_run % 50 == 0):
        report.elapsed_s = elapsed()
        progress(f"[{report.seeds_run}] {report.summary()}")


def _parallel(
    jobs: int,
    seeds: Iterator[int],
    ticks: int,
    check_determinism: bool,
    more: Callable[[], bool],
    record: Callable[[RunResult, bool], None],
) -> None:
    import multiprocessing
    from multiprocessing.pool import AsyncResult

    # spawn: every worker gets its own str-hash salt, so a run that depended on set order
    # would show up as a nondeterministic seed rather than hide behind fork's shared salt.
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(jobs) as pool:
        window: list[AsyncResult[tuple[RunResult, bool]]] = []
        exhausted = False
        while True:
            while not exhausted and len(window) < 2 * jobs and more():
                seed = next(seeds, None)
                if seed is None:
                    exhausted = True
                    break
                window.append(pool.apply_async(_star, ((seed, ticks, check_determinism),)))
            if not window:
                break
            head = window.pop(0)
            record(*head.get())
            if not more():
                exhausted = True
