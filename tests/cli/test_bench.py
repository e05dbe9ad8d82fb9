"""Smoke test of ``raftkv bench`` (not a benchmark): a put run against an in-process server.

The etcd KV service runs over a FakeNode in a background thread's event loop; the real
``raftkv`` command runs in a subprocess, as a user would run it, and must report every one of
its operations as ok in its JSON output.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator

import grpc
import pytest
from raftkv_cli.bench import BenchConfig, Histogram, make_key
from raftkv_cli.bench.config import prefix_end

from raftkv.pb.etcdserverpb import rpc_pb2_grpc
from raftkv.server.fake_node import FakeNode
from raftkv.server.grpc_server import add_client_services, client_server_options
from raftkv.server.kv_service import DEFAULT_MAX_REQUEST_BYTES, KVService


async def _cancel_other_tasks() -> None:
    others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in others:
        task.cancel()
    await asyncio.gather(*others, return_exceptions=True)


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
        # The services' background tasks (the watch hub) end with the loop, not the server.
        asyncio.run_coroutine_threadsafe(_cancel_other_tasks(), loop).result(timeout=10)
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


def test_the_text_report_has_etcd_benchmark_sections(endpoint: str) -> None:
    proc = bench("txn", "--endpoints", endpoint, "--total", "20", "--quiet")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for section in ("Summary:", "requests ok:\t20", "Response time histogram (ms):"):
        assert section in out, out
    for section in ("Latency distribution:", "Errors: none", "CAS: ", "Load generator: "):
        assert section in out, out


def test_txn_counts_each_compare_and_set_as_succeeded_or_conflicting(endpoint: str) -> None:
    proc = bench(
        "txn", "--endpoints", endpoint, "--total", "60", "--concurrency", "4",
        "--key-space", "5", "--prefill", "-w", "json", "--quiet",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["ok"] == 60
    assert report["extra"]["cas_succeeded"] + report["extra"]["cas_conflicts"] == 60
    assert report["extra"]["cas_succeeded"] > 0


def test_watch_delivers_every_write_to_every_watcher_across_processes(endpoint: str) -> None:
    proc = bench(
        "watch", "--endpoints", endpoint, "--total", "40", "--watchers", "3",
        "--processes", "2", "--concurrency", "2", "-w", "json", "--quiet",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["status"] == "ok"
    assert report["writes"]["ok"] == 40
    extra = report["extra"]
    assert (extra["expected"], extra["delivered"], extra["missing"]) == (120, 120, 0)
    assert extra["out_of_order"] == 0
    assert report["ok"] == 120  # events delivered, each with a write-to-delivery latency
    assert sum(count for _, count in report["histogram_ms"]) == 120


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


def test_histogram_percentiles_survive_a_merge_through_json() -> None:
    fast, slow = Histogram(), Histogram()
    for us in range(1, 101):  # 1..100 us: exact buckets
        fast.record(us)
    for us in (10_000, 20_000):  # coarse buckets, within 1.6%
        slow.record(us)
    merged = Histogram.from_json(fast.to_json())
    merged.merge(Histogram.from_json(slow.to_json()))
    assert (merged.n, merged.min_us, merged.max_us) == (102, 1, 20_000)
    assert merged.percentile(0.5) == 51
    assert merged.percentile(1.0) == 20_000
    assert merged.percentile(0.99) == pytest.approx(10_000, rel=0.016)
    assert sum(count for _, count in merged.linear_buckets()) == 102


def test_keys_fill_the_key_size_and_a_prefix_range_covers_the_prefix() -> None:
    cfg = BenchConfig("put", key_size=8, key_space=1000, prefix="k/")
    assert make_key(cfg, 7) == b"k/000007"
    assert prefix_end(b"w/") == b"w0"
    assert prefix_end(b"a\xff") == b"b"
