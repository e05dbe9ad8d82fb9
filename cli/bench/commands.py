"""The ``raftkv bench`` command group: one command per workload, with etcd benchmark's option
names where it has them."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

import click
from raftkv_cli.bench.config import EXIT_UNIMPLEMENTED, BenchConfig
from raftkv_cli.bench.report import format_report
from raftkv_cli.bench.runner import run_bench

__all__ = ["bench_group"]


def _emit(report: dict[str, Any], write_out: str) -> None:
    """Print the report; exit 3 if the server lacks the service, 1 if the run failed."""
    if write_out == "json":
        click.echo(json.dumps({k: v for k, v in report.items() if k != "hist"}, indent=2))
    else:
        click.echo(format_report(report))
    if report["status"] == "unimplemented":
        sys.exit(EXIT_UNIMPLEMENTED)
    if report["status"] != "ok":
        sys.exit(1)


def _common_options(f: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option(
            "--endpoints",
            default="127.0.0.1:2379",
            show_default=True,
            help="Comma-separated host:port list; connections go round-robin over them.",
        ),
        click.option("--clients", default=1, show_default=True, help="gRPC client stubs."),
        click.option("--conns", default=1, show_default=True, help="TCP connections (channels)."),
        click.option(
            "--concurrency", default=1, show_default=True, help="Requests in flight, in total."
        ),
        click.option("--key-size", default=8, show_default=True, help="Key size in bytes."),
        click.option("--val-size", default=256, show_default=True, help="Value size in bytes."),
        click.option("--key-space", default=10_000, show_default=True, help="Distinct keys."),
        click.option("--sequential-keys", is_flag=True, help="Keys in order, not at random."),
        click.option("--prefix", default="", help="Key prefix."),
        click.option(
            "--total", default=0, help="Operations to run (default 10000 without --duration)."
        ),
        click.option("--duration", default=0.0, help="Seconds to run (instead of --total)."),
        click.option("--rate", default=0.0, help="Operations per second, 0: unlimited."),
        click.option("--processes", default=1, show_default=True, help="Load generator processes."),
        click.option(
            "--timeout", default=10.0, show_default=True, help="Per-request deadline (s)."
        ),
        click.option(
            "-w",
            "--write-out",
            type=click.Choice(["simple", "json"]),
            default="simple",
            show_default=True,
        ),
        click.option("--quiet", is_flag=True, help="No progress line on stderr."),
    ]
    for opt in reversed(options):
        f = opt(f)
    return f


def _config(workload: str, params: dict[str, Any]) -> BenchConfig:
    total, duration = int(params.pop("total")), float(params.pop("duration"))
    if total <= 0 and duration <= 0:
        total = 10_000
    params.pop("write_out")  # how to print the report, not part of the run
    quiet = params.pop("quiet")
    endpoints = tuple(e.strip() for e in str(params.pop("endpoints")).split(",") if e.strip())
    return BenchConfig(
        workload=workload,
        endpoints=endpoints,
        total=total,
        duration=duration,
        progress=not quiet,
        **params,
    )


def _workload_command(workload: str, help_text: str, extra: Sequence[Any] = ()) -> click.Command:
    def callback(**params: Any) -> None:
        write_out = params["write_out"]
        cfg = _config(workload, dict(params))
        cfg.check()
        _emit(run_bench(cfg), write_out)

    cmd: Callable[..., Any] = _common_options(callback)
    for opt in reversed(list(extra)):
        cmd = opt(cmd)
    return click.command(workload, help=help_text)(cmd)


bench_group = click.Group(
    "bench",
    help="Load generator for etcd v3 API endpoints (raftkv or etcd).",
)
_CONSISTENCY = click.option(
    "--consistency",
    type=click.Choice(["l", "s"]),
    default="l",
    show_default=True,
    help="l: linearizable, s: serializable.",
)
_PREFILL = click.option("--prefill", is_flag=True, help="Write every key once before the run.")
bench_group.add_command(_workload_command("put", "Put a value on random keys."))
bench_group.add_command(
    _workload_command("range", "Range one random key.", [_CONSISTENCY, _PREFILL])
)
bench_group.add_command(
    _workload_command(
        "txn",
        "Compare-and-set: read a key's mod_revision, then Txn(MOD == rev ? put).",
        [_CONSISTENCY, _PREFILL],
    )
)
bench_group.add_command(
    _workload_command(
        "watch",
        "Watch fan-out: --watchers streams on a prefix; writers put at --rate; measures "
        "write-to-delivery latency and counts delivered events.",
        [
            click.option("--watchers", default=100, show_default=True),
            click.option(
                "--drain-timeout",
                default=5.0,
                show_default=True,
                help="Stop waiting for missing events after this long without progress.",
            ),
        ],
    )
)
bench_group.add_command(
    _workload_command("lease", "LeaseKeepAlive round trips, one stream per in-flight request.")
)
