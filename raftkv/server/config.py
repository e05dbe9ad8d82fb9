"""ServerConfig: one member's configuration, with etcd's flag names and defaults.

The only place where seconds meet Raft ticks: ``heartbeat_interval_ms`` becomes the tick, and
``election_timeout_ms`` a number of ticks.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from raftkv.errors import ConfigError
from raftkv.server.compactor import AutoCompaction, parse_auto_compaction
from raftkv.server.tls import TLSInfo

DEFAULT_MAX_REQUEST_BYTES = 1536 * 1024
DEFAULT_QUOTA_BACKEND_BYTES = 2 << 30


def parse_urls(value: str, flag: str) -> tuple[str, ...]:
    urls = tuple(u.strip() for u in value.split(",") if u.strip())
    if not urls:
        raise ConfigError(f"--{flag} must name at least one URL")
    for url in urls:
        host_port(url, flag)
    return urls


def host_port(url: str, flag: str = "url") -> str:
    """``http://127.0.0.1:2379`` -> ``127.0.0.1:2379`` (the form gRPC binds and dials)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https", ""):
        raise ConfigError(f"--{flag}: {url!r}: only http:// and https:// URLs are supported")
    if not parts.hostname or parts.port is None:
        raise ConfigError(
            f"--{flag}: {url!r} must have a host and a port, e.g. http://127.0.0.1:2379"
        )
    host = parts.hostname
    if ":" in host:
        host = f"[{host}]"
    return f"{host}:{parts.port}"


def is_tls(url: str) -> bool:
    return urlsplit(url).scheme == "https"


def parse_initial_cluster(value: str) -> dict[str, tuple[str, ...]]:
    """``n1=http://a:2380,n2=http://b:2380`` -> {"n1": ("http://a:2380",), ...}."""
    cluster: dict[str, list[str]] = {}
    for item in (i.strip() for i in value.split(",")):
        if not item:
            continue
        name, sep, url = item.partition("=")
        if not sep or not name or not url:
            raise ConfigError(f"--initial-cluster: {item!r} is not of the form name=url")
        host_port(url, "initial-cluster")
        cluster.setdefault(name, []).append(url)
    if not cluster:
        raise ConfigError("--initial-cluster must name at least one member")
    return {name: tuple(sorted(urls)) for name, urls in cluster.items()}


def member_id(peer_urls: tuple[str, ...], cluster_token: str) -> int:
    """A stable 64-bit member id derived from the peer URLs and the cluster token (as etcd)."""
    digest = hashlib.sha1(("".join(sorted(peer_urls)) + cluster_token).encode()).digest()
    return int.from_bytes(digest[:8], "big") or 1


def cluster_id(member_ids: list[int], cluster_token: str) -> int:
    raw = b"".join(m.to_bytes(8, "big") for m in sorted(member_ids)) + cluster_token.encode()
    return int.from_bytes(hashlib.sha1(raw).digest()[:8], "big") or 1


