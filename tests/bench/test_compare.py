"""bench/compare.py's reporting, without starting any cluster: the markdown of a result, the
writes/s read from ``etcdctl check perf``, and the members' CPU read from /proc."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def load_tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_compare", ROOT / "bench" / "compare.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_compare"] = module
    spec.loader.exec_module(module)
    return module


compare = load_tool()


_METRICS = {"status": "ok", "throughput": 100.0, "p50_ms": 1.0, "p99_ms": 2.0}


def _compare_result(
    name: str, etcd: dict[str, Any], raftkv: dict[str, Any], check_m: dict[str, Any]
) -> dict[str, Any]:
    """A ``compare_run`` result with one put row and one check perf --load=m row."""
    row = {"ratio_throughput": 1.0, "ratio_p50": 1.0, "ratio_p99": 1.0, "verdict": ""}
    return {
        "date": "2026-11-27 10:00 UTC",
        "machine": "test",
        "command": "python bench/compare.py --only put",
        "rows": [{"name": name, "workload": "put", "etcd": etcd, "raftkv": raftkv, **row}],
        "check_perf": {"m": check_m},
    }


def test_compare_markdown_names_the_failed_checks_once_and_skips_absent_sections() -> None:
    res = _compare_result(
        "put c=16",
        dict(_METRICS, generator_cpu_pct=10.0),
        dict(_METRICS, generator_cpu_pct=9.0),
        {
            "etcd": {"passed": True, "summary": ["PASS: Throughput is 1000 writes/s", "PASS"]},
            "raftkv": {
                "passed": False,
                "summary": ["FAIL: Throughput too low: 887 writes/s", "FAIL"],
            },
        },
    )
    text = compare.compare_markdown(res)
    assert "| put c=16 | 100 | 100 |" in text
    assert "Watch rows" not in text
    assert "| --load=m | PASS | FAIL: Throughput too low: 887 writes/s |" in text
    assert "Members' CPU" not in text  # no CPU measured, no section


def test_compare_reports_the_members_cpu_per_run_and_per_operation() -> None:
    server_cpu = compare.server_cpu
    res = _compare_result(
        "put c=256",
        dict(_METRICS, **server_cpu(12.0, 10.0, 10_000)),
        dict(_METRICS, **server_cpu(15.0, 10.0, 5_000)),
        {
            "etcd": {"passed": True, "summary": ["PASS"], **server_cpu(78.0, 62.0, 58_920)},
            "raftkv": {
                "passed": False,
                "summary": ["FAIL"],
                **server_cpu(95.0, 62.0, None),
            },
        },
    )
    text = compare.compare_markdown(res)
    assert "put c=256: etcd 120% (1.200 ms/op), raftkv 150% (3.000 ms/op)" in text
    # No writes/s reported (say etcdctl failed): the CPU is shown, the per-write cost is not.
    assert "check perf --load=m: etcd 126% (1.324 ms/op), raftkv 153% (— ms/op)" in text


def test_check_perf_throughput_is_read_from_a_pass_or_a_fail_line() -> None:
    assert compare.check_perf_writes_per_s(["PASS: Throughput is 971 writes/s", "PASS"]) == 971
    assert compare.check_perf_writes_per_s(["FAIL: Throughput too low: 887 writes/s"]) == 887
    assert compare.check_perf_writes_per_s(["Error: context deadline exceeded"]) is None


def test_process_cpu_seconds_counts_a_busy_child_and_is_zero_once_it_is_gone() -> None:
    spin = "import time\nend = time.process_time() + 0.5\nwhile time.process_time() < end: pass"
    child = subprocess.Popen([sys.executable, "-c", spin + "\ntime.sleep(30)"])
    try:
        deadline = time.monotonic() + 20
        while compare.process_cpu_seconds(child.pid) < 0.5 and time.monotonic() < deadline:
            time.sleep(0.05)
        used = compare.process_cpu_seconds(child.pid)
        # 0.5 s of spinning, plus the interpreter's start-up; a sleeping child adds nothing.
        assert 0.5 <= used < 5.0
        time.sleep(0.3)
        assert compare.process_cpu_seconds(child.pid) - used < 0.1
    finally:
        child.kill()
        child.wait()
    assert compare.process_cpu_seconds(child.pid) == 0.0


def _case(criterion: str, rate: float = 0.0) -> Any:
    return compare.CompareCase("c", "put", 1, rate=rate, criterion=criterion)


def test_verdict_checks_raftkv_against_etcd_by_the_case_criterion() -> None:
    etcd = dict(_METRICS, throughput=1000.0, p50_ms=1.0)
    assert compare._verdict(_case(""), etcd, etcd) == ""
    half = dict(etcd, throughput=500.0)
    assert compare._verdict(_case("tput>=0.5x"), etcd, half) == "met (tput>=0.5x)"
    slow = dict(etcd, p50_ms=2.5)
    assert compare._verdict(_case("p50<=2x"), etcd, slow) == "MISSED (p50<=2x)"
    failed = {"status": "unimplemented"}
    assert compare._verdict(_case("tput>=0.5x"), etcd, failed) == "miss (unimplemented)"
    watch = dict(_METRICS, writes_per_s=50.0, missing=0)
    assert compare._verdict(_case("all+p99<=2x", rate=100), watch, watch).startswith("inconclusive")


def test_the_script_runs_from_the_repository_and_documents_its_options() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "compare.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    for option in ("--duration", "--out", "--check-perf", "--only", "--keep"):
        assert option in done.stdout
