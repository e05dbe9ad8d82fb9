"""``raftkv cluster up`` and ``raftkv cluster status`` as a user runs them.

Each run uses a temporary data directory and ``--base-port`` on a free range, so a cluster the
user keeps on 2379 is never touched.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from raftkv_cli.localcluster import free_ports

if TYPE_CHECKING:
    from collections.abc import Sequence

pytestmark = pytest.mark.integration

ETCDCTL = "/usr/bin/etcdctl"


def _free_port_range(n: int) -> int:
    """A base port with ``n`` consecutive free ports after it, for ``--base-port``."""
    return free_ports(n, consecutive=True)[0]


class ClusterUp:
    """A ``raftkv cluster up`` process whose output is collected line by line."""

    def __init__(self, data_dir: Path, base_port: int, *extra: str) -> None:
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self.proc = subprocess.Popen(
            [
                sys.executable, "-m", "raftkv_cli", "cluster", "up",
                "--data-dir", str(data_dir),
                "--base-port", str(base_port),
                "--heartbeat-interval", "50",
                "--election-timeout", "500",
                *extra,
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            with self._cond:
                self.lines.append(raw.decode(errors="replace").rstrip("\n"))
                self._cond.notify_all()
        self.proc.stdout.close()

    @property
    def output(self) -> str:
        with self._cond:
            return "\n".join(self.lines)

    def wait_for(self, pattern: str, timeout: float = 30.0) -> re.Match[str]:
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        seen = 0
        with self._cond:
            while True:
                for line in self.lines[seen:]:
                    found = regex.search(line)
                    if found:
                        return found
                seen = len(self.lines)
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    raise AssertionError(f"no line matching {pattern!r}; output:\n{self.output}")
                self._cond.wait(min(left, 0.2))

    def member_pids(self) -> list[int]:
        return [int(p) for p in re.findall(r"started infra\d+ \(pid (\d+)\)", self.output)]

    def finish(self, timeout: float = 30.0) -> int:
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise AssertionError(f"cluster up did not exit:\n{self.output}") from None
        self._reader.join(10)
        return code

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self._reader.join(10)


def _gone(pids: Sequence[int], timeout: float = 15.0) -> list[int]:
    """The pids still alive after ``timeout`` (zombies count as gone)."""
    deadline = time.monotonic() + timeout
    alive = list(pids)
    while alive and time.monotonic() < deadline:
        still = []
        for pid in alive:
            try:
                with open(f"/proc/{pid}/stat") as f:
                    state = f.read().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if state != "Z":
                still.append(pid)
        alive = still
        if alive:
            time.sleep(0.05)
    return alive


def etcdctl(endpoints: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [ETCDCTL, f"--endpoints={endpoints}", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env=dict(os.environ, ETCDCTL_API="3"),
    )


def test_cluster_up_serves_etcdctl_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    base = _free_port_range(9)  # 3 members: client and peer ports, then 3 HTTP ports
    data = tmp_path / "cluster"
    endpoints = f"127.0.0.1:{base},127.0.0.1:{base + 2},127.0.0.1:{base + 4}"

    up = ClusterUp(data, base)
    try:
        up.wait_for(r"cluster ready: 3 members, leader infra\d")
        example = up.wait_for(r"etcdctl --endpoints=(\S+) put foo bar")
        assert example.group(1) == endpoints
        assert re.search(r"^infra1 +\| .*serving clients", up.output, re.M), up.output
        pids = up.member_pids()
        assert len(pids) == 3
        r = etcdctl(endpoints, "put", "foo", "bar")
        assert r.stdout == "OK\n", r.stderr
        assert etcdctl(endpoints, "get", "foo").stdout == "foo\nbar\n"
        status = subprocess.run(
            [sys.executable, "-m", "raftkv_cli", "cluster", "status", "--endpoints", endpoints],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
        assert re.search(r"^leader: infra\d \([0-9a-f]+\), raft term \d+$", status, re.M), status
        # Each member serves HTTP too, after all the gRPC and peer ports.
        assert f"http http://127.0.0.1:{base + 6}" in up.output
        for port in (base + 6, base + 7, base + 8):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10) as resp:
                assert resp.read() == b'{"health":"true","reason":""}'
        req = urllib.request.Request(f"http://127.0.0.1:{base + 8}/v3/kv/range", b'{"key":"Zm9v"}')
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert json.loads(resp.read())["kvs"][0]["value"] == "YmFy"

        up.proc.send_signal(signal.SIGINT)  # Ctrl-C
        assert up.finish() == 0, up.output
        assert (
            "all members stopped (infra1 exit code 0, infra2 exit code 0, infra3 exit code 0)"
            in (up.output)
        )
        assert _gone(pids) == []
    finally:
        up.close()
    assert (data / "cluster.json").exists()
    assert sorted(p.name for p in data.iterdir() if p.is_dir()) == ["infra1", "infra2", "infra3"]

    # Run again: the same cluster, with its data. SIGTERM stops it as Ctrl-C does.
    again = ClusterUp(data, base)
    try:
        again.wait_for(r"restarting a 3-member cluster")
        again.wait_for(r"cluster ready")
        assert etcdctl(endpoints, "get", "foo", "--print-value-only").stdout == "bar\n"
        pids = again.member_pids()
        again.proc.send_signal(signal.SIGTERM)
        assert again.finish() == 0, again.output
        assert _gone(pids) == []
    finally:
        again.close()

    # A supervisor killed outright still takes its members down (Linux parent-death signal).
    third = ClusterUp(data, base)
    try:
        third.wait_for(r"cluster ready")
        pids = third.member_pids()
        third.proc.kill()
        third.finish()
        assert _gone(pids) == [], f"members outlived a SIGKILLed supervisor:\n{third.output}"
    finally:
        third.close()


def test_cluster_up_refuses_busy_ports_and_changed_layouts(tmp_path: Path) -> None:
    base = _free_port_range(9)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taken.bind(("127.0.0.1", base + 3))
        taken.listen()
        up = ClusterUp(tmp_path / "busy", base)
        try:
            assert up.finish() == 1
        finally:
            up.close()
    assert f"127.0.0.1:{base + 3} (infra2's peer port): already in use" in up.output
    assert "started" not in up.output  # nothing was spawned

    (tmp_path / "stored").mkdir()
    layout = '{"token": "t", "members": [{"name": "infra1", "host": "127.0.0.1", '
    layout += f'"client_port": {base}, "peer_port": {base + 1}}}]}}'
    (tmp_path / "stored" / "cluster.json").write_text(layout)
    up = ClusterUp(tmp_path / "stored", base, "--nodes", "3")
    try:
        assert up.finish() == 1
    finally:
        up.close()
    assert "holds a 1-member cluster; run with --nodes 1" in up.output


def test_cluster_status_without_a_cluster() -> None:
    base = _free_port_range(3)
    r = subprocess.run(
        [sys.executable, "-m", "raftkv_cli", "cluster", "status", f"--endpoints=127.0.0.1:{base}"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert r.returncode == 1
    assert f"no member answered at 127.0.0.1:{base}" in r.stderr


def test_ctrl_c_on_the_process_group_stops_quietly(tmp_path: Path) -> None:
    """Ctrl-C in a terminal signals the whole foreground process group: no traceback, the
    leader hands over exactly once, and every member says it stopped."""
    up = ClusterUp(tmp_path / "cluster", _free_port_range(6))
    try:
        up.wait_for(r"cluster ready")
        os.killpg(up.proc.pid, signal.SIGINT)  # ClusterUp starts it as its own group leader
        assert up.finish() == 0, up.output
    finally:
        up.close()
    out = up.output
    stop = out[out.index("stopping infra") :]
    assert "Traceback" not in out and "ERROR" not in stop, out
    assert len(re.findall(r"handing leadership to", stop)) == 1, stop
    assert "leadership transfer before stop failed" not in stop, stop
    for name in ("infra1", "infra2", "infra3"):
        assert re.search(rf"^{name} +\| .*member [0-9a-f]+ stopped$", stop, re.M), stop
    assert "all members stopped (infra1 exit code 0, infra2 exit code 0, infra3 exit code 0)" in out
