"""``python -m jepsen test --db raftkv --workload register --nemesis partition,kill ...``"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from jepsen.nemesis import KINDS


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m jepsen")
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("test", "run"):
        t = sub.add_parser(name, help="run one test and check it")
        t.add_argument("--db", "--target", dest="db", choices=["raftkv", "etcd"], default="raftkv")
        t.add_argument("--workload", default="register")
        t.add_argument(
            "--nemesis", default="", help=f"comma list of {','.join(KINDS)} (or 'all', 'none')"
        )
        t.add_argument("--time-limit", type=float, default=60.0, help="seconds of client load")
        t.add_argument("--rate", type=float, default=50.0, help="ops per second, all clients")
        t.add_argument("--nodes", type=int, default=3)
        t.add_argument(
            "--concurrency", type=int, default=0, help="client threads (the workload's default)"
        )
        t.add_argument("--seed", type=int, default=0)
        t.add_argument("--results", type=Path, default=Path("results"))
        t.add_argument("--interval", type=float, default=5.0, help="quiet seconds between faults")
        t.add_argument("--fault-duration", type=float, default=5.0)
        t.add_argument("--op-timeout", type=float, default=2.0)
        t.add_argument(
            "--read-timeout", type=float, default=0.0, help="read deadline (the workload's)"
        )
        t.add_argument(
            "--no-netns", action="store_true", help="loopback; partitions by peer proxies"
        )
        t.add_argument(
            "--node-arg",
            action="append",
            default=[],
            help="extra argument for every node process (repeat), e.g. "
            "--node-arg=--experimental-unsafe-local-reads",
        )
        t.add_argument("-v", "--verbose", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    a = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if a.verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    from jepsen.runner import Options, run

    nem = [x for x in a.nemesis.split(",") if x and x != "none"]
    if nem == ["all"]:
        nem = list(KINDS)
    opts = Options(
        db=a.db,
        workload=a.workload,
        nemesis=nem,
        time_limit_s=a.time_limit,
        rate=a.rate,
        nodes=a.nodes,
        concurrency=a.concurrency,
        seed=a.seed,
        results=a.results,
        interval_s=a.interval,
        fault_s=a.fault_duration,
        timeout_s=a.op_timeout,
        read_timeout_s=a.read_timeout,
        netns=False if a.no_netns else None,
        node_args=tuple(a.node_arg),
    )
    try:
        return run(opts)
    except KeyboardInterrupt:
        print("interrupted; cleaned up", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
