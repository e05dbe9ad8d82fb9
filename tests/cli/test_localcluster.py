"""The local-cluster launcher shared by ``raftkv cluster up``, the integration tests and the
benchmarks: ports below the ephemeral range, etcd-style command lines that ``raftkv node``
accepts as they are, stopping, and members that do not outlive whoever started them."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from raftkv_cli.localcluster import (
    RAFTKV_NODE,
    MemberSpec,
    agreed_leader,
    ephemeral_port_start,
    free_ports,
    local_members,
    member_argv,
    spawn,
    stop,
)
from raftkv_cli.node import build_config, node_command

from raftkv.pb.etcdserverpb import rpc_pb2


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_free_ports_are_distinct_free_and_below_the_ephemeral_range() -> None:
    ports = free_ports(12)
    assert len(set(ports)) == 12
    assert all(10_000 <= p < ephemeral_port_start() for p in ports)
    assert all(_bindable(p) for p in ports)


def test_consecutive_free_ports_form_a_run_and_members_get_distinct_ports() -> None:
    first = free_ports(3, consecutive=True)
    assert first == list(range(first[0], first[0] + 3))
    members = local_members(["a", "b"])
    assert [m.name for m in members] == ["a", "b"]
    assert len({p for m in members for p in (m.client_port, m.peer_port)}) == 4


def test_member_argv_is_what_raftkv_node_parses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    members = [MemberSpec("a", 20001, 20002), MemberSpec("b", 20003, 20004)]
    argv = member_argv(
        RAFTKV_NODE, members[1], members, data_root=tmp_path, token="t", extra=["--log-level", "x"]
    )
    assert argv[: len(RAFTKV_NODE)] == list(RAFTKV_NODE)
    seen: dict[str, object] = {}
    monkeypatch.setattr("raftkv_cli.node.run", lambda params: seen.update(params))
    result = CliRunner().invoke(node_command, argv[len(RAFTKV_NODE) :])
    assert result.exit_code == 0, result.output
    config = build_config(seen)
    assert config.name == "b"
    assert config.data_dir == tmp_path / "b"
    assert config.initial_cluster == {
        "a": ("http://127.0.0.1:20002",),
        "b": ("http://127.0.0.1:20004",),
    }
    assert config.initial_cluster_token == "t"
    assert seen["log_level"] == "x"  # extra flags come last, after the layout
    assert member_argv(["etcd"], members[0], members, data_root=tmp_path, token="t")[0] == "etcd"


def _status(leader: int, member_id: int) -> rpc_pb2.StatusResponse:
    st = rpc_pb2.StatusResponse(leader=leader)
    st.header.member_id = member_id
    return st


def test_agreed_leader_needs_every_member_to_name_the_same_one() -> None:
    assert agreed_leader([_status(7, 1), _status(7, 7)]) == 7
    assert agreed_leader([_status(7, 1), None]) is None  # one does not answer
    assert agreed_leader([_status(7, 1), _status(0, 7)]) is None  # one knows no leader
    assert agreed_leader([_status(7, 1), _status(9, 9)]) is None  # they disagree


def _wait_for_line(path: Path, text: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in path.read_text():
        assert time.monotonic() < deadline, f"no {text!r} in {path}: {path.read_text()!r}"
        time.sleep(0.02)


def test_stop_terminates_and_kills_only_what_ignores_sigterm(tmp_path: Path) -> None:
    polite = spawn(["sleep", "60"], log_path=tmp_path / "polite.log")
    stubborn_code = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('ready', flush=True); time.sleep(60)"
    )
    stubborn = spawn([sys.executable, "-c", stubborn_code], log_path=tmp_path / "stubborn.log")
    _wait_for_line(tmp_path / "stubborn.log", "ready")
    assert stop([polite, stubborn], timeout_s=1.0) == [stubborn.pid]
    assert polite.returncode == -signal.SIGTERM
    assert stubborn.returncode == -signal.SIGKILL


def test_a_spawned_member_dies_with_the_process_that_started_it(tmp_path: Path) -> None:
    log = tmp_path / "member.log"
    parent_code = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from raftkv_cli.localcluster import spawn\n"
        f"p = spawn(['sleep', '60'], log_path=Path({str(log)!r}))\n"
        "print(p.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", parent_code], stdout=subprocess.PIPE)
    try:
        assert parent.stdout is not None
        member = int(parent.stdout.readline())
        assert os.getsid(member) == member  # a session of its own: Ctrl-C is not sent to it
        parent.kill()
        parent.wait(10)
        deadline = time.monotonic() + 10
        while _alive(member):
            assert time.monotonic() < deadline, "the member outlived its SIGKILLed parent"
            time.sleep(0.05)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(10)
        if parent.stdout is not None:
            parent.stdout.close()


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie awaiting its reaper counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
