"""etcd and raftkv side by side: ``python bench/compare.py [--duration 10] [--out bench/results]``.

Starts a three-member etcd (Debian's etcd-server) and a three-member raftkv on free loopback
ports below the ephemeral range, runs the same workloads against each with ``raftkv bench``'s
load generator (put at 1, 16 and 256 in flight, range linearizable and serializable at 256, txn
compare-and-set at 64, watch fan-out, lease keep-alive), then ``etcdctl check perf --load=s``
and ``m`` against each; prints the raftkv/etcd ratios, writes JSON and markdown to ``--out``,
and stops every member it started, also on Ctrl-C or failure. A development tool, not part of
the installed ``raftkv`` command.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import grpc
from raftkv_cli.bench import BenchConfig, run_bench
from raftkv_cli.localcluster import (
    ETCD,
    RAFTKV_NODE,
    LaunchError,
    MemberSpec,
    free_ports,
    member_argv,
    member_status,
    spawn,
    stop,
    wait_ready,
)

from raftkv.pb.etcdserverpb import rpc_pb2, rpc_pb2_grpc

ETCDCTL = shutil.which("etcdctl") or "/usr/bin/etcdctl"


@dataclass(frozen=True)
class CompareCase:
    name: str
    workload: str
    concurrency: int
    processes: int = 2
    conns: int = 6
    consistency: str = "l"
    rate: float = 0.0
    watchers: int = 100
    prefill: bool = False
    leader_only: bool = False
    duration_scale: float = 1.0
    # What raftkv should reach against etcd in this case ("" for none), checked by _verdict:
    # "tput>=0.5x" (throughput at least half etcd's), "p50<=2x" (median latency at most twice
    # etcd's), "all+p99<=2x" (watch: every event delivered, p99 at most twice etcd's).
    criterion: str = ""


COMPARE_CASES = (
    CompareCase("put c=1", "put", 1, processes=1, conns=1, leader_only=True, criterion="p50<=2x"),
    CompareCase("put c=16", "put", 16),
    CompareCase("put c=256", "put", 256, criterion="tput>=0.5x"),
    CompareCase("range l c=256", "range", 256, prefill=True, criterion="tput>=0.5x"),
    CompareCase("range s c=256", "range", 256, consistency="s", criterion="tput>=0.5x"),
    CompareCase("txn CAS c=64", "txn", 64, criterion="tput>=0.5x"),
    CompareCase("watch 100x1000/s", "watch", 64, rate=1000, criterion="all+p99<=2x"),
    CompareCase("watch 100x100/s", "watch", 16, rate=100, criterion="all+p99<=2x"),
    CompareCase("lease keepalive c=64", "lease", 64),
)


# -- the two clusters -----------------------------------------------------------------------------


class ComparedCluster:
    """Members of etcd or raftkv on loopback, default flags, own data and log files."""

    def __init__(self, kind: str, root: Path, ports: Sequence[int]) -> None:
        self.kind, self.root = kind, root
        short = "e" if kind == "etcd" else "r"
        self.members = [
            MemberSpec(f"{short}{i + 1}", ports[2 * i], ports[2 * i + 1])
            for i in range(len(ports) // 2)
        ]
        self.procs: list[subprocess.Popen[bytes]] = []

    @property
    def endpoints(self) -> list[str]:
        return [m.endpoint for m in self.members]

    def log_path(self, member: MemberSpec) -> Path:
        return self.root / f"{member.name}.log"

    def start(self) -> None:
        program = [ETCD] if self.kind == "etcd" else list(RAFTKV_NODE)
        for m in self.members:
            argv = member_argv(
                program, m, self.members, data_root=self.root, token=f"bench-{self.kind}"
            )
            self.procs.append(spawn(argv, log_path=self.log_path(m)))

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        """Until the members agree on a leader and a write goes through."""
        deadline = time.monotonic() + timeout_s
        wait_ready(
            self.members,
            self.procs,
            timeout_s=timeout_s,
            describe=lambda m: f"{self.kind} member {m.name} (see {self.log_path(m)})",
        )
        while time.monotonic() < deadline:
            with grpc.insecure_channel(self.endpoints[0]) as ch:
                try:
                    rpc_pb2_grpc.KVStub(ch).Put(
                        rpc_pb2.PutRequest(key=b"bench-ready", value=b"1"), timeout=5
                    )
                    return
                except grpc.RpcError:
                    time.sleep(0.2)
        raise LaunchError(f"{self.kind} cluster takes no write in {timeout_s:.0f} s")

    def leader_endpoint(self) -> str:
        for m in self.members:
            st = member_status(m.endpoint)
            if st is not None and st.leader == st.header.member_id:
                return m.endpoint
        return self.endpoints[0]

    def cpu_seconds(self) -> float:
        """User + system CPU seconds the members have used so far, all threads, together."""
        return sum(process_cpu_seconds(p.pid) for p in self.procs)

    def rss_mib(self) -> list[float]:
        out = []
        for p in self.procs:
            try:
                text = Path(f"/proc/{p.pid}/status").read_text()
                kib = next(int(ln.split()[1]) for ln in text.splitlines() if ln.startswith("VmRSS"))
                out.append(round(kib / 1024, 1))
            except (OSError, StopIteration):
                out.append(0.0)
        return out

    def stop(self) -> None:
        stop(self.procs)


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (all its threads), from /proc; 0.0 once it is
    gone."""
    try:
        # Fields after the command name, which may itself contain spaces and parentheses:
        # state is field 3, utime 14 and stime 15 (proc(5)).
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = int(fields[11]) + int(fields[12])
    except (OSError, IndexError, ValueError):
        return 0.0
    return ticks / os.sysconf("SC_CLK_TCK")


