"""The parent of a run: spawns the worker processes, starts them together, shows progress,
and merges their reports into one (``run_bench``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import queue
import random
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, replace
from typing import Any

import click
from raftkv_cli.bench.config import BenchConfig, share
from raftkv_cli.bench.histogram import Histogram
from raftkv_cli.bench.report import latency_summary, progress_line
from raftkv_cli.bench.worker import (
    SharedState,
    Unimplemented,
    WorkerState,
    cpu_seconds_tree,
    open_channel,
)
from raftkv_cli.bench.workloads import WORKLOAD_RUNNERS

__all__ = ["merge_results", "run_bench"]


# -- in the worker process ------------------------------------------------------------------------


def _worker_entry(cfg_json: str, index: int, shared: SharedState, out: Any) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops the run
    raw = json.loads(cfg_json)
    cfg = BenchConfig(**{**raw, "endpoints": tuple(raw["endpoints"])})
    try:
        result = asyncio.run(_worker(cfg, index, shared))
    except Unimplemented as exc:
        out.put({"worker": index, "unimplemented": str(exc)})
    except Exception as exc:
        out.put({"worker": index, "fatal": f"{type(exc).__name__}: {exc}"})
    else:
        out.put(result)


async def _worker(cfg: BenchConfig, index: int, shared: SharedState) -> dict[str, Any]:
    """Open this worker's share of the connections, then run the workload over them."""
    nproc = cfg.processes
    n_conns = max(1, share(cfg.conns, nproc, index))
    n_clients = max(1, share(cfg.clients, nproc, index))
    n_conc = share(cfg.concurrency, nproc, index)
    conn_base = sum(share(cfg.conns, nproc, j) for j in range(index))
    channels = [
        open_channel(cfg.endpoints[(conn_base + i) % len(cfg.endpoints)]) for i in range(n_conns)
    ]
    try:
        for ch in channels:
            try:
                await asyncio.wait_for(ch.channel_ready(), cfg.timeout)
            except TimeoutError:
                raise RuntimeError(
                    f"cannot connect to {cfg.endpoints} in {cfg.timeout} s"
                ) from None
        chans = [channels[i % n_conns] for i in range(n_clients)]
        rng = random.Random(os.getpid() ^ int(time.time_ns()))
        run = WORKLOAD_RUNNERS[cfg.workload]
        return await run(cfg, index, shared, WorkerState(), chans, n_conc, rng)
    finally:
        for ch in channels:
            await ch.close()


# -- in the parent --------------------------------------------------------------------------------


@contextlib.contextmanager
def _bare_main() -> Iterator[None]:
    """Spawned workers import only the bench package, not the parent's ``__main__``.

    multiprocessing's spawn re-runs the parent's main script (the ``raftkv`` console script,
    so the whole CLI, storage included) in every worker unless ``__main__`` has neither a
    ``__spec__`` nor a ``__file__``. Hiding both while the workers start keeps their start-up
    short and independent of the rest of the installation.
    """
    main = sys.modules["__main__"]
    saved: dict[str, Any] = {
        k: main.__dict__[k] for k in ("__spec__", "__file__") if k in main.__dict__
    }
    main.__dict__.pop("__file__", None)
    main.__dict__["__spec__"] = None
    try:
        yield
    finally:
        main.__dict__.pop("__spec__", None)
        main.__dict__.update(saved)


def _failed(results: Sequence[dict[str, Any]]) -> bool:
    return any("fatal" in r or "unimplemented" in r for r in results)


class _WorkerPool:
    """The worker processes of one run, the state they share and the reports they send."""

    def __init__(self, cfg: BenchConfig) -> None:
        self.cfg = cfg
        nproc = cfg.processes
        ctx = mp.get_context("spawn")
        self.shared = SharedState(
            ready=ctx.Value("i", 0),
            go=ctx.Event(),
            stop=ctx.Event(),
            start_at=ctx.Value("d", 0.0),
            progress=ctx.Array("q", 2 * nproc, lock=False),
            writes_ok=ctx.Array("q", nproc, lock=False),
            writers_done=ctx.Value("i", 0),
        )
        self.out = ctx.Queue()
        cfg_json = json.dumps(asdict(cfg))
        self.procs = [
            ctx.Process(
                target=_worker_entry, args=(cfg_json, i, self.shared, self.out), daemon=True
            )
            for i in range(nproc)
        ]
        self.results: list[dict[str, Any]] = []

    def start(self) -> None:
        with _bare_main():
            for p in self.procs:
                p.start()

    def receive(self, timeout: float) -> bool:
        """Take one report if one comes within ``timeout``; False if none did."""
        try:
            self.results.append(self.out.get(timeout=timeout))
        except queue.Empty:
            return False
        return True

    def go_when_ready(self) -> float:
        """Wait until every worker is connected (its watchers created), or one failed; then
        start them all together. Returns the common start time."""
        while self.shared.ready.value < len(self.procs):
            self.receive(0.05)
            if _failed(self.results):
                break
            if any(not p.is_alive() for p in self.procs):  # no worker ends before the start
                self.receive(0.5)
                break
        self.shared.start_at.value = time.monotonic() + 0.02
        self.shared.go.set()
        return float(self.shared.start_at.value)

    def collect(self, start: float) -> None:
        """Gather every report, showing progress on stderr meanwhile."""
        cfg, tty = self.cfg, sys.stderr.isatty()
        last_print = 0.0
        while len(self.results) < len(self.procs):
            if not self.receive(0.1) and all(not p.is_alive() for p in self.procs):
                while self.receive(0.5):
                    pass
                break
            if _failed(self.results):
                self.shared.stop.set()
            now = time.monotonic()
            if cfg.progress and now - last_print >= (0.5 if tty else 5.0) and now > start:
                last_print = now
                prog = list(self.shared.progress[:])
                line = progress_line(cfg, now - start, sum(prog[0::2]), sum(prog[1::2]))
                click.echo(("\r" + line + "\033[K") if tty else line, err=True, nl=not tty)

    def stop_early(self) -> None:
        """Ctrl-C: ask the workers to stop, and take what they report within 10 s."""
        self.shared.stop.set()
        deadline = time.monotonic() + 10
        while len(self.results) < len(self.procs) and time.monotonic() < deadline:
            with contextlib.suppress(KeyboardInterrupt):
                self.receive(0.2)

    def join(self) -> list[str]:
        """Wait for the workers (killing any that hang); returns those that sent no report."""
        for p in self.procs:
            p.join(timeout=5)
            if p.is_alive():
                p.kill()
                p.join()
        reported = {r["worker"] for r in self.results}
        return [
            f"{i} (exit code {p.exitcode})" for i, p in enumerate(self.procs) if i not in reported
        ]


