"""``raftkv node``: run one member, with etcd's flag names (each also a RAFTKV_* or ETCD_*
variable, or a setting of etcd's YAML config file: raftkv_cli.node_flags)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import click
from raftkv_cli.logs import configure_logging
from raftkv_cli.node_flags import (
    CONFIG_FILE_OPTION,
    DEFAULT_ONLY,
    DEFAULT_ONLY_OPTIONS,
    check_node_params,
    envvars,
)
from raftkv_storage.backend import LmdbBackend
from raftkv_storage.log import LmdbRaftLog

from raftkv.errors import ConfigError, CorruptionError
from raftkv.server.config import (
    DEFAULT_MAX_REQUEST_BYTES,
    DEFAULT_QUOTA_BACKEND_BYTES,
    ServerConfig,
    parse_initial_cluster,
    parse_urls,
)
from raftkv.server.node import member_dir, run_node
from raftkv.server.tls import TLSInfo


def _opt(flag: str, default: object, help_text: str, **kw: object) -> click.Option:
    return click.Option(
        [f"--{flag}"],
        default=default,
        envvar=envvars(flag),
        show_default=True,
        show_envvar=True,
        help=help_text,
        **kw,  # type: ignore[arg-type]
    )


NODE_OPTIONS = [
    _opt("name", "default", "Human-readable name of this member."),
    _opt("data-dir", None, "Path to the data directory (default: ${name}.etcd)."),
    _opt("listen-client-urls", "http://localhost:2379", "URLs to serve clients on."),
    _opt("advertise-client-urls", "http://localhost:2379", "Client URLs to tell the cluster."),
    _opt(
        "listen-client-http-urls",
        "",
        "URLs to serve HTTP clients on: etcd's JSON gateway (/v3/...), /health, /livez, "
        "/readyz, /version and /metrics (gRPC stays on --listen-client-urls). Empty: none.",
    ),
    _opt(
        "listen-metrics-urls",
        "",
        "URLs to serve /metrics, /health, /livez, /readyz and /version on. Empty: none.",
    ),
    _opt("listen-peer-urls", "http://localhost:2380", "URLs to serve peers on."),
    _opt("initial-advertise-peer-urls", "http://localhost:2380", "This member's peer URLs."),
    _opt("initial-cluster", "default=http://localhost:2380", "name=peer-url,... of all members."),
    _opt("initial-cluster-state", "new", "'new' or 'existing'."),
    _opt("initial-cluster-token", "etcd-cluster", "Token that makes cluster ids unique."),
    _opt("heartbeat-interval", 100, "Time (ms) of a heartbeat interval.", type=int),
    _opt("election-timeout", 1000, "Time (ms) for an election to time out.", type=int),
    _opt("snapshot-count", 10_000, "Applied entries between snapshots.", type=int),
    _opt("max-request-bytes", DEFAULT_MAX_REQUEST_BYTES, "Max client request size.", type=int),
    _opt("quota-backend-bytes", DEFAULT_QUOTA_BACKEND_BYTES, "Backend size quota.", type=int),
    _opt(
        "watch-progress-notify-interval",
        "10m",
        "Interval of watch progress notifications: 500ms, 10s, 10m or plain milliseconds.",
    ),
    _opt("cert-file", None, "Path to the client server TLS cert file (for https:// client URLs)."),
    _opt("key-file", None, "Path to the client server TLS key file."),
    _opt("trusted-ca-file", None, "CA that signs client certificates; clients must present one."),
    _opt(
        "client-cert-auth",
        False,
        "Require client certificates (needs --trusted-ca-file).",
        is_flag=True,
    ),
    _opt(
        "peer-cert-file",
        None,
        "Path to the peer TLS cert file (for https:// peer URLs); "
        "also the client certificate this member dials its peers with.",
    ),
    _opt("peer-key-file", None, "Path to the peer TLS key file."),
    _opt("peer-trusted-ca-file", None, "CA that signs peer certificates; peers must present one."),
    _opt(
        "peer-client-cert-auth",
        False,
        "Require peer client certificates (needs --peer-trusted-ca-file).",
        is_flag=True,
    ),
    click.Option(
        ["--experimental-unsafe-local-reads"],
        is_flag=True,
        default=False,
        help="UNSAFE, testing only: serve linearizable reads locally without ReadIndex "
        "(stale reads under partitions). For proving that Jepsen-style checkers catch it.",
    ),
    _opt(
        "auto-compaction-mode",
        "periodic",
        "periodic: keep --auto-compaction-retention of time; revision: keep that many revisions.",
    ),
    _opt(
        "auto-compaction-retention",
        "0",
        "History to keep: a duration (30m, 1h) or hours (periodic), revisions (revision); 0: off.",
    ),
    _opt("logger", "zap", "etcd's logger: zap or capnslog (both log through raftkv's logging)."),
    _opt("log-outputs", "default", "Comma-separated: default or stderr, stdout, or file paths."),
    _opt("log-level", "info", "debug, info, warn, error, panic or fatal."),
    _opt("log-format", "text", "text or json."),
    _opt(
        "debug",
        "false",
        "etcd's old switch for --log-level=debug.",
        is_flag=False,
        flag_value="true",
    ),
    CONFIG_FILE_OPTION,
    *DEFAULT_ONLY_OPTIONS,
]


_DURATION_UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000}


def parse_duration_ms(value: str, flag: str) -> int:
    """etcd takes Go durations (``10m``, ``500ms``); plain numbers are milliseconds."""
    text = value.strip()
    for unit in ("ms", "h", "m", "s"):
        if text.endswith(unit) and text[: -len(unit)].replace(".", "", 1).isdigit():
            return int(float(text[: -len(unit)]) * _DURATION_UNITS_MS[unit])
    if text.isdigit():
        return int(text)
    raise ConfigError(f"--{flag}: {value!r} is not a duration such as 500ms, 10s or 10m")


def _path(value: object) -> Path | None:
    return None if value is None or value == "" else Path(str(value))


def tls_info(params: dict[str, object], prefix: str) -> TLSInfo:
    """``--cert-file`` etc. (prefix ``""``) or ``--peer-cert-file`` etc. (prefix ``peer-``)."""
    key = prefix.replace("-", "_")
    return TLSInfo(
        cert_file=_path(params[f"{key}cert_file"]),
        key_file=_path(params[f"{key}key_file"]),
        trusted_ca_file=_path(params[f"{key}trusted_ca_file"]),
        client_cert_auth=bool(params[f"{key}client_cert_auth"]),
        prefix=prefix,
    )


def _optional_urls(params: dict[str, object], flag: str) -> tuple[str, ...]:
    value = str(params[flag.replace("-", "_")] or "")
    return parse_urls(value, flag) if value.strip() else ()


def build_config(params: dict[str, object]) -> ServerConfig:
    name = str(params["name"])
    data_dir = params["data_dir"] or f"{name}.etcd"
    return ServerConfig(
        name=name,
        data_dir=Path(str(data_dir)),
        listen_client_urls=parse_urls(str(params["listen_client_urls"]), "listen-client-urls"),
        advertise_client_urls=parse_urls(
            str(params["advertise_client_urls"]), "advertise-client-urls"
        ),
        listen_peer_urls=parse_urls(str(params["listen_peer_urls"]), "listen-peer-urls"),
        listen_client_http_urls=_optional_urls(params, "listen-client-http-urls"),
        listen_metrics_urls=_optional_urls(params, "listen-metrics-urls"),
        initial_advertise_peer_urls=parse_urls(
            str(params["initial_advertise_peer_urls"]), "initial-advertise-peer-urls"
        ),
        initial_cluster=parse_initial_cluster(str(params["initial_cluster"])),
        initial_cluster_state=str(params["initial_cluster_state"]),
        initial_cluster_token=str(params["initial_cluster_token"]),
        heartbeat_interval_ms=int(str(params["heartbeat_interval"])),
        election_timeout_ms=int(str(params["election_timeout"])),
        snapshot_count=int(str(params["snapshot_count"])),
        max_request_bytes=int(str(params["max_request_bytes"])),
        quota_backend_bytes=int(str(params["quota_backend_bytes"])),
        watch_progress_notify_interval_ms=parse_duration_ms(
            str(params["watch_progress_notify_interval"]), "watch-progress-notify-interval"
        ),
        unsafe_local_reads=bool(params["experimental_unsafe_local_reads"]),
        client_tls=tls_info(params, ""),
        peer_tls=tls_info(params, "peer-"),
        auto_compaction_mode=str(params["auto_compaction_mode"]),
        auto_compaction_retention=str(params["auto_compaction_retention"]),
    )


def run(params: dict[str, object]) -> None:
    level = "debug" if str(params["debug"]).lower() == "true" else str(params["log_level"])
    configure_logging(
        level,
        str(params["log_format"]),
        name=str(params["name"]),
        outputs=str(params["log_outputs"]),
    )
    try:
        config = build_config(params)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc
    directory = member_dir(config)
    try:
        raft_log = LmdbRaftLog(directory / "raft")
        backend = LmdbBackend(directory / "kv", quota_bytes=config.quota_backend_bytes)
    except CorruptionError as exc:
        click.echo(f"raftkv: refusing to start: {exc}", err=True)
        click.echo(
            "The data directory is damaged. Restore it from a snapshot, or remove this member's "
            "data directory and let it rejoin to catch up from the others.",
            err=True,
        )
        sys.exit(2)
    try:
        asyncio.run(run_node(config, raft_log, backend))
    except ConfigError as exc:  # certificate files that do not load
        click.echo(f"raftkv: refusing to start: {exc}", err=True)
        sys.exit(2)
    except OSError as exc:
        click.echo(f"raftkv: cannot serve: {exc}", err=True)
        sys.exit(1)
    finally:
        raft_log.close()
        backend.close()


@click.pass_context
def _node(ctx: click.Context, /, **params: object) -> None:
    check_node_params(ctx, params)
    run(params)


node_command = click.Command(
    "node",
    params=list(NODE_OPTIONS),
    callback=_node,
    help="Run one raftkv member, with etcd's flags. Each flag can also be set by RAFTKV_<FLAG> "
    "or ETCD_<FLAG> (a flag wins over a variable), or by etcd's YAML --config-file.",
    epilog="Also accepted at etcd's default value only (raftkv cannot honour others): "
    + ", ".join(f"--{f}" for f in DEFAULT_ONLY)
    + ".",
)