# -- etcdctl check perf ---------------------------------------------------------------------------

_CHECK_PERF_SECONDS = 60
"""How long ``etcdctl check perf`` writes, at every load."""

_CHECK_PERF_THROUGHPUT = re.compile(r"Throughput (?:is|too low:) (\d+) writes/s")


def check_perf_writes_per_s(summary: Sequence[str]) -> int | None:
    """The writes/s that ``etcdctl check perf`` reported, pass or fail; None if it did not."""
    for line in summary:
        m = _CHECK_PERF_THROUGHPUT.search(line)
        if m:
            return int(m.group(1))
    return None


def server_cpu(cpu_s: float, wall_s: float, ops: float | None) -> dict[str, float | None]:
    """The members' CPU over a run: % of one core, and milliseconds (all members together) per
    operation."""
    return {
        "server_cpu_pct": round(100 * cpu_s / wall_s, 1) if wall_s > 0 else None,
        "server_cpu_ms_per_op": round(1000 * cpu_s / ops, 3) if ops else None,
    }


def check_perf(endpoints: Sequence[str], load: str) -> dict[str, Any]:
    """``etcdctl check perf --load=<load>``: pass/fail and its summary lines."""
    cmd = [ETCDCTL, f"--endpoints={','.join(endpoints)}", "check", "perf", f"--load={load}"]
    env = {**os.environ, "ETCDCTL_API": "3"}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)
    except subprocess.TimeoutExpired:
        return {"load": load, "passed": False, "summary": ["timed out after 240 s"]}
    text = (proc.stdout + proc.stderr).replace("\r", "\n")
    summary = [
        ln.strip() for ln in text.splitlines() if ln.strip().startswith(("PASS", "FAIL", "Error"))
    ]
    passed = proc.returncode == 0 and not any(s.startswith("FAIL") for s in summary)
    return {"load": load, "passed": passed, "exit_code": proc.returncode, "summary": summary}


# -- one row: a case on both ----------------------------------------------------------------------


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or not b:
        return None
    return round(a / b, 3)


def _metrics(r: dict[str, Any]) -> dict[str, Any]:
    if r["status"] != "ok":
        return {"status": r["status"], "error": r.get("error", "")}
    m: dict[str, Any] = {
        "status": "ok",
        "throughput": r["throughput"],
        "p50_ms": r["latency_ms"]["p50"],
        "p99_ms": r["latency_ms"]["p99"],
        "errors": sum(r["errors"].values()),
        "generator_cpu_pct": r["generator"]["cpu_pct"],
    }
    if r["workload"] == "watch":
        m["missing"] = r["extra"]["missing"]
        m["writes_per_s"] = r["writes"]["throughput"]
    return m


