"""``--auto-compaction-mode periodic`` with a short retention on a running cluster: the leader
compacts through the log, every member applies the same compaction, and history older than
the retention is gone while newer history is kept."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import grpc
import pytest

from raftkv.pb.etcdserverpb import rpc_pb2

if TYPE_CHECKING:
    from collections.abc import Callable

    from tests.integration.conftest import LocalCluster

    MakeCluster = Callable[..., LocalCluster]

pytestmark = pytest.mark.integration


def compacted(cluster: LocalCluster, name: str) -> int:
    resp = cluster.maintenance(name).HashKV(rpc_pb2.HashKVRequest(revision=0), timeout=5)
    return int(resp.compact_revision)


def test_periodic_auto_compaction_replicates(make_cluster: MakeCluster) -> None:
    args = ("--auto-compaction-mode", "periodic", "--auto-compaction-retention", "2s")
    cluster = make_cluster(extra_args=args)
    leader = cluster.wait_leader()
    kv = cluster.kv(leader)
    first = kv.Put(rpc_pb2.PutRequest(key=b"k", value=b"0"), timeout=5).header.revision
    deadline = time.monotonic() + 20
    i = 0
    while compacted(cluster, leader) <= first:
        assert time.monotonic() < deadline, f"no auto compaction\n{cluster.describe()}"
        i += 1
        kv.Put(rpc_pb2.PutRequest(key=b"k", value=str(i).encode()), timeout=5)
        time.sleep(0.05)
    rev = compacted(cluster, leader)
    assert rev > first
    # Every member applies the same compaction through the log.
    for name in cluster.nodes:
        deadline = time.monotonic() + 10
        while compacted(cluster, name) < rev:
            assert time.monotonic() < deadline, name
            time.sleep(0.05)
    with pytest.raises(grpc.RpcError) as err:
        kv.Range(rpc_pb2.RangeRequest(key=b"k", revision=first), timeout=5)
    assert "compacted" in (err.value.details() or "")
    # The retention window (2 s of history) is kept: the revision a moment ago still reads.
    now = kv.Put(rpc_pb2.PutRequest(key=b"k", value=b"x"), timeout=5).header.revision
    assert kv.Range(rpc_pb2.RangeRequest(key=b"k", revision=now - 1), timeout=5).kvs
    assert "completed auto compaction" in cluster.log_tail(leader, 200)
