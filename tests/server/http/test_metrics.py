"""/metrics: Prometheus' text format with etcd's names, types, labels and buckets."""

from __future__ import annotations

import asyncio
import base64
import shutil
import subprocess
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from raftkv.server.driver_metrics import DISK_BUCKETS, DriverMetrics
from raftkv.server.http.metrics import PEER_RTT_BUCKETS

CORE = {
    "etcd_server_has_leader": "gauge",
    "etcd_server_is_leader": "gauge",
    "etcd_server_leader_changes_seen": "counter",
    "etcd_server_proposals_committed_total": "gauge",
    "etcd_server_proposals_applied_total": "gauge",
    "etcd_server_proposals_pending": "gauge",
    "etcd_server_proposals_failed": "counter",
    "etcd_disk_wal_fsync_duration_seconds": "histogram",
    "etcd_disk_backend_commit_duration_seconds": "histogram",
    "etcd_mvcc_db_total_size_in_bytes": "gauge",
    "etcd_mvcc_db_total_size_in_use_in_bytes": "gauge",
    "etcd_server_quota_backend_bytes": "gauge",
    "etcd_network_peer_round_trip_time_seconds": "histogram",
    "etcd_network_peer_sent_failures": "counter",
    "grpc_server_started": "counter",
    "grpc_server_handled": "counter",
    "process_resident_memory_bytes": "gauge",
}
"""The parser names counters without their _total, which the samples keep."""


async def scrape(session: aiohttp.ClientSession, url: str) -> str:
    async with session.get(url + "/metrics") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return await resp.text()


def families(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def value(family: Any, name: str, **labels: str) -> float:
    hits = [s.value for s in family.samples if s.name == name and s.labels == labels]
    assert len(hits) == 1, (name, labels)
    return float(hits[0])


def run(serving: Any, scenario: Any, node: Any = None) -> None:
    async def main() -> None:
        async with serving(node) as served, aiohttp.ClientSession() as session:
            await scenario(served, session)

    asyncio.run(main())


def test_core_metrics_with_etcds_names_types_and_buckets(serving: Any) -> None:
    async def scenario(served: Any, session: aiohttp.ClientSession) -> None:
        fams = families(await scrape(session, served.metrics_url))
        for name, kind in CORE.items():
            assert name in fams and fams[name].type == kind, name
        assert value(fams["etcd_server_has_leader"], "etcd_server_has_leader") == 1
        fsync = fams["etcd_disk_wal_fsync_duration_seconds"]
        bounds = [float(s.labels["le"]) for s in fsync.samples if s.name.endswith("_bucket")]
        assert bounds == [*DISK_BUCKETS, float("inf")]
        assert bounds[0] == 0.001 and bounds[-2] == 8.192
        rtt = fams["etcd_network_peer_round_trip_time_seconds"]
        rtt_bounds = [float(s.labels["le"]) for s in rtt.samples if s.name.endswith("_bucket")]
        assert rtt_bounds == [*PEER_RTT_BUCKETS, float("inf")]
        assert {s.labels["To"] for s in rtt.samples} == {"1234"}  # the peer's id, in hex
        sent = fams["etcd_network_peer_sent_failures"]
        assert value(sent, "etcd_network_peer_sent_failures_total", To="1234") == 0

    run(serving, scenario)


def test_grpc_counts_are_preinitialised_and_count_calls(serving: Any) -> None:
    async def scenario(served: Any, session: aiohttp.ClientSession) -> None:
        range_ = {"grpc_type": "unary", "grpc_service": "etcdserverpb.KV", "grpc_method": "Range"}
        fams = families(await scrape(session, served.url))
        handled = fams["grpc_server_handled"]
        codes = {s.labels["grpc_code"] for s in handled.samples if s.labels["grpc_method"] == "Put"}
        assert len(codes) == 17 and {"OK", "Canceled", "Unavailable", "DataLoss"} <= codes
        assert value(handled, "grpc_server_handled_total", **range_, grpc_code="Unknown") == 0
        watch = {"grpc_type": "bidi_stream", "grpc_service": "etcdserverpb.Watch"}
        started = fams["grpc_server_started"]
        assert value(started, "grpc_server_started_total", **watch, grpc_method="Watch") == 0
        key = base64.b64encode(b"k").decode()
        await session.post(served.url + "/v3/kv/range", json={"key": key})
        await session.post(served.url + "/v3/kv/range", json={"key": key, "revision": 50})
        fams = families(await scrape(session, served.url))
        assert value(fams["grpc_server_started"], "grpc_server_started_total", **range_) == 2
        handled = fams["grpc_server_handled"]
        assert value(handled, "grpc_server_handled_total", **range_, grpc_code="OK") == 1
        assert value(handled, "grpc_server_handled_total", **range_, grpc_code="OutOfRange") == 1

    run(serving, scenario)


def test_driver_numbers_are_read_at_scrape_time(serving: Any) -> None:
    async def scenario(served: Any, session: aiohttp.ClientSession) -> None:
        metrics = DriverMetrics()
        served.node.metrics = metrics  # the collector looks for it on every scrape
        metrics.saw_leader(5)
        metrics.saw_leader(0)
        metrics.saw_leader(5)  # etcd counts a leader found again after none
        metrics.proposals_failed = 3
        metrics.wal_fsync.observe(0.0015)
        metrics.wal_fsync.observe(20.0)
        metrics.peer_unreachable(0x1234)
        fams = families(await scrape(session, served.url))
        changes = fams["etcd_server_leader_changes_seen"]
        assert value(changes, "etcd_server_leader_changes_seen_total") == 2
        failed = fams["etcd_server_proposals_failed"]
        assert value(failed, "etcd_server_proposals_failed_total") == 3
        fsync = fams["etcd_disk_wal_fsync_duration_seconds"]
        name = "etcd_disk_wal_fsync_duration_seconds"
        assert value(fsync, name + "_bucket", le="0.001") == 0
        assert value(fsync, name + "_bucket", le="0.002") == 1
        assert value(fsync, name + "_bucket", le="8.192") == 1
        assert value(fsync, name + "_bucket", le="+Inf") == 2
        assert value(fsync, name + "_count") == 2
        assert value(fsync, name + "_sum") == pytest.approx(20.0015)
        sent = fams["etcd_network_peer_sent_failures"]
        assert value(sent, "etcd_network_peer_sent_failures_total", To="1234") == 1

    run(serving, scenario)


PROMTOOL = shutil.which("promtool")


@pytest.mark.skipif(PROMTOOL is None, reason="promtool (Debian's prometheus) is not installed")
def test_promtool_accepts_the_exposition(serving: Any) -> None:
    async def scenario(served: Any, session: aiohttp.ClientSession) -> None:
        text = await scrape(session, served.url)
        assert PROMTOOL is not None
        out = subprocess.run(
            [PROMTOOL, "check", "metrics"], input=text.encode(), capture_output=True, timeout=30
        )
        # promtool lints as well as parses. The only findings allowed are etcd's own names: it
        # exports these two as gauges with a _total suffix, and promtool says the same of etcd.
        lint = (out.stdout + out.stderr).decode().strip().splitlines()
        suffix = ' non-counter metrics should not have "_total" suffix'
        allowed = {
            "etcd_server_proposals_applied_total" + suffix,
            "etcd_server_proposals_committed_total" + suffix,
        }
        assert set(lint) <= allowed, lint
        assert out.returncode in (0, 3 if lint else 0)  # 3: lint findings only

    run(serving, scenario)
