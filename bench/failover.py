"""Leader failover, raftkv vs etcd: SIGKILL the leader, time until the first successful write.

A benchmark script, not a test: it prints numbers. Both clusters use the same heartbeat and
election timeouts (etcd's defaults, 100 ms / 1000 ms) and the same client (etcdctl 3.4).

    python bench/failover.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ETCDCTL = shutil.which("etcdctl") or "/usr/bin/etcdctl"
ETCD = shutil.which("etcd") or "/usr/bin/etcd"


def etcdctl(
    endpoints: list[str], *args: str, timeout: float = 3.0
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [ETCDCTL, f"--endpoints={','.join(endpoints)}", "--command-timeout=1s", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ, ETCDCTL_API="3"),
        check=False,
    )


def start(db: str, workdir: Path, base: int) -> tuple[list[subprocess.Popen[bytes]], list[str]]:
    names = [f"n{i}" for i in range(3)]
    peers = {n: f"http://127.0.0.1:{base + 10 * i + 1}" for i, n in enumerate(names)}
    cluster = ",".join(f"{n}={u}" for n, u in peers.items())
    procs, clients = [], []
    for i, name in enumerate(names):
        client = f"127.0.0.1:{base + 10 * i}"
        flags = [
            "--name", name, "--data-dir", str(workdir / name),
            "--listen-client-urls", f"http://{client}", "--advertise-client-urls", f"http://{client}",
            "--listen-peer-urls", peers[name], "--initial-advertise-peer-urls", peers[name],
            "--initial-cluster", cluster,
            "--heartbeat-interval", "100", "--election-timeout", "1000",
        ]  # fmt: skip
        exe = [ETCD] if db == "etcd" else [sys.executable, "-m", "raftkv_cli", "node"]
        procs.append(
            subprocess.Popen([*exe, *flags], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        )
        clients.append(client)
    return procs, clients


def leader_index(clients: list[str]) -> int | None:
    out = etcdctl(clients, "endpoint", "status", "-w", "json")
    try:
        statuses = json.loads(out.stdout)
    except ValueError:
        return None
    for i, st in enumerate(statuses):
        status = st.get("Status", {})
        if status.get("leader") and status["leader"] == status.get("header", {}).get("member_id"):
            return i
    return None


def one_round(db: str, base: int) -> float:
    workdir = Path(tempfile.mkdtemp(prefix=f"failover-{db}-"))
    procs, clients = start(db, workdir, base)
    try:
        deadline = time.monotonic() + 30
        leader = None
        while leader is None or etcdctl(clients, "put", "warm", "up").returncode != 0:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{db}: no leader")
            time.sleep(0.2)
            leader = leader_index(clients)
        # Let start-up elections settle (etcd 3.4 runs without pre-vote by default), and make
        # sure the member we kill is still the leader.
        time.sleep(3)
        leader = leader_index(clients)
        assert leader is not None
        survivors = [c for i, c in enumerate(clients) if i != leader]
        procs[leader].send_signal(signal.SIGKILL)
        t0 = time.monotonic()
        while etcdctl([survivors[0]], "put", "after", "kill").returncode != 0:
            if time.monotonic() - t0 > 30:
                raise RuntimeError(f"{db}: no write within 30 s")
        return time.monotonic() - t0
    finally:
        for p in procs:
            p.kill()
            p.wait()
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    results: dict[str, list[float]] = {"etcd": [], "raftkv": []}
    for r in range(args.rounds):
        for db in ("etcd", "raftkv"):
            took = one_round(db, 26000 + 100 * r + (0 if db == "etcd" else 50))
            results[db].append(took)
            print(f"round {r + 1} {db}: first write {took * 1000:.0f} ms after SIGKILL")
    med = {db: statistics.median(v) for db, v in results.items()}
    print(
        f"median: etcd {med['etcd'] * 1000:.0f} ms, raftkv {med['raftkv'] * 1000:.0f} ms, "
        f"ratio raftkv/etcd {med['raftkv'] / med['etcd']:.2f}"
    )


if __name__ == "__main__":
    main()
