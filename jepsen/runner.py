"""One test run: cluster up, clients + nemesis for the time limit, heal, final reads, check.

Everything the run starts is torn down in ``finally`` (and by atexit / SIGTERM / SIGHUP), also
when the run fails or is interrupted: node processes are SIGKILLed, namespaces (with their
veths and iptables rules) deleted.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import random
import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from jepsen.client import Client
from jepsen.db import Cluster, Node
from jepsen.history import Recorder
from jepsen.nemesis import NETWORK_KINDS, Nemesis
from jepsen.plot import write_plots
from jepsen.registry import WORKLOADS
from jepsen.workloads import Worker, Workload

log = logging.getLogger("jepsen")

__all__ = ["Options", "run"]


@dataclass
class Options:
    db: str = "raftkv"
    workload: str = "register"
    nemesis: list[str] = field(default_factory=list)
    time_limit_s: float = 60.0
    rate: float = 50.0
    nodes: int = 3
    concurrency: int = 0  # 0: the workload's workers per node
    seed: int = 0  # 0: random
    results: Path = Path("results")
    interval_s: float = 5.0
    fault_s: float = 5.0
    timeout_s: float = 2.0
    read_timeout_s: float = 0.0  # 0: the workload's default
    heartbeat_ms: int = 50
    election_ms: int = 500
    netns: bool | None = None  # None: when root
    node_args: tuple[str, ...] = ()


def _say(msg: str) -> None:
    print(msg, flush=True)


def _verdict_text(opts: Options, res: dict[str, Any], counts: dict[str, int]) -> str:
    state = "VALID" if res["valid"] else ("UNKNOWN" if res.get("unknown") else "INVALID")
    lines = [
        f"{state}: {opts.workload} on {opts.db} x{opts.nodes}, nemesis "
        f"{','.join(opts.nemesis) or 'none'}, {opts.time_limit_s:g}s at {opts.rate:g}/s",
        "ops: " + ", ".join(f"{k} {v}" for k, v in counts.items()),
        "stats: " + ", ".join(f"{k} {v}" for k, v in res.get("stats", {}).items()),
    ]
    totals = res.get("anomaly_totals", {})
    if totals:
        lines.append("anomalies: " + ", ".join(f"{k} {v}" for k, v in totals.items()))
    if res.get("summary"):
        lines.append(res["summary"])
    for kind, items in res.get("anomalies", {}).items():
        lines.append(f"\n== {kind} ({totals.get(kind, len(items))} in all, {len(items)} shown)")
        for item in items:
            lines.append(item["explanation"])
    return "\n".join(lines) + "\n"


def run(opts: Options) -> int:
    """Returns 0 if valid, 1 on an anomaly, 2 if unknown or the run itself failed."""
    if opts.workload not in WORKLOADS:
        raise SystemExit(f"unknown workload {opts.workload!r}; known: {', '.join(WORKLOADS)}")
    seed = opts.seed or random.randrange(1, 2**31)
    use_netns = (os.geteuid() == 0) if opts.netns is None else opts.netns
    stamp = time.strftime("%Y%m%dT%H%M%S")
    out = opts.results / f"{stamp}-{opts.db}-{opts.workload}-{os.getpid()}"
    out.mkdir(parents=True, exist_ok=True)
    cluster = Cluster(
        opts.db,
        opts.nodes,
        out / "nodes",
        use_netns,
        opts.heartbeat_ms,
        opts.election_ms,
        tuple(opts.node_args),
    )
    atexit.register(cluster.teardown)

    def on_signal(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGHUP)}
    _say(f"jepsen: {opts.db} x{opts.nodes}, workload {opts.workload}, seed {seed}, out {out}")
    workload = None
    try:
        _start_cluster(opts, cluster, use_netns)
        rec = Recorder()
        endpoints = {n.name: n.endpoint for n in cluster.nodes}
        workload = WORKLOADS[opts.workload](rec, endpoints, seed)
        if opts.read_timeout_s > 0:
            workload.read_timeout_s = opts.read_timeout_s
        workload.setup()
        nemesis = Nemesis(
            cluster, opts.nemesis, rec.now, seed, interval_s=opts.interval_s, fault_s=opts.fault_s
        )
        _drive(opts, seed, cluster, rec, workload, nemesis)
        _say("healing; final reads")
        nemesis.stop()
        try:
            cluster.wait_ready(timeout_s=60)
        except (TimeoutError, RuntimeError) as e:
            _say(f"warning: cluster did not recover: {e}")
        workload.final()
        rec.finish()
        res = _check_and_write(opts, seed, out, rec, workload, nemesis)
        if res["valid"]:
            return 0
        return 2 if res.get("unknown") else 1
    finally:
        if workload is not None:
            workload.stop()
        cluster.teardown()
        for s, h in old.items():
            signal.signal(s, h)


def _start_cluster(opts: Options, cluster: Cluster, use_netns: bool) -> None:
    cluster.setup()
    if NETWORK_KINDS & set(opts.nemesis):
        cluster.enable_proxies()  # no-op with netns: iptables does it there
    cluster.start_all()
    cluster.wait_ready()
    net = "netns + iptables" if use_netns else "loopback"
    if cluster.proxies is not None:
        net += " + blackholing peer proxies"
    _say(f"cluster ready ({net})")


def _check_and_write(
    opts: Options,
    seed: int,
    out: Path,
    rec: Recorder,
    workload: Workload,
    nemesis: Nemesis,
) -> dict[str, Any]:
    """Check the history; write history, verdict and plots under ``out``."""
    (out / "history.jsonl").write_text(rec.to_jsonl())
    _say(f"checking {len(rec.ops)} ops")
    t0 = time.monotonic()
    res = workload.check(rec.ops)
    res["checker_seconds"] = round(time.monotonic() - t0, 3)
    counts = {s: sum(o.status == s for o in rec.ops) for s in ("ok", "fail", "info")}
    res["ops"] = counts
    res["nemesis"] = nemesis.windows
    res["compactions"] = len(nemesis.events)
    res["options"] = {k: str(v) for k, v in asdict(opts).items()}
    res["seed"] = seed
    (out / "verdict.json").write_text(json.dumps(res, indent=2, default=str))
    text = _verdict_text(opts, res, counts)
    (out / "verdict.txt").write_text(text)
    write_plots(out, rec.ops, nemesis.windows, f"{opts.workload} on {opts.db}", text)
    _say(text.rstrip())
    _say(f"results: {out}")
    return res


def _drive(
    opts: Options,
    seed: int,
    cluster: Cluster,
    rec: Recorder,
    workload: Workload,
    nemesis: Nemesis,
) -> None:
    deadline = time.monotonic() + opts.time_limit_s
    stop = threading.Event()
    concurrency = opts.concurrency or workload.workers_per_node * opts.nodes
    period = concurrency / opts.rate if opts.rate > 0 else 0.0
    threads = [
        threading.Thread(
            target=_work,
            args=(opts, i, concurrency, period, seed, cluster.nodes[i % len(cluster.nodes)]),
            kwargs={"workload": workload, "stop": stop},
            daemon=True,
        )
        for i in range(concurrency)
    ]
    for t in threads:
        t.start()
    nemesis.start()
    last = 0.0
    while time.monotonic() < deadline:
        time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
        if time.monotonic() - last >= 5:
            last = time.monotonic()
            ops = list(rec.ops)
            c = {s: sum(o.status == s for o in ops) for s in ("ok", "fail", "info")}
            active = [w["kind"] for w in nemesis.windows[-1:]]
            _say(
                f"  t={rec.now():5.1f}s ops {len(ops)} ok {c['ok']} fail {c['fail']} "
                f"info {c['info']} | last fault {active[0] if active else '-'}"
            )
    stop.set()
    for t in threads:
        t.join(timeout=opts.timeout_s * 3 + 5)


def _work(
    opts: Options,
    i: int,
    concurrency: int,
    period: float,
    seed: int,
    node: Node,
    *,
    workload: Workload,
    stop: threading.Event,
) -> None:
    """One client thread, bound to one node. While the nemesis has the node killed no
    operation is invoked at all: the harness knows it would not reach a server."""
    rng = random.Random(seed * 1000 + i)
    with Client(node.endpoint, timeout_s=opts.timeout_s) as c:
        w = Worker(i, concurrency, node.name, c, rng)
        next_t = time.monotonic() + rng.uniform(0, period)
        while not stop.is_set():
            delay = next_t - time.monotonic()
            if delay > 0 and stop.wait(delay):
                return
            next_t = max(next_t + period * rng.uniform(0.5, 1.5), time.monotonic())
            if not node.alive:
                continue
            try:
                workload.op(w)
            except Exception:
                log.exception("worker %d crashed", i)
                return
