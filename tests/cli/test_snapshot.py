"""``raftkv snapshot status|restore`` on backup files made in-process (no cluster)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from raftkv_cli.main import main
from raftkv_storage.backend import LmdbBackend
from raftkv_storage.log import LmdbRaftLog

from raftkv.kv import MemoryBackend, MVCCStore, PutRequest
from raftkv.kv.state_machine import KVStateMachine, dump_chunks
from raftkv.kv.types import CompactionRequest, DeleteRangeRequest
from raftkv.server.config import ServerConfig, parse_initial_cluster


def backup_bytes(store: MVCCStore, backend: MemoryBackend) -> bytes:
    """A file as Maintenance.Snapshot streams it: image, zero padding to 512, sha256."""
    image = b"".join(dump_chunks(backend, chunk_bytes=100))
    image += bytes(-len(image) % 512)
    return image + hashlib.sha256(image).digest()


@pytest.fixture
def backup(tmp_path: Path) -> tuple[Path, MVCCStore]:
    backend = MemoryBackend()
    store = KVStateMachine(backend).store
    with backend.write() as txn:
        for i in range(30):
            store.apply_in(txn, PutRequest(f"k{i % 7}".encode(), f"v{i}".encode()))
        store.apply_in(txn, DeleteRangeRequest(b"k1"))
        store.apply_in(txn, CompactionRequest(5))
    path = tmp_path / "backup.db"
    path.write_bytes(backup_bytes(store, backend))
    return path, store


INITIAL = "a=http://127.0.0.1:1,b=http://127.0.0.1:2,c=http://127.0.0.1:3"


def test_status_prints_etcdctl_shapes(backup: tuple[Path, MVCCStore]) -> None:
    path, store = backup
    runner = CliRunner()
    out = runner.invoke(main, ["snapshot", "status", str(path), "-w", "json"])
    assert out.exit_code == 0, out.output
    status = json.loads(out.output)
    assert status["revision"] == store.current_revision() == 32
    assert status["hash"] == store.hash_kv(0).hash
    assert status["totalSize"] == path.stat().st_size
    simple = runner.invoke(main, ["snapshot", "status", str(path)]).output
    assert simple.startswith(f"{status['hash']:x}, 32, {status['totalKey']}, ")
    fields = runner.invoke(main, ["snapshot", "status", str(path), "-w", "fields"]).output
    assert '"Revision" : 32' in fields


def test_status_refuses_damage(backup: tuple[Path, MVCCStore], tmp_path: Path) -> None:
    path, _ = backup
    data = path.read_bytes()
    bad = tmp_path / "bad.db"
    bad.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    out = CliRunner().invoke(main, ["snapshot", "status", str(bad)])
    assert out.exit_code == 1 and "sha256" in out.output
    bad.write_bytes(data[:-32])  # no digest: refused unless told to skip the check
    out = CliRunner().invoke(main, ["snapshot", "restore", str(bad), "--data-dir", "x"])
    assert out.exit_code == 1 and "missing hash" in out.output


def test_restore_seeds_a_member_of_a_new_cluster(
    backup: tuple[Path, MVCCStore], tmp_path: Path
) -> None:
    path, store = backup
    data_dir = tmp_path / "b.etcd"
    args = ["snapshot", "restore", str(path), "--data-dir", str(data_dir), "--name", "b"]
    args += ["--initial-cluster", INITIAL, "--initial-cluster-token", "tok"]
    args += ["--initial-advertise-peer-urls", "http://127.0.0.1:2"]
    out = CliRunner().invoke(main, args)
    assert out.exit_code == 0, out.output
    config = ServerConfig(
        name="b",
        initial_cluster=parse_initial_cluster(INITIAL),
        initial_cluster_token="tok",
        initial_advertise_peer_urls=("http://127.0.0.1:2",),
    )
    with LmdbBackend(data_dir / "member" / "kv") as backend:
        sm = KVStateMachine(backend)
        assert sm.applied_index() == 1
        assert sm.store.current_revision() == 32 and sm.store.compacted_revision() == 5
        assert sm.store.hash_kv(0) == store.hash_kv(0)
        assert sm.store.get(b"k1") is None and sm.store.get(b"k2") == store.get(b"k2")
    with LmdbRaftLog(data_dir / "member" / "raft") as log:
        snap = log.snapshot()
        assert (snap.meta.index, snap.meta.term, log.last_index()) == (1, 1, 1)
        assert snap.meta.conf_state.voters == tuple(sorted(config.member_ids().values()))
    assert not (tmp_path / "b.etcd.restoring").exists()
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 1 and "exists" in again.output


def test_restore_refuses_wal_dir_and_a_name_outside_the_cluster(
    backup: tuple[Path, MVCCStore], tmp_path: Path
) -> None:
    path, _ = backup
    base = ["snapshot", "restore", str(path), "--data-dir", str(tmp_path / "d")]
    out = CliRunner().invoke(main, [*base, "--wal-dir", str(tmp_path / "w")])
    assert out.exit_code == 2 and "--wal-dir is not supported" in out.output
    out = CliRunner().invoke(main, [*base, "--name", "zz", "--initial-cluster", INITIAL])
    assert out.exit_code == 2 and "no member named 'zz'" in out.output
    assert not (tmp_path / "d").exists()
