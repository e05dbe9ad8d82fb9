"""`raftkv node` takes etcd's flag names, RAFTKV_* variables and Go-style durations."""

import pytest
from click.testing import CliRunner
from raftkv_cli.node import build_config, node_command, parse_duration_ms

from raftkv.errors import ConfigError


def test_durations_like_etcd():
    assert parse_duration_ms("10m", "f") == 600_000
    assert parse_duration_ms("500ms", "f") == 500
    assert parse_duration_ms("1.5s", "f") == 1500
    assert parse_duration_ms("250", "f") == 250
    with pytest.raises(ConfigError, match="not a duration"):
        parse_duration_ms("soon", "f")


def test_flags_and_environment_build_the_config(monkeypatch):
    seen = {}
    monkeypatch.setattr("raftkv_cli.node.run", lambda params: seen.update(params))
    monkeypatch.setenv("RAFTKV_NAME", "n2")
    args = [
        "--initial-cluster",
        "n1=http://127.0.0.1:12380,n2=http://127.0.0.1:22380",
        "--initial-advertise-peer-urls",
        "http://127.0.0.1:22380",
        "--watch-progress-notify-interval",
        "2s",
    ]
    result = CliRunner().invoke(node_command, args)
    assert result.exit_code == 0, result.output
    config = build_config(seen)
    assert config.name == "n2"
    assert config.watch_progress_notify_interval_ms == 2000
    assert not config.unsafe_local_reads
    assert config.member_id != config.member_ids()["n1"]


def test_bad_cluster_is_a_clear_error(monkeypatch):
    params = {}
    monkeypatch.setattr("raftkv_cli.node.run", lambda p: params.update(p))
    CliRunner().invoke(node_command, ["--name", "x"])
    with pytest.raises(ConfigError, match="no member named 'x'"):
        build_config(params)
