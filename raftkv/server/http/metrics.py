"""``/metrics``: Prometheus' text format with etcd's metric names, types, labels and buckets.

Every number is read when Prometheus scrapes (a collector, not objects updated per request):
the node's status (leader, commit and applied indexes, database size), the driver's counters
and histograms (``raftkv.server.driver_metrics``), the gRPC call counts (``rpc_stats``), the
health checks' counts and the process (resident memory, CPU, file descriptors, from
prometheus-client's process collector). What each metric means in raftkv: docs/http.md.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from raftkv.server.api import NodeApi
from raftkv.server.driver_metrics import DriverMetrics, Histogram, MetricsSource
from raftkv.server.http.health import HealthCounts, cluster_version
from raftkv.server.maintenance_service import ETCD_VERSION
from raftkv.server.rpc_stats import RpcStats

__all__ = ["PEER_RTT_BUCKETS", "MemberCollector", "member_registry", "scrape"]

PEER_RTT_BUCKETS: tuple[float, ...] = tuple(0.0001 * 2**k for k in range(16))
"""etcd's buckets for etcd_network_peer_round_trip_time_seconds: 0.1 ms doubling to 3.28 s."""

_CODE_NAMES = (
    "OK", "Canceled", "Unknown", "InvalidArgument", "DeadlineExceeded", "NotFound",
    "AlreadyExists", "PermissionDenied", "ResourceExhausted", "FailedPrecondition", "Aborted",
    "OutOfRange", "Unimplemented", "Internal", "Unavailable", "DataLoss", "Unauthenticated",
)  # fmt: skip
"""grpc-go's names of the codes, by number: go-grpc-prometheus' grpc_code label values."""

_HELP = {
    "etcd_server_has_leader": "Whether or not a leader exists. 1 is existence, 0 is not.",
    "etcd_server_is_leader": "Whether or not this member is a leader. 1 if is, 0 otherwise.",
    "etcd_server_is_learner": "Whether or not this member is a learner. 1 if is, 0 otherwise.",
    "etcd_server_id": "Server or member ID in hexadecimal format. "
    "1 for 'server_id' label with current ID.",
    "etcd_server_version": "Which version is running. "
    "1 for 'server_version' label with current version.",
    "etcd_cluster_version": "Which version is running. "
    "1 for 'cluster_version' label with current cluster version",
    "etcd_server_leader_changes_seen_total": "The number of leader changes seen.",
    "etcd_server_proposals_committed_total": "The total number of consensus proposals committed.",
    "etcd_server_proposals_applied_total": "The total number of consensus proposals applied.",
    "etcd_server_proposals_pending": "The current number of pending proposals to commit.",
    "etcd_server_proposals_failed_total": "The total number of failed proposals seen.",
    "etcd_server_quota_backend_bytes": "Current backend storage quota size in bytes.",
    "etcd_mvcc_db_total_size_in_bytes": "Total size of the underlying database physically "
    "allocated in bytes.",
    "etcd_mvcc_db_total_size_in_use_in_bytes": "Total size of the underlying database "
    "logically in use in bytes.",
    "etcd_debugging_mvcc_current_revision": "The current revision of store.",
    "etcd_server_health_success": "The total number of successful health checks",
    "etcd_server_health_failures": "The total number of failed health checks",
    "etcd_disk_wal_fsync_duration_seconds": "The latency distributions of fsync called by WAL.",
    "etcd_disk_backend_commit_duration_seconds": "The latency distributions of commit called "
    "by backend.",
    "etcd_network_peer_sent_failures_total": "The total number of send failures from peers.",
    "etcd_network_peer_round_trip_time_seconds": "Round-Trip-Time histogram between peers",
    "grpc_server_started_total": "Total number of RPCs started on the server.",
    "grpc_server_handled_total": "Total number of RPCs completed on the server, regardless of "
    "success or failure.",
}


def _gauge(name: str, value: float, **labels: str) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, _HELP[name], labels=list(labels))
    family.add_metric(list(labels.values()), value)
    return family


def _counter(name: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, _HELP[name], value=value)


def _plain_counter(name: str, value: float) -> Metric:
    """A counter whose name does not end in _total (etcd's health counters). prometheus-client
    would write a counter's name with _total added, so it goes out untyped, under etcd's name."""
    family = Metric(name, _HELP[name], "unknown")
    family.add_sample(name, {}, value)
    return family


def _buckets(bounds: tuple[float, ...], cumulative: list[int]) -> list[tuple[str, float]]:
    return [(repr(b), float(n)) for b, n in zip(bounds, cumulative, strict=False)] + [
        ("+Inf", float(cumulative[-1]))
    ]


