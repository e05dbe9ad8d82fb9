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


CLUSTER = ["--initial-cluster", "n1=http://127.0.0.1:12380,n2=http://127.0.0.1:22380"]


def _invoke(monkeypatch, args, env=None):
    seen = {}
    monkeypatch.setattr("raftkv_cli.node.run", lambda params: seen.update(params))
    result = CliRunner().invoke(node_command, args, env=env or {})
    return result, seen


def test_etcd_variables_flags_win(monkeypatch):
    env = {"ETCD_NAME": "n2", "ETCD_INITIAL_ADVERTISE_PEER_URLS": "http://127.0.0.1:22380"}
    env["ETCD_AUTO_COMPACTION_RETENTION"] = "30m"
    result, seen = _invoke(monkeypatch, CLUSTER, env)
    assert result.exit_code == 0, result.output
    config = build_config(seen)
    assert config.name == "n2" and config.auto_compaction.retention == 1800
    # A flag beats a variable; RAFTKV_* beats ETCD_*.
    env["RAFTKV_AUTO_COMPACTION_RETENTION"] = "2"
    result, seen = _invoke(monkeypatch, [*CLUSTER, "--name", "n2"], {**env, "ETCD_NAME": "n1"})
    assert result.exit_code == 0, result.output
    assert build_config(seen).name == "n2" and build_config(seen).auto_compaction.retention == 7200


def test_flags_raftkv_cannot_honour_are_refused(monkeypatch):
    for args, words in (
        (["--enable-v2"], "--enable-v2=true: raftkv cannot honour"),
        (["--wal-dir", "/tmp/w"], "--wal-dir=/tmp/w: raftkv cannot honour"),
        (["--max-txn-ops", "500"], "--max-txn-ops=500"),
        (["--logger", "syslog"], "--logger=syslog"),
        (["--no-such-flag"], "No such option"),
    ):
        result, seen = _invoke(monkeypatch, [*CLUSTER, *args])
        assert result.exit_code == 2 and words in result.output, (args, result.output)
        assert not seen
    # etcd's defaults ask for nothing raftkv lacks: accepted.
    ok = ["--enable-v2=false", "--max-txn-ops", "128", "--logger", "capnslog", "--proxy", "off"]
    result, seen = _invoke(monkeypatch, [*CLUSTER, "--name", "n1", *ok])
    assert result.exit_code == 0, result.output


def test_etcd_yaml_config_file(monkeypatch, tmp_path):
    config_file = tmp_path / "etcd.yml"
    config_file.write_text(
        "name: n2\n"
        "data-dir: /var/lib/n2\n"
        "initial-cluster: n1=http://127.0.0.1:12380,n2=http://127.0.0.1:22380\n"
        "initial-advertise-peer-urls: http://127.0.0.1:22380\n"
        "heartbeat-interval: 50\n"
        "enable-v2: false\n"
        "wal-dir:\n"
        "log-outputs: [stderr, stdout]\n"
        "auto-compaction-mode: revision\n"
        "auto-compaction-retention: '1000'\n"
        "client-transport-security:\n  cert-file:\n  client-cert-auth: false\n"
    )
    result, seen = _invoke(monkeypatch, ["--config-file", str(config_file)])
    assert result.exit_code == 0, result.output
    config = build_config(seen)
    assert (config.name, str(config.data_dir), config.heartbeat_interval_ms) == (
        "n2",
        "/var/lib/n2",
        50,
    )
    assert config.auto_compaction.mode == "revision" and seen["log_outputs"] == "stderr,stdout"
    assert config.client_tls.empty  # the empty TLS map asks for nothing
    # etcd would ignore flags and variables beside a config file: refused, never dropped.
    result, _ = _invoke(monkeypatch, ["--config-file", str(config_file), "--name", "n1"])
    assert result.exit_code == 2 and "--config-file is given, and so is --name" in result.output
    result, _ = _invoke(monkeypatch, ["--config-file", str(config_file)], {"ETCD_DEBUG": "true"})
    assert result.exit_code == 2 and "ETCD_DEBUG" in result.output
    for extra, words in (
        ("enable-v2: true\n", "--enable-v2=true"),
        ("experimental-corrupt-check-time: 5m\n", "does not know the setting"),
        ("peer-transport-security:\n  no-such-setting: 1\n", "does not know the TLS setting"),
    ):
        bad = tmp_path / "bad.yml"
        bad.write_text(config_file.read_text() + extra)
        result, seen = _invoke(monkeypatch, ["--config-file", str(bad)])
        assert result.exit_code == 2 and words in result.output, (extra, result.output)