def _verdict(case: CompareCase, e: dict[str, Any], k: dict[str, Any]) -> str:
    """Whether raftkv (``k``) met the case's criterion against etcd (``e``)."""
    if not case.criterion:
        return ""
    if k.get("status") != "ok":
        return f"miss ({k.get('status')})"
    if e.get("status") != "ok":
        return "n/a (etcd failed)"
    tput, p50, p99 = (
        _ratio(k["throughput"], e["throughput"]),
        _ratio(k["p50_ms"], e["p50_ms"]),
        _ratio(k["p99_ms"], e["p99_ms"]),
    )
    if case.criterion == "tput>=0.5x":
        ok = tput is not None and tput >= 0.5
    elif case.criterion == "p50<=2x":
        ok = p50 is not None and p50 <= 2
    else:
        want = 0.9 * case.rate
        if min(e.get("writes_per_s", 0), k.get("writes_per_s", 0)) < want:
            return "inconclusive: writes/s below the rate (the generator or server saturated)"
        ok = k.get("missing") == 0 and p99 is not None and p99 <= 2
    return f"{'met' if ok else 'MISSED'} ({case.criterion})"


def _summary(m: dict[str, Any]) -> str:
    if m["status"] != "ok":
        return f"{m['status']}: {m.get('error', '')}"
    s = f"{m['throughput']:,.0f}/s p50 {m['p50_ms']:.2f} ms p99 {m['p99_ms']:.2f} ms"
    if "missing" in m:
        s += f", {m['missing']} missing"
    return s + f", generator {m['generator_cpu_pct']:.0f}% CPU"


def _run_case(
    i: int, case: CompareCase, clusters: dict[str, ComparedCluster], duration: float
) -> dict[str, Any]:
    row: dict[str, Any] = {"name": case.name, "workload": case.workload}
    # Alternate which system goes first, so neither always runs on a warmer (or hotter) machine.
    order = ["etcd", "raftkv"] if i % 2 == 0 else ["raftkv", "etcd"]
    for kind in order:
        cl = clusters[kind]
        eps = [cl.leader_endpoint()] if case.leader_only else cl.endpoints
        cfg = BenchConfig(
            workload=case.workload,
            endpoints=tuple(eps),
            clients=case.conns,
            conns=case.conns,
            concurrency=case.concurrency,
            processes=case.processes,
            consistency=case.consistency,
            rate=case.rate,
            watchers=case.watchers,
            prefill=case.prefill,
            duration=duration * case.duration_scale,
            label=f"{kind}-{i}",
        )
        cpu0, wall0 = cl.cpu_seconds(), time.monotonic()
        report = run_bench(cfg)
        row[kind] = _metrics(report)
        # The whole run, connection set-up and any prefill included.
        row[kind].update(
            server_cpu(cl.cpu_seconds() - cpu0, time.monotonic() - wall0, report.get("ok"))
        )
        row[f"{kind}_report"] = {k: v for k, v in report.items() if k != "hist"}
        click.echo(f"  {case.name} on {kind}: {_summary(row[kind])}", err=True)
    e, k = row["etcd"], row["raftkv"]
    row["ratio_throughput"] = _ratio(k.get("throughput"), e.get("throughput"))
    row["ratio_p50"] = _ratio(k.get("p50_ms"), e.get("p50_ms"))
    row["ratio_p99"] = _ratio(k.get("p99_ms"), e.get("p99_ms"))
    row["verdict"] = _verdict(case, e, k)
    return row


def _run_check_perf(load: str, clusters: dict[str, ComparedCluster]) -> dict[str, Any]:
    per = {}
    for kind, cl in clusters.items():
        click.echo(f"etcdctl check perf --load={load} against {kind} ...", err=True)
        cpu0, wall0 = cl.cpu_seconds(), time.monotonic()
        per[kind] = check_perf(cl.endpoints, load)
        rate = check_perf_writes_per_s(per[kind]["summary"])
        per[kind].update(
            server_cpu(
                cl.cpu_seconds() - cpu0,
                time.monotonic() - wall0,
                rate * _CHECK_PERF_SECONDS if rate else None,
            )
        )
        click.echo(f"  {'PASS' if per[kind]['passed'] else 'FAIL'}", err=True)
    return per


