"""``python -m raftkv.sim``: run one seed, or soak many across processes.

    python -m raftkv.sim --seed 42                 one seed: print its world and the verdict
    python -m raftkv.sim --seed 42 --trace         ... and the last actions on failure
    python -m raftkv.sim --seed 42 --trace --trace-file t.log   ... all of them, to a file
    python -m raftkv.sim --seeds 1000 --jobs 2     soak 1000 seeds from a random start
    python -m raftkv.sim --seeds 500 --start 7     ... from seed 7
    python -m raftkv.sim --time-budget 60          soak for a minute
    python -m raftkv.sim --seed 42 --check-determinism

Exits non-zero if any seed fails, printing one repro line per failure.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from raftkv.sim.options import SimOptions
from raftkv.sim.runner import DEFAULT_TICKS, run_seed
from raftkv.sim.soak import SoakReport, soak


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m raftkv.sim", description=__doc__.split("\n")[0])
    p.add_argument("--seed", type=int, help="run exactly this seed")
    p.add_argument("--seeds", type=int, help="soak this many seeds")
    p.add_argument("--start", type=int, help="first seed of a soak (default: random)")
    p.add_argument("--ticks", type=int, default=DEFAULT_TICKS, help="ticks per seed")
    p.add_argument("--time-budget", type=float, help="stop starting seeds after SEC seconds")
    p.add_argument("--jobs", type=int, default=1, help="worker processes (0: one per core)")
    p.add_argument("--check-determinism", action="store_true", help="run each seed twice")
    p.add_argument("--trace", action="store_true", help="print recent actions on failure")
    p.add_argument("--trace-lines", type=int, default=200, help="how many (default 200)")
    p.add_argument("--trace-file", help="write the whole verbose trace of a failure here")
    p.add_argument("--quiet", action="store_true", help="only print failures and the total")
    return p.parse_args(argv)


def _one(args: argparse.Namespace) -> int:
    seed: int = args.seed
    opts = SimOptions.swarm(seed)
    print(f"seed {seed}, {args.ticks} ticks; swarm options:")
    print("  " + opts.describe().replace("\n", "\n  "))
    began = time.perf_counter()
    result = run_seed(seed, args.ticks)
    elapsed = time.perf_counter() - began
    print(result.summary())
    print(f"{elapsed:.2f}s, {result.stats.ticks / elapsed:,.0f} ticks/s")
    code = 0
    if args.check_determinism:
        again = run_seed(seed, args.ticks)
        if again.trace_hash != result.trace_hash:
            print(f"NONDETERMINISM: trace {result.trace_hash} then {again.trace_hash}")
            code = 1
        else:
            print(f"deterministic: trace {result.trace_hash}")
    if not result.ok:
        if args.trace:
            # Runs replay exactly, so a verbose rerun shows what led to the failure.
            keep = None if args.trace_file else args.trace_lines
            verbose = run_seed(seed, args.ticks, verbose=True, keep=keep)
            if args.trace_file:
                with open(args.trace_file, "w") as out:
                    out.write("\n".join(verbose.recent) + "\n")
                print(f"full trace ({len(verbose.recent)} actions) in {args.trace_file}")
            else:
                print(f"last {len(verbose.recent)} actions (verbose rerun):")
                for line in verbose.recent:
                    print("  " + line)
        print(f"repro: {result.repro}")
        code = 1
    return code


def _report(report: SoakReport) -> int:
    print(report.summary())
    print(report.coverage())
    for line in report.repro_lines():
        print(line)
    return 0 if report.ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    if args.seed is not None:
        return _one(args)
    if args.seeds is None and args.time_budget is None:
        print("give --seed S, --seeds N or --time-budget SEC", file=sys.stderr)
        return 2
    start = args.start if args.start is not None else time.time_ns() % 1_000_000_007
    print(f"soak: starting at seed {start} (replay with --start {start})")
    report = soak(
        count=args.seeds,
        start=start,
        ticks=args.ticks,
        jobs=args.jobs,
        time_budget=args.time_budget,
        check_determinism=args.check_determinism,
        clock=time.perf_counter,
        progress=None if args.quiet else print,
    )
    return _report(report)


if __name__ == "__main__":
    sys.exit(main())
