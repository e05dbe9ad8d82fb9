"""HTTP beside gRPC on real ``raftkv node`` processes: /health losing its quorum, /metrics of a
working member, and the gateway on a follower."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from raftkv_cli.localcluster import free_ports

from tests.integration.conftest import LocalCluster, Node

pytestmark = pytest.mark.integration


@dataclass
class HttpCluster(LocalCluster):
    """A LocalCluster whose members also serve HTTP, each on a port of its own."""

    http_ports: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.http_ports = dict(zip(self.nodes, free_ports(self.size), strict=True))

    def command(self, node: Node) -> list[str]:
        url = f"http://127.0.0.1:{self.http_ports[node.name]}"
        return [*super().command(node), "--listen-client-http-urls", url]

    def http(self, name: str, path: str, body: Any = None) -> tuple[int, bytes]:
        data = None if body is None else json.dumps(body).encode()
        url = f"http://127.0.0.1:{self.http_ports[name]}{path}"
        try:
            with urllib.request.urlopen(urllib.request.Request(url, data), timeout=10) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[HttpCluster]:
    c = HttpCluster(tmp_path)
    try:
        c.start()
        c.wait_leader(timeout=30)
        yield c
    finally:
        c.close()


def test_health_turns_503_when_the_member_loses_its_quorum(cluster: HttpCluster) -> None:
    for name in cluster.nodes:
        assert cluster.http(name, "/health") == (200, b'{"health":"true","reason":""}')
    leader = cluster.wait_leader()
    # The gateway on a follower: the write is forwarded, the read is linearizable.
    follower = next(n for n in cluster.nodes if n != leader)
    status, _ = cluster.http(follower, "/v3/kv/put", {"key": "Zm9v", "value": "YmFy"})
    assert status == 200
    status, body = cluster.http(follower, "/v3/kv/range", {"key": "Zm9v"})
    assert json.loads(body)["kvs"][0]["value"] == "YmFy"

    survivor, *others = list(cluster.nodes)
    for name in others:
        cluster.stop(name)
    deadline = time.monotonic() + 15
    while True:
        started = time.monotonic()
        status, body = cluster.http(survivor, "/health")
        assert time.monotonic() - started < 3  # the quorum read gives up within about 1 s
        if status == 503 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    answer = json.loads(body)
    assert status == 503 and answer["health"] == "false", body
    # No leader once it has timed out its election; before that, a read without a quorum
    # (which fails as "no leader" when the leader is lost while it waits).
    assert answer["reason"] in (
        "RAFT NO LEADER",
        "RANGE ERROR:etcdserver: request timed out",
        "RANGE ERROR:etcdserver: no leader",
    )
    assert cluster.http(survivor, "/health?serializable=true")[0] == 200
    assert cluster.http(survivor, "/livez")[0] == 200
    assert cluster.http(survivor, "/readyz")[0] == 503


def test_metrics_of_a_working_member(cluster: HttpCluster) -> None:
    leader = cluster.wait_leader()
    for _ in range(20):
        assert cluster.http(leader, "/v3/kv/put", {"key": "a2V5", "value": "dg=="})[0] == 200
    started = time.perf_counter()
    status, text = cluster.http(leader, "/metrics")
    elapsed_ms = (time.perf_counter() - started) * 1000
    assert status == 200
    print(f"/metrics: {len(text)} bytes in {elapsed_ms:.1f} ms")
    fams = {f.name: f for f in text_string_to_metric_families(text.decode())}

    def one(family: str, sample: str, **labels: str) -> float:
        hits = [s.value for s in fams[family].samples if s.name == sample and s.labels == labels]
        assert len(hits) == 1, (sample, labels)
        return float(hits[0])

    assert one("etcd_server_has_leader", "etcd_server_has_leader") == 1
    assert one("etcd_server_is_leader", "etcd_server_is_leader") == 1
    assert one("etcd_server_leader_changes_seen", "etcd_server_leader_changes_seen_total") >= 1
    committed = one(
        "etcd_server_proposals_committed_total", "etcd_server_proposals_committed_total"
    )
    assert committed >= 20
    fsyncs = one(
        "etcd_disk_wal_fsync_duration_seconds", "etcd_disk_wal_fsync_duration_seconds_count"
    )
    assert fsyncs >= 1
    commits = one(
        "etcd_disk_backend_commit_duration_seconds",
        "etcd_disk_backend_commit_duration_seconds_count",
    )
    assert commits >= 1
    assert one("etcd_mvcc_db_total_size_in_bytes", "etcd_mvcc_db_total_size_in_bytes") > 0
    put = {"grpc_type": "unary", "grpc_service": "etcdserverpb.KV", "grpc_method": "Put"}
    handled = "grpc_server_handled_total"
    assert one("grpc_server_handled", handled, **put, grpc_code="OK") == 20
    assert one("grpc_server_handled", handled, **put, grpc_code="InvalidArgument") == 0
    assert one("process_resident_memory_bytes", "process_resident_memory_bytes") > 0
    peers = {s.labels["To"] for s in fams["etcd_network_peer_sent_failures"].samples}
    assert len(peers) == 2