@dataclass(frozen=True, slots=True)
class ServerConfig:
    name: str = "default"
    data_dir: Path = Path("default.etcd")
    listen_client_urls: tuple[str, ...] = ("http://localhost:2379",)
    advertise_client_urls: tuple[str, ...] = ("http://localhost:2379",)
    listen_peer_urls: tuple[str, ...] = ("http://localhost:2380",)
    initial_advertise_peer_urls: tuple[str, ...] = ("http://localhost:2380",)
    initial_cluster: dict[str, tuple[str, ...]] = field(
        default_factory=lambda: {"default": ("http://localhost:2380",)}
    )
    initial_cluster_state: str = "new"
    initial_cluster_token: str = "etcd-cluster"
    heartbeat_interval_ms: int = 100
    election_timeout_ms: int = 1000
    snapshot_count: int = 10_000
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    quota_backend_bytes: int = DEFAULT_QUOTA_BACKEND_BYTES
    watch_progress_notify_interval_ms: int = 600_000
    listen_client_http_urls: tuple[str, ...] = ()
    """etcd 3.5's flag: HTTP clients (the JSON gateway, /health, /metrics); empty: none."""
    listen_metrics_urls: tuple[str, ...] = ()
    """etcd's flag: /metrics, /health, /livez, /readyz and /version only; empty: none."""
    unsafe_local_reads: bool = False
    """Testing only: linearizable reads served locally, without ReadIndex (unsafe)."""
    client_tls: TLSInfo = field(default_factory=TLSInfo)
    peer_tls: TLSInfo = field(default_factory=lambda: TLSInfo(prefix="peer-"))
    auto_compaction_mode: str = "periodic"
    auto_compaction_retention: str = "0"
    """etcd's flags, as given: see :func:`raftkv.server.compactor.parse_auto_compaction`."""

    def __post_init__(self) -> None:
        if self.name not in self.initial_cluster:
            raise ConfigError(
                f"--initial-cluster has no member named {self.name!r} (--name); "
                f"it names {', '.join(sorted(self.initial_cluster))}"
            )
        if tuple(sorted(self.initial_advertise_peer_urls)) != self.initial_cluster[self.name]:
            raise ConfigError(
                f"--initial-advertise-peer-urls {','.join(self.initial_advertise_peer_urls)} "
                f"does not match --initial-cluster entry for {self.name!r}: "
                f"{','.join(self.initial_cluster[self.name])}"
            )
        if self.initial_cluster_state not in ("new", "existing"):
            raise ConfigError("--initial-cluster-state must be 'new' or 'existing'")
        if self.heartbeat_interval_ms <= 0:
            raise ConfigError("--heartbeat-interval must be positive")
        if self.election_timeout_ms < 5 * self.heartbeat_interval_ms:
            raise ConfigError(
                "--election-timeout should be at least 5 times --heartbeat-interval "
                f"({self.election_timeout_ms} < 5 * {self.heartbeat_interval_ms})"
            )
        if self.election_timeout_ms > 50_000:
            raise ConfigError(
                "--election-timeout is too long, and should be set less than 50 seconds"
            )
        if self.watch_progress_notify_interval_ms <= 0:
            raise ConfigError("--watch-progress-notify-interval must be positive")
        if self.snapshot_count <= 0:
            raise ConfigError("--snapshot-count must be positive")
        self._check_tls()
        self.auto_compaction  # noqa: B018 (parsed here so a bad value stops the start)

    def _check_tls(self) -> None:
        """etcd's checks (and messages) for https URLs without certificates; one scheme for
        every peer URL of the cluster (docs/security.md)."""
        self.client_tls.check()
        self.peer_tls.check()
        for url in self.listen_client_urls:
            if is_tls(url) and self.client_tls.empty:
                raise ConfigError(
                    "TLS key/cert (--cert-file, --key-file) must be provided for client url "
                    f"{url} with HTTPS scheme"
                )
        peer_urls = {
            *self.listen_peer_urls,
            *self.initial_advertise_peer_urls,
            *(u for urls in self.initial_cluster.values() for u in urls),
        }
        tls = sorted(u for u in peer_urls if is_tls(u))
        plain = sorted(u for u in peer_urls if not is_tls(u))
        if tls and plain:
            raise ConfigError(
                "peer URLs mix https:// and http:// "
                f"(https: {', '.join(tls)}; http: {', '.join(plain)}): every member of a cluster "
                "must talk TLS to its peers, or none; set --listen-peer-urls, "
                "--initial-advertise-peer-urls and --initial-cluster to one scheme"
            )
        if tls and self.peer_tls.empty:
            raise ConfigError(
                "TLS key/cert (--peer-cert-file, --peer-key-file) must be provided for peer url "
                f"{tls[0]} with HTTPS scheme"
            )

    @property
    def peer_links_use_tls(self) -> bool:
        """Whether peers are dialled and served over TLS (all peer URLs are https://)."""
        return any(is_tls(u) for u in self.listen_peer_urls)

    @property
    def auto_compaction(self) -> AutoCompaction:
        return parse_auto_compaction(self.auto_compaction_mode, self.auto_compaction_retention)

    @property
    def election_ticks(self) -> int:
        return max(2, self.election_timeout_ms // self.heartbeat_interval_ms)

    @property
    def member_id(self) -> int:
        return member_id(self.initial_cluster[self.name], self.initial_cluster_token)

    def member_ids(self) -> dict[str, int]:
        return {
            name: member_id(urls, self.initial_cluster_token)
            for name, urls in sorted(self.initial_cluster.items())
        }

    @property
    def cluster_id(self) -> int:
        return cluster_id(list(self.member_ids().values()), self.initial_cluster_token)

    @property
    def request_timeout_s(self) -> float:
        # etcd: 5 s plus twice the election timeout.
        return 5.0 + 2 * self.election_timeout_ms / 1000
