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


def test_tls_flags_have_etcds_names(monkeypatch, tmp_path):
    seen = {}
    monkeypatch.setattr("raftkv_cli.node.run", lambda params: seen.update(params))
    monkeypatch.setenv("RAFTKV_PEER_CLIENT_CERT_AUTH", "true")
    peer = "https://127.0.0.1:12380"
    args = [
        "--listen-client-urls", "https://127.0.0.1:12379",
        "--cert-file", str(tmp_path / "s.pem"), "--key-file", str(tmp_path / "s-key.pem"),
        "--trusted-ca-file", str(tmp_path / "ca.pem"), "--client-cert-auth",
        "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
        "--initial-cluster", f"default={peer}",
        "--peer-cert-file", str(tmp_path / "p.pem"), "--peer-key-file", str(tmp_path / "p-key.pem"),
        "--peer-trusted-ca-file", str(tmp_path / "ca.pem"),
    ]  # fmt: skip
    result = CliRunner().invoke(node_command, args)
    assert result.exit_code == 0, result.output
    config = build_config(seen)
    assert config.client_tls.cert_file == tmp_path / "s.pem"
    assert config.client_tls.client_cert_auth
    assert config.peer_tls.key_file == tmp_path / "p-key.pem"
    assert config.peer_tls.client_cert_auth  # from RAFTKV_PEER_CLIENT_CERT_AUTH
    assert config.peer_links_use_tls


def test_mixed_peer_schemes_stop_the_member_at_start(tmp_path):
    cluster = "n1=https://127.0.0.1:12380,n2=http://127.0.0.1:22380"
    args = [
        "--name", "n1", "--data-dir", str(tmp_path / "n1"),
        "--initial-cluster", cluster,
        "--listen-peer-urls", "https://127.0.0.1:12380",
        "--initial-advertise-peer-urls", "https://127.0.0.1:12380",
        "--peer-cert-file", "p.pem", "--peer-key-file", "p-key.pem",
    ]  # fmt: skip
    result = CliRunner().invoke(node_command, args)
    assert result.exit_code == 2
    assert "peer URLs mix https:// and http://" in result.output
    assert not (tmp_path / "n1").exists()  # refused before anything was opened


def test_the_client_commands_refuse_a_certificate_without_its_key(tmp_path):
    from raftkv_cli.main import main

    result = CliRunner().invoke(main, ["get", "k", "--cert", str(tmp_path / "c.pem")])
    assert result.exit_code == 2
    assert "give cert and key together" in result.output
