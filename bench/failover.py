"""Leader failover, raftkv vs etcd: SIGKILL the leader, time until the first successful write.

A benchmark script, not a test: it prints numbers. Both clusters use the same heartbeat and
election timeouts (etcd's defaults, 100 ms / 1000 ms) and the same client (etcdctl 3.4).

    python bench/failover.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from raftkv_cli.localcluster import (
    ETCD,
    RAFTKV_NODE,
    MemberSpec,
    agreed_leader,
    local_members,
    member_argv,
    member_status,
    spawn,
    stop,
    wait_ready,
)

ETCDCTL = shutil.which("etcdctl") or "/usr/bin/etcdctl"


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


def start(db: str, workdir: Path) -> tuple[list[subprocess.Popen[bytes]], list[MemberSpec]]:
    members = local_members([f"n{i}" for i in range(3)])
    program = [ETCD] if db == "etcd" else list(RAFTKV_NODE)
    procs = []
    for m in members:
        argv = member_argv(
            program,
            m,
            members,
            data_root=workdir,
            token=f"failover-{db}",
            extra=["--heartbeat-interval", "100", "--election-timeout", "1000"],
        )
        procs.append(spawn(argv, log_path=workdir / f"{m.name}.log"))
    return procs, members


def leader_index(members: list[MemberSpec]) -> int | None:
    """The member every one of them names as leader, by position; None while they disagree."""
    statuses = [member_status(m.endpoint) for m in members]
    leader = agreed_leader(statuses)
    for i, st in enumerate(statuses):
        if st is not None and leader is not None and st.header.member_id == leader:
            return i
    return None


def one_round(db: str) -> float:
    workdir = Path(tempfile.mkdtemp(prefix=f"failover-{db}-"))
    procs, members = start(db, workdir)
    clients = [m.endpoint for m in members]
    try:
        wait_ready(members, procs, timeout_s=30)
        deadline = time.monotonic() + 30
        while etcdctl(clients, "put", "warm", "up").returncode != 0:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{db}: takes no write")
            time.sleep(0.2)
        # Let start-up elections settle (etcd 3.4 runs without pre-vote by default), and make
        # sure the member we kill is still the leader.
        time.sleep(3)
        leader = leader_index(members)
        assert leader is not None
        survivors = [c for i, c in enumerate(clients) if i != leader]
        procs[leader].send_signal(signal.SIGKILL)
        t0 = time.monotonic()
        while etcdctl([survivors[0]], "put", "after", "kill").returncode != 0:
            if time.monotonic() - t0 > 30:
                raise RuntimeError(f"{db}: no write within 30 s")
        return time.monotonic() - t0
    finally:
        stop(procs)
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    results: dict[str, list[float]] = {"etcd": [], "raftkv": []}
    for r in range(args.rounds):
        for db in ("etcd", "raftkv"):
            took = one_round(db)
            results[db].append(took)
            print(f"round {r + 1} {db}: first write {took * 1000:.0f} ms after SIGKILL")
    med = {db: statistics.median(v) for db, v in results.items()}
    print(
        f"median: etcd {med['etcd'] * 1000:.0f} ms, raftkv {med['raftkv'] * 1000:.0f} ms, "
        f"ratio raftkv/etcd {med['raftkv'] / med['etcd']:.2f}"
    )


if __name__ == "__main__":
    main()
