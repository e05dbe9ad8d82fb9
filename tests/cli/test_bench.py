"""Smoke test of ``raftkv bench`` (not a benchmark): a put run against an in-process server.

The etcd client services run over a FakeNode in a background thread's event loop; the real
``raftkv`` command runs in a subprocess, as a user would run it, and must report every one of
its operations as ok in its JSON output. Also the markdown of ``raftkv bench compare``.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from raftkv_cli.bench import (
    check_perf_writes_per_s,
    compare_markdown,
    process_cpu_seconds,
    server_cpu,
)

from raftkv.pb.etcdserverpb import rpc_pb2_grpc
from raftkv.server.fake_node import FakeNode
from raftkv.server.grpc_server import add_client_services, client_server_options
from raftkv.server.kv_service import DEFAULT_MAX_REQUEST_BYTES, KVService


def _serve(register: Callable[[grpc.aio.Server], None]) -> Iterator[str]:
    loop = asyncio.new_event_loop()
    started = threading.Event()
    port: list[int] = []
    server: list[grpc.aio.Server] = []

    async def serve() -> None:
        srv = grpc.aio.server(options=client_server_options(DEFAULT_MAX_REQUEST_BYTES))
        register(srv)
        port.append(srv.add_insecure_port("127.0.0.1:0"))
        await srv.start()
        server.append(srv)
        started.set()

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(serve(), loop).result(timeout=10)
    assert started.wait(10)
    try:
        yield f"127.0.0.1:{port[0]}"
    finally:
        asyncio.run_coroutine_threadsafe(server[0].stop(None), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


@pytest.fixture
def endpoint() -> Iterator[str]:
    yield from _serve(lambda srv: add_client_services(srv, FakeNode()))


@pytest.fixture
def kv_only_endpoint() -> Iterator[str]:
    """A server with the KV service alone: every other service is UNIMPLEMENTED."""
    yield from _serve(lambda srv: rpc_pb2_grpc.add_KVServicer_to_server(KVService(FakeNode()), srv))


def bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "raftkv_cli", "bench", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_put_reports_every_operation_ok(endpoint: str) -> None:
    proc = bench(
        "put", "--endpoints", endpoint, "--total", "200", "--concurrency", "8", "-w", "json"
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["status"] == "ok"
    assert report["ok"] == 200
    assert report["errors"] == {}
    assert report["latency_ms"]["p50"] > 0
    assert report["latency_ms"]["max"] >= report["latency_ms"]["p99"] >= report["latency_ms"]["p50"]
    assert report["generator"]["cpu_s"] > 0
    assert sum(count for _, count in report["histogram_ms"]) == 200


def test_unimplemented_service_is_reported_not_a_crash(kv_only_endpoint: str) -> None:
    proc = bench("lease", "--endpoints", kv_only_endpoint, "--total", "10", "-w", "json", "--quiet")
    assert proc.returncode == 3, proc.stderr
    report = json.loads(proc.stdout)
    assert report["status"] == "unimplemented"
    assert "Traceback" not in proc.stderr


def test_lease_keep_alives(endpoint: str) -> None:
    proc = bench("lease", "--endpoints", endpoint, "--total", "10", "-w", "json", "--quiet")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["status"] == "ok" and report["ok"] == 10 and report["errors"] == {}


_METRICS = {"status": "ok", "throughput": 100.0, "p50_ms": 1.0, "p99_ms": 2.0}


def _compare_result(
    name: str, etcd: dict[str, Any], raftkv: dict[str, Any], check_m: dict[str, Any]
) -> dict[str, Any]:
    """A ``compare_run`` result with one put row and one check perf --load=m row."""
    row = {"ratio_throughput": 1.0, "ratio_p50": 1.0, "ratio_p99": 1.0, "verdict": ""}
    return {
        "date": "2026-11-27 10:00 UTC",
        "machine": "test",
        "command": "raftkv bench compare --only put",
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
    text = compare_markdown(res)
    assert "| put c=16 | 100 | 100 |" in text
    assert "Watch rows" not in text
    assert "| --load=m | PASS | FAIL: Throughput too low: 887 writes/s |" in text
    assert "Members' CPU" not in text  # no CPU measured, no section


def test_compare_reports_the_members_cpu_per_run_and_per_operation() -> None:
    res = _compare_result(
        "put c=256",
        dict(_METRICS, **server_cpu(12.0, 10.0, 10_000)),
        dict(_METRICS, **server_cpu(15.0, 10.0, 5_000)),
        {
            "etcd": {"passed": True, "summary": ["PASS"], **server_cpu(78.0, 62.0, 58_920)},
            "raftkv": {"passed": False, "summary": ["FAIL"], **server_cpu(95.0, 62.0, None)},
        },
    )
    text = compare_markdown(res)
    assert "put c=256: etcd 120% (1.200 ms/op), raftkv 150% (3.000 ms/op)" in text
    # No writes/s reported (say etcdctl failed): the CPU is shown, the per-write cost is not.
    assert "check perf --load=m: etcd 126% (1.324 ms/op), raftkv 153% (— ms/op)" in text


def test_check_perf_throughput_is_read_from_a_pass_or_a_fail_line() -> None:
    assert check_perf_writes_per_s(["PASS: Throughput is 971 writes/s", "PASS"]) == 971
    assert check_perf_writes_per_s(["FAIL: Throughput too low: 887 writes/s"]) == 887
    assert check_perf_writes_per_s(["Error: context deadline exceeded"]) is None


def test_process_cpu_seconds_counts_a_busy_child_and_is_zero_once_it_is_gone() -> None:
    spin = "import time\nend = time.process_time() + 0.5\nwhile time.process_time() < end: pass"
    child = subprocess.Popen([sys.executable, "-c", spin + "\ntime.sleep(30)"])
    try:
        deadline = time.monotonic() + 20
        while process_cpu_seconds(child.pid) < 0.5 and time.monotonic() < deadline:
            time.sleep(0.05)
        used = process_cpu_seconds(child.pid)
        # 0.5 s of spinning, plus the interpreter's start-up; a sleeping child adds nothing.
        assert 0.5 <= used < 5.0
        time.sleep(0.3)
        assert process_cpu_seconds(child.pid) - used < 0.1
    finally:
        child.kill()
        child.wait()
    assert process_cpu_seconds(child.pid) == 0.0