def run_bench(cfg: BenchConfig) -> dict[str, Any]:
    """Run one workload; returns the report (see ``format_report``). Never raises on
    UNIMPLEMENTED: the report's ``status`` is then ``"unimplemented"``."""
    cfg.check()
    nproc = min(cfg.processes, max(1, cfg.concurrency))
    if cfg.workload == "watch":
        nproc = min(cfg.processes, max(1, cfg.watchers))
    if not cfg.label and cfg.workload == "watch":  # a prefix of its own, not seen by other runs
        cfg = replace(cfg, label=f"{os.getpid()}-{time.time_ns() % 10**9}")
    cfg = replace(cfg, processes=nproc)
    pool = _WorkerPool(cfg)
    cpu_tree0 = cpu_seconds_tree()
    pool.start()
    interrupted = False
    try:
        pool.collect(pool.go_when_ready())
    except KeyboardInterrupt:
        interrupted = True
        pool.stop_early()
    finally:
        if cfg.progress and sys.stderr.isatty():
            click.echo("", err=True)
        lost = pool.join()
    cpu_tree = cpu_seconds_tree() - cpu_tree0
    return merge_results(cfg, pool.results, nproc, cpu_tree, interrupted, lost)


def _sum_extra(results: Sequence[dict[str, Any]]) -> dict[str, int]:
    """The workers' extra counters, added up (``delivered_min``: the least of them)."""
    extra: dict[str, int] = {}
    for r in results:
        for k, v in r["extra"].items():
            if k == "write_end":
                continue
            extra[k] = min(extra.get(k, v), v) if k == "delivered_min" else extra.get(k, 0) + v
    return extra


def _watch_totals(
    cfg: BenchConfig,
    results: Sequence[dict[str, Any]],
    extra: dict[str, int],
    write_hist: Histogram,
    start: float,
) -> dict[str, Any]:
    """The writes' own numbers; adds the expected and missing events to ``extra``."""
    write_wall = max(1e-9, max(r["extra"]["write_end"] for r in results) - start)
    expected = extra["writes_ok"] * cfg.watchers
    extra["expected"] = expected
    extra["missing"] = max(0, expected - extra["delivered"])
    return {
        "ok": extra["writes_ok"],
        "throughput": round(extra["writes_ok"] / write_wall, 1),
        "latency_ms": latency_summary(write_hist),
    }


def merge_results(
    cfg: BenchConfig,
    results: list[dict[str, Any]],
    nproc: int,
    cpu_tree: float,
    interrupted: bool,
    lost: Sequence[str] = (),
) -> dict[str, Any]:
    """One report from the workers' reports: histograms merged, counts added up."""
    report: dict[str, Any] = {
        "workload": cfg.workload,
        "config": {k: v for k, v in asdict(cfg).items() if k != "progress"},
        "status": "ok",
    }
    unimpl = [r["unimplemented"] for r in results if "unimplemented" in r]
    fatal = [r["fatal"] for r in results if "fatal" in r]
    if unimpl:
        report.update(status="unimplemented", error=unimpl[0])
        return report
    if fatal or len(results) < nproc:
        report.update(
            status="failed", error=fatal[0] if fatal else f"no report from worker {', '.join(lost)}"
        )
        return report
    hist, write_hist = Histogram(), Histogram()
    errors: dict[str, int] = {}
    for r in results:
        hist.merge(Histogram.from_json(r["hist"]))
        if r.get("write_hist"):
            write_hist.merge(Histogram.from_json(r["write_hist"]))
        for code, n in r["errors"].items():
            errors[code] = errors.get(code, 0) + n
    extra = _sum_extra(results)
    start = min(r["start"] for r in results)
    wall = max(1e-9, max(r["end"] for r in results) - start)
    ok = sum(r["ok"] for r in results)
    cpu = sum(r["cpu_s"] for r in results)
    report.update(
        ok=ok,
        errors=errors,
        duration_s=round(wall, 4),
        throughput=round(ok / wall, 1),
        latency_ms=latency_summary(hist),
        histogram_ms=[[round(u, 3), c] for u, c in hist.linear_buckets()],
        hist=hist.to_json(),
        generator={
            "processes": nproc,
            "cpu_s": round(cpu, 3),
            "cpu_pct": round(100 * cpu / wall, 1),
            "cpu_tree_s": round(cpu_tree, 3),
            "cores": os.cpu_count() or 1,
        },
        interrupted=interrupted,
    )
    if cfg.workload == "watch":
        report["writes"] = _watch_totals(cfg, results, extra, write_hist, start)
    if extra:
        report["extra"] = extra
    return report
