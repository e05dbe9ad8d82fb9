"""Backups as an operator takes them: ``etcdctl snapshot save`` and ``raftkv snapshot save``
against a running cluster, ``raftkv snapshot status``, and ``raftkv snapshot restore`` into
the data directories of a new 3-member cluster that must serve the same keys at the same
revisions."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from collections.abc import Callable

    from tests.integration.conftest import LocalCluster

    MakeCluster = Callable[..., LocalCluster]

pytestmark = pytest.mark.integration


def raftkv(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "raftkv_cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"raftkv {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def all_keys(cluster: LocalCluster, endpoint: str) -> dict[str, tuple[str, int, int, int]]:
    """key -> (value, create_revision, mod_revision, version), read with etcdctl."""
    import base64

    out: Any = cluster.etcdctl_json("get", "", "--prefix", endpoints=endpoint)
    return {
        base64.b64decode(kv["key"]).decode(): (
            base64.b64decode(kv.get("value", "")).decode(),
            kv["create_revision"],
            kv["mod_revision"],
            kv.get("version", 0),
        )
        for kv in out.get("kvs", [])
    }


def restore_into(new: LocalCluster, backup: Path) -> None:
    initial = ",".join(f"{n.name}={n.peer_url}" for n in new.nodes.values())
    for node in new.nodes.values():
        raftkv(
            "snapshot", "restore", str(backup),
            "--data-dir", str(node.data_dir),
            "--name", node.name,
            "--initial-cluster", initial,
            "--initial-cluster-token", "it-cluster",
            "--initial-advertise-peer-urls", node.peer_url,
        )  # fmt: skip


def test_save_status_restore_into_a_new_cluster(
    make_cluster: MakeCluster, plan_cluster: MakeCluster, tmp_path: Path
) -> None:
    old = make_cluster()
    for i in range(50):
        old.etcdctl("put", f"k{i % 20}", f"v{i}")
    old.etcdctl("del", "k3")
    old.etcdctl("put", "\u00e9t\u00e9", "summer")
    want = all_keys(old, old.endpoints)
    follower = next(n for n in old.nodes if n != old.wait_leader())
    endpoint = old.nodes[follower].endpoint

    # The real etcdctl accepts raftkv's stream (size and sha256) and writes the file.
    by_etcdctl = tmp_path / "etcdctl.db"
    saved = old.etcdctl("snapshot", "save", str(by_etcdctl), endpoints=endpoint)
    assert "Snapshot saved at" in saved.stdout
    by_raftkv = tmp_path / "raftkv.db"
    assert "Snapshot saved at" in raftkv("snapshot", "save", str(by_raftkv), "--endpoints",
                                         endpoint).stdout  # fmt: skip

    status = json.loads(raftkv("snapshot", "status", str(by_etcdctl), "-w", "json").stdout)
    assert set(status) == {"hash", "revision", "totalKey", "totalSize"}
    assert status["revision"] == old.etcdctl_json("get", "k0")["header"]["revision"]
    assert status["totalSize"] == by_etcdctl.stat().st_size
    # The hash is HashKV's at the image's revision, so it can be checked against a member.
    hashkv = old.etcdctl_json("endpoint", "hashkv", f"--rev={status['revision']}",
                              endpoints=endpoint)  # fmt: skip
    assert hashkv[0]["HashKV"]["hash"] == status["hash"]
    again = json.loads(raftkv("snapshot", "status", str(by_raftkv), "-w", "json").stdout)
    assert again["revision"] == status["revision"] and again["hash"] == status["hash"]
    table = raftkv("snapshot", "status", str(by_etcdctl), "-w", "table").stdout
    assert "| REVISION | TOTAL KEYS | TOTAL SIZE |" in table
    assert re.search(rf"\|\s+{status['revision']} \|", table), table
    simple = raftkv("snapshot", "status", str(by_etcdctl)).stdout.strip()
    assert simple.startswith(f"{status['hash']:x}, {status['revision']}, ")

    damaged = tmp_path / "damaged.db"
    data = bytearray(by_etcdctl.read_bytes())
    data[100] ^= 0xFF
    damaged.write_bytes(bytes(data))
    refused = raftkv("snapshot", "status", str(damaged), check=False)
    assert refused.returncode != 0 and "sha256" in refused.stderr

    new = plan_cluster()
    started = time.monotonic()
    restore_into(new, by_etcdctl)
    restore_s = time.monotonic() - started
    again_refused = raftkv("snapshot", "restore", str(by_etcdctl), "--data-dir",
                           str(new.nodes["infra1"].data_dir), check=False)  # fmt: skip
    assert again_refused.returncode != 0 and "exists" in again_refused.stderr
    new.start()
    new.wait_leader(timeout=30)
    for name in new.nodes:
        assert all_keys(new, new.nodes[name].endpoint) == want, name
    members = new.etcdctl_json("member", "list")["members"]
    assert sorted(m["name"] for m in members) == ["infra1", "infra2", "infra3"]
    # The new cluster goes on from the image's revision.
    put = new.etcdctl_json("put", "after", "restore")
    assert put["header"]["revision"] == status["revision"] + 1
    print(f"restore of 3 members: {restore_s:.2f} s")