def _histogram(name: str, hist: Histogram) -> HistogramMetricFamily:
    counts, total = hist.snapshot()
    buckets = _buckets(hist.bounds, counts)
    return HistogramMetricFamily(name, _HELP[name], buckets=buckets, sum_value=total)


class MemberCollector(Collector):
    def __init__(
        self,
        node: NodeApi,
        *,
        quota_bytes: int,
        rpc_stats: RpcStats | None = None,
        health: HealthCounts | None = None,
    ) -> None:
        self._node = node
        self._quota_bytes = quota_bytes
        self._rpc_stats = rpc_stats
        self._health = health or HealthCounts()
        self._idle = DriverMetrics()  # for a node that keeps none (a fake): all zero

    def _driver(self) -> DriverMetrics:
        node = self._node
        return node.metrics if isinstance(node, MetricsSource) else self._idle

    def collect(self) -> Iterator[Metric]:
        yield from self._server()
        yield from self._disk()
        yield from self._network()
        yield from self._grpc()

    def _server(self) -> Iterator[Metric]:
        st, dm = self._node.status(), self._driver()
        yield _gauge("etcd_server_has_leader", 1 if st.leader else 0)
        yield _gauge("etcd_server_is_leader", 1 if st.leader == st.member_id else 0)
        yield _gauge("etcd_server_is_learner", 1 if st.is_learner else 0)
        yield _gauge("etcd_server_id", 1, server_id=f"{st.member_id:x}")
        yield _gauge("etcd_server_version", 1, server_version=ETCD_VERSION)
        yield _gauge("etcd_cluster_version", 1, cluster_version=cluster_version(ETCD_VERSION))
        yield _counter("etcd_server_leader_changes_seen_total", dm.leader_changes)
        # etcd exports these two as gauges despite the _total suffix; dashboards rely on it.
        yield _gauge("etcd_server_proposals_committed_total", st.commit_index)
        yield _gauge("etcd_server_proposals_applied_total", st.raft_applied_index)
        yield _gauge("etcd_server_proposals_pending", dm.proposals_pending)
        yield _counter("etcd_server_proposals_failed_total", dm.proposals_failed)
        yield _gauge("etcd_server_quota_backend_bytes", self._quota_bytes)
        yield _gauge("etcd_mvcc_db_total_size_in_bytes", st.db_size_bytes)
        yield _gauge("etcd_mvcc_db_total_size_in_use_in_bytes", st.db_size_in_use_bytes)
        yield _gauge("etcd_debugging_mvcc_current_revision", st.revision)
        yield _plain_counter("etcd_server_health_success", self._health.success)
        yield _plain_counter("etcd_server_health_failures", self._health.failures)

    def _disk(self) -> Iterator[Metric]:
        dm = self._driver()
        yield _histogram("etcd_disk_wal_fsync_duration_seconds", dm.wal_fsync)
        yield _histogram("etcd_disk_backend_commit_duration_seconds", dm.backend_commit)

    def _network(self) -> Iterator[Metric]:
        me = self._node.member_id
        peers = sorted(m.id for m in self._node.members() if m.id != me)
        failures = self._driver().peer_sent_failures
        name = "etcd_network_peer_sent_failures_total"
        sent = CounterMetricFamily(name, _HELP[name], labels=["To"])
        name = "etcd_network_peer_round_trip_time_seconds"
        rtt = HistogramMetricFamily(name, _HELP[name], labels=["To"])
        empty = _buckets(PEER_RTT_BUCKETS, [0] * (len(PEER_RTT_BUCKETS) + 1))
        for peer in peers:  # etcd's To label: the peer's id in hexadecimal
            sent.add_metric([f"{peer:x}"], failures.get(peer, 0))
            rtt.add_metric([f"{peer:x}"], empty, 0.0)  # not measured yet (docs/http.md)
        yield sent
        yield rtt

    def _grpc(self) -> Iterator[Metric]:
        if self._rpc_stats is None:
            return
        labels = ["grpc_type", "grpc_service", "grpc_method"]
        name = "grpc_server_started_total"
        started = CounterMetricFamily(name, _HELP[name], labels=labels)
        name = "grpc_server_handled_total"
        handled = CounterMetricFamily(name, _HELP[name], labels=[*labels, "grpc_code"])
        for m in self._rpc_stats.methods:
            key = [m.kind, m.service, m.method]
            started.add_metric(key, m.started)
            for name, n in zip(_CODE_NAMES, m.handled, strict=True):
                handled.add_metric([*key, name], n)
        yield started
        yield handled


def member_registry(collector: MemberCollector) -> CollectorRegistry:
    """A registry of one member (never the process-wide default: tests run several members in
    one process), with the process' own metrics beside the member's."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    ProcessCollector(registry=registry)
    return registry


def scrape(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