# -- markdown -------------------------------------------------------------------------------------


def _fmt(v: float | None, digits: int = 2) -> str:
    return "—" if v is None else f"{v:,.{digits}f}"


def _cpu_cell(m: dict[str, Any]) -> str:
    pct, per_op = m.get("server_cpu_pct"), m.get("server_cpu_ms_per_op")
    return f"{_fmt(pct, 0)}% ({_fmt(per_op, 3)} ms/op)"


def _metric_cell(m: dict[str, Any], key: str) -> str:
    if m.get("status") != "ok":
        return str(m.get("status"))
    return _fmt(m.get(key), 0 if key == "throughput" else 2)


def _table_lines(res: dict[str, Any]) -> list[str]:
    rows = [
        "| workload | etcd ops/s | raftkv ops/s | ratio | etcd p50 ms | raftkv p50 ms | ratio "
        "| etcd p99 ms | raftkv p99 ms | ratio | criterion |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for row in res["rows"]:
        e, k = row["etcd"], row["raftkv"]
        rows.append(
            f"| {row['name']} | {_metric_cell(e, 'throughput')} | "
            f"{_metric_cell(k, 'throughput')} | {_fmt(row['ratio_throughput'])} | "
            f"{_metric_cell(e, 'p50_ms')} | {_metric_cell(k, 'p50_ms')} | "
            f"{_fmt(row['ratio_p50'])} | {_metric_cell(e, 'p99_ms')} | "
            f"{_metric_cell(k, 'p99_ms')} | {_fmt(row['ratio_p99'])} | {row['verdict']} |"
        )
    return rows


def _watch_and_generator_lines(res: dict[str, Any]) -> list[str]:
    rows: list[str] = []
    watch_rows = [row for row in res["rows"] if row["workload"] == "watch"]
    if watch_rows:
        rows += ["", "Watch rows: ops/s is events delivered per second; missing events:"]
    for row in watch_rows:
        rows.append(
            f"{row['name']}: etcd {row['etcd'].get('missing', '—')}, "
            f"raftkv {row['raftkv'].get('missing', '—')}; writes/s etcd "
            f"{row['etcd'].get('writes_per_s', '—')}, raftkv "
            f"{row['raftkv'].get('writes_per_s', '—')}"
        )
    rows += ["", "Load generator CPU (% of one core, all its processes) per run:"]
    for row in res["rows"]:
        rows.append(
            f"{row['name']}: etcd {row['etcd'].get('generator_cpu_pct', '—')}%, "
            f"raftkv {row['raftkv'].get('generator_cpu_pct', '—')}%"
        )
    return rows


def _check_perf_cell(x: dict[str, Any]) -> str:
    """PASS, or the first reasons it failed (not the bare closing FAIL line)."""
    bad = [ln for ln in x["summary"] if not ln.startswith("PASS") and ln != "FAIL"]
    return "PASS" if x["passed"] else "; ".join(bad[:3])[:200] or "FAIL"


def _check_perf_and_cpu_lines(res: dict[str, Any]) -> list[str]:
    rows: list[str] = []
    if res.get("check_perf"):
        rows += ["", "| etcdctl check perf | etcd | raftkv |", "|---|---|---|"]
        for load, per in res["check_perf"].items():
            rows.append(
                f"| --load={load} | {_check_perf_cell(per['etcd'])} | "
                f"{_check_perf_cell(per['raftkv'])} |"
            )
    cpu_lines = [
        f"{row['name']}: etcd {_cpu_cell(row['etcd'])}, raftkv {_cpu_cell(row['raftkv'])}"
        for row in res["rows"]
        if "server_cpu_pct" in row["etcd"] or "server_cpu_pct" in row["raftkv"]
    ]
    cpu_lines += [
        f"check perf --load={load}: etcd {_cpu_cell(per['etcd'])}, "
        f"raftkv {_cpu_cell(per['raftkv'])}"
        for load, per in res.get("check_perf", {}).items()
        if "server_cpu_pct" in per["etcd"] or "server_cpu_pct" in per["raftkv"]
    ]
    if cpu_lines:
        rows += [
            "",
            "Members' CPU per run (all three together, whole run; % of one core, ms per "
            "operation):",
            *cpu_lines,
        ]
    return rows


def compare_markdown(res: dict[str, Any]) -> str:
    rows = [
        f"Measured {res['date']} on {res['machine']}, command: `{res['command']}`",
        "",
        *_table_lines(res),
        *_watch_and_generator_lines(res),
        *_check_perf_and_cpu_lines(res),
    ]
    rss = res.get("rss_mib", {})
    if rss:
        rows += [
            "",
            f"RSS after the runs (MiB per member): etcd {rss.get('etcd')}, raftkv "
            f"{rss.get('raftkv')}",
        ]
    return "\n".join(rows) + "\n"


# -- the whole run --------------------------------------------------------------------------------


def _write_results(res: dict[str, Any], out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    json_path, md_path = out_dir / f"compare-{stamp}.json", out_dir / f"compare-{stamp}.md"
    json_path.write_text(json.dumps(res, indent=2) + "\n")
    md_path.write_text(compare_markdown(res))
    res["files"] = [str(json_path), str(md_path)]


def compare_run(
    duration: float,
    out_dir: Path,
    check_loads: Sequence[str],
    only: Sequence[str],
    keep: bool,
    command: str,
) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="raftkv-compare-"))
    ports = free_ports(12)  # one call: twelve distinct ports for both clusters
    clusters = {
        "etcd": ComparedCluster("etcd", root, ports[:6]),
        "raftkv": ComparedCluster("raftkv", root, ports[6:]),
    }
    failed = True

    def on_term(_sig: int, _frame: Any) -> None:
        raise KeyboardInterrupt  # stop the members on SIGTERM as on Ctrl-C

    old = signal.signal(signal.SIGTERM, on_term)
    res: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.node()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, grpcio {grpc.__version__}",
        "command": command,
        "rows": [],
        "check_perf": {},
    }
    try:
        for name, c in clusters.items():
            click.echo(f"starting {name} on {', '.join(c.endpoints)} (data in {root})", err=True)
            c.start()
        for c in clusters.values():
            c.wait_ready()
        cases = [c for c in COMPARE_CASES if not only or any(o in c.name for o in only)]
        res["rows"] = [_run_case(i, case, clusters, duration) for i, case in enumerate(cases)]
        for load in check_loads:
            res["check_perf"][load] = _run_check_perf(load, clusters)
        res["rss_mib"] = {kind: cl.rss_mib() for kind, cl in clusters.items()}
        failed = False
    finally:
        for c in clusters.values():
            c.stop()
        signal.signal(signal.SIGTERM, old)
        if keep or failed:
            click.echo(f"logs and data kept in {root}", err=True)
        else:
            shutil.rmtree(root, ignore_errors=True)
    _write_results(res, out_dir)
    return res


