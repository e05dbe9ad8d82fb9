"""Run one seed end to end: the safety phase with faults, the liveness phase, and the
linearizability check. Pure: no clocks, threads or processes (the CLI adds those)."""

from __future__ import annotations

import traceback
from dataclasses import dataclass, field

from raftkv.sim.chooser import SeededChooser
from raftkv.sim.cluster import SimCluster
from raftkv.sim.node import SimulationError
from raftkv.sim.options import SimOptions
from raftkv.sim.stats import Stats

__all__ = ["DEFAULT_TICKS", "RunResult", "repro_line", "run_seed"]

DEFAULT_TICKS = 2000


def repro_line(seed: int, ticks: int) -> str:
    return f"python -m raftkv.sim --seed {seed} --ticks {ticks}"


@dataclass(frozen=True, slots=True)
class RunResult:
    seed: int
    ticks: int
    ok: bool
    error: str | None
    trace_hash: str
    stats: Stats = field(default_factory=Stats)
    ops_checked: int = 0
    recent: tuple[str, ...] = ()
    """The last actions before a failure."""

    @property
    def repro(self) -> str:
        return repro_line(self.seed, self.ticks)

    def summary(self) -> str:
        s = self.stats
        verdict = "ok" if self.ok else f"FAIL: {self.error}"
        return (
            f"seed {self.seed}: {verdict} | ticks={s.ticks} elections={s.elections}"
            f" crashes={s.crashes} partitions={s.partitions}"
            f" snapshots={s.snapshots_taken}/{s.snapshots_installed}"
            f" applied={s.applied} ops ok/fail/info={s.ops_ok}/{s.ops_fail}/{s.ops_info}"
            f" trace={self.trace_hash[:16]}"
        )


def run_seed(
    seed: int,
    ticks: int = DEFAULT_TICKS,
    opts: SimOptions | None = None,
    *,
    verbose: bool = False,
    keep: int | None = 60,
) -> RunResult:
    """Simulate ``ticks`` ticks of the swarm world of ``seed``, then converge and check.
    ``verbose`` records every message, Ready and client op; on failure the last ``keep``
    recorded actions (all if None) come back in ``recent``."""
    if opts is None:
        opts = SimOptions.swarm(seed)
    cluster = SimCluster(opts, SeededChooser(seed))
    cluster.set_verbose(verbose)
    if keep is None:
        cluster.recent_limit = 1 << 62
    error: str | None = None
    ops_checked = 0
    try:
        for _ in range(ticks):
            cluster.run_tick()
        cluster.converge(opts.liveness_ticks)
        cluster.drain_leases()
        result = cluster.check_history()
        ops_checked = result.ops_checked
        if not result.ok:
            what = "undecided (checker budget)" if result.timed_out else "not linearizable"
            error = f"history {what}: key {result.key}: {result.explanation}"
    except SimulationError as exc:
        error = str(exc) if str(exc).startswith("tick ") else f"tick {cluster.now}: {exc}"
    except Exception as exc:  # the core (or the simulator) crashed: also a failure
        frames = traceback.extract_tb(exc.__traceback__)
        where = f"{frames[-1].filename}:{frames[-1].lineno}" if frames else "?"
        error = f"tick {cluster.now}: {type(exc).__name__}: {exc} (at {where})"
    trace = cluster.fingerprint()
    return RunResult(
        seed=seed,
        ticks=ticks,
        ok=error is None,
        error=error.replace("\n", " | ") if error else None,
        trace_hash=trace,
        stats=cluster.stats,
        ops_checked=ops_checked,
        recent=tuple(cluster.recent[-keep:] if keep else cluster.recent) if error else (),
    )
