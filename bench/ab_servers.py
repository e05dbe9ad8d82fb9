"""Two builds of the raftkv server, measured in alternating runs on this machine.

    python bench/ab_servers.py --a /path/to/old/venv/bin/raftkv --b raftkv \\
        --workload put256 --pairs 4 --duration 10
    python bench/ab_servers.py --a ... --b ... --workload checkperf-m --pairs 4

Each run starts a fresh three-member cluster with the build's own ``raftkv cluster up`` (so its
members run that build's server), drives the same load at it with this checkout's load
generator (``raftkv bench put`` at 256 in flight, or the real ``etcdctl check perf --load=m``),
and reads the members' CPU seconds from /proc before and after. Runs alternate A B B A ..., so
a machine that gets busier or quieter during the series weighs on both builds alike. CPU per
operation is the number to compare on a shared machine: it is much steadier than throughput.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ETCDCTL = shutil.which("etcdctl") or "/usr/bin/etcdctl"
_ENV = {**os.environ, "ETCDCTL_API": "3"}


@dataclass
class Run:
    side: str
    ops: float
    seconds: float
    cpu_s: float
    verdict: str = ""

    @property
    def cpu_ms_per_op(self) -> float:
        return 1000 * self.cpu_s / self.ops if self.ops else float("nan")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` (all its threads); 0.0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found.extend(int(c) for c in text)
    return found


class Cluster:
    """A three-member cluster started by one build's ``raftkv cluster up``."""

    def __init__(self, exe: str, base_port: int) -> None:
        self.dir = tempfile.mkdtemp(prefix="raftkv-ab-")
        cmd = [exe, "cluster", "up", "--data-dir", self.dir, "--base-port", str(base_port)]
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        self.endpoints = ",".join(f"127.0.0.1:{base_port + 2 * i}" for i in range(3))
        try:
            self._wait_for_leader()
            self.members = children(self.proc.pid)
            if len(self.members) != 3:
                raise RuntimeError(f"expected 3 members, found {self.members}")
        except BaseException:
            self.stop()
            raise

    def _wait_for_leader(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            out = subprocess.run(
                [ETCDCTL, "--endpoints", self.endpoints, "endpoint", "status", "-w", "json"],
                capture_output=True,
                text=True,
                env=_ENV,
                check=False,
            )
            # etcdctl's JSON leaves out zero fields: no "leader" while there is none.
            statuses = json.loads(out.stdout) if out.returncode == 0 else []
            if statuses and all(s["Status"].get("leader") for s in statuses):
                return
            time.sleep(0.3)
        raise RuntimeError("the cluster elected no leader in 30 s")

    def cpu(self) -> float:
        return sum(cpu_seconds(pid) for pid in self.members)

    def stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGINT)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def put256(cluster: Cluster, duration: float) -> tuple[float, str]:
    args = ["bench", "put", "--endpoints", cluster.endpoints, "--concurrency", "256"]
    args += ["--processes", "2", "--conns", "6", "--duration", str(duration), "-w", "json"]
    out = subprocess.run(
        [shutil.which("raftkv") or "raftkv", *args, "--quiet"],
        capture_output=True,
        text=True,
        check=True,
    )
    report = json.loads(out.stdout)
    ops = float(report["ok"])
    return ops, f"{ops / duration:.0f} puts/s"


def check_perf_m(cluster: Cluster, _duration: float) -> tuple[float, str]:
    out = subprocess.run(
        [ETCDCTL, "--endpoints", cluster.endpoints, "check", "perf", "--load=m"],
        capture_output=True,
        text=True,
        env=_ENV,
        check=False,
    )
    text = out.stdout + out.stderr
    match = re.search(r"Throughput (?:is|too low:) (\d+) writes/s", text)
    if not match:
        raise RuntimeError(f"check perf gave no throughput:\n{text}")
    writes_per_s = int(match.group(1))
    verdict = "PASS" if "FAIL" not in text else "FAIL"
    return writes_per_s * 60.0, f"{writes_per_s} writes/s {verdict}"


WORKLOADS = {"put256": put256, "checkperf-m": check_perf_m}


def ports_free(base_port: int) -> bool:
    for port in range(base_port, base_port + 6):
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return False
    return True


def one_run(side: str, exe: str, workload: str, duration: float, port: int) -> Run:
    if not ports_free(port):
        raise RuntimeError(f"ports {port}-{port + 5} are in use: is an earlier cluster running?")
    cluster = Cluster(exe, port)
    try:
        before, started = cluster.cpu(), time.monotonic()
        ops, verdict = WORKLOADS[workload](cluster, duration)
        seconds = time.monotonic() - started
        return Run(side, ops, seconds, cluster.cpu() - before, verdict)
    finally:
        cluster.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--a", required=True, help="build A's raftkv executable")
    p.add_argument("--b", required=True, help="build B's raftkv executable")
    p.add_argument("--workload", choices=sorted(WORKLOADS), default="put256")
    p.add_argument("--pairs", type=int, default=3)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--base-port", type=int, default=24100)
    args = p.parse_args()
    order = []
    for i in range(args.pairs):
        order += ["a", "b"] if i % 2 == 0 else ["b", "a"]
    runs: list[Run] = []
    for n, side in enumerate(order):
        exe = args.a if side == "a" else args.b
        port = args.base_port + 10 * (n % 2)
        run = one_run(side, exe, args.workload, args.duration, port)
        runs.append(run)
        print(
            f"{n + 1:2d} {side.upper()}: {run.verdict:>20}  {run.ops:9.0f} ops"
            f"  members' CPU {run.cpu_s:6.2f} s = {run.cpu_ms_per_op:.3f} ms/op",
            flush=True,
        )
    for side in ("a", "b"):
        per_op = [r.cpu_ms_per_op for r in runs if r.side == side]
        print(
            f"{side.upper()}: members' CPU per op mean {statistics.mean(per_op):.3f} ms"
            f" (runs: {', '.join(f'{x:.3f}' for x in per_op)})"
        )


if __name__ == "__main__":
    sys.exit(main())