@click.command("compare")
@click.option("--duration", default=10.0, show_default=True, help="Seconds per workload run.")
@click.option(
    "--out",
    "out_dir",
    default="bench/results",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Where the JSON and markdown results go.",
)
@click.option(
    "--check-perf",
    "check_loads",
    default="s,m",
    show_default=True,
    help="etcdctl check perf loads to run against each ('' for none).",
)
@click.option("--only", default="", help="Comma-separated substrings of workload names to run.")
@click.option("--keep", is_flag=True, help="Keep the data directories and logs.")
def compare_command(
    duration: float, out_dir: Path, check_loads: str, only: str, keep: bool
) -> None:
    """Start a 3-member etcd and a 3-member raftkv here, run the same workloads against both,
    print the raftkv/etcd ratios and write them to --out (JSON and markdown)."""
    for exe in (ETCD, ETCDCTL):
        if not Path(exe).exists():
            raise click.ClickException(f"{exe} not found: install Debian's etcd-server/etcd-client")
    command = " ".join(["python bench/compare.py", *sys.argv[1:]])
    try:
        res = compare_run(
            duration,
            out_dir,
            [x for x in check_loads.split(",") if x],
            [x for x in only.split(",") if x],
            keep,
            command,
        )
    except LaunchError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(compare_markdown(res))
    click.echo("written: " + ", ".join(res["files"]), err=True)


if __name__ == "__main__":
    compare_command(prog_name="bench/compare.py")
