"""Members dying and coming back: SIGKILL, SIGTERM, snapshot catch-up, whole-cluster restart.

Each test runs its own cluster (heartbeat 50 ms, election timeout 500 ms unless stated), and
prints what it measured (run with ``-s`` to see the figures).
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import TYPE_CHECKING, Any

import grpc
import pytest

from raftkv.pb.etcdserverpb import rpc_pb2, rpc_pb2_grpc

if TYPE_CHECKING:
    from collections.abc import Callable

    from tests.integration.conftest import LocalCluster

    MakeCluster = Callable[..., LocalCluster]

pytestmark = pytest.mark.integration


def put(cluster: LocalCluster, name: str, key: str, value: str, timeout: float = 2.0) -> int:
    resp = cluster.kv(name).Put(
        rpc_pb2.PutRequest(key=key.encode(), value=value.encode()), timeout=timeout
    )
    return int(resp.header.revision)


def get(cluster: LocalCluster, name: str, key: str, *, serializable: bool = False) -> bytes | None:
    resp = cluster.kv(name).Range(
        rpc_pb2.RangeRequest(key=key.encode(), serializable=serializable), timeout=5
    )
    return resp.kvs[0].value if resp.kvs else None


def count_prefix(cluster: LocalCluster, name: str, prefix: bytes) -> int:
    end = prefix[:-1] + bytes([prefix[-1] + 1])
    resp = cluster.kv(name).Range(
        rpc_pb2.RangeRequest(key=prefix, range_end=end, count_only=True, serializable=True),
        timeout=10,
    )
    return int(resp.count)


def hash_kv(cluster: LocalCluster, name: str, revision: int) -> int:
    resp = cluster.maintenance(name).HashKV(rpc_pb2.HashKVRequest(revision=revision), timeout=10)
    return int(resp.hash)


def status(cluster: LocalCluster, name: str) -> rpc_pb2.StatusResponse:
    st = cluster.status(name, timeout=5)
    assert st is not None, f"{name} does not answer\n{cluster.describe()}"
    return st


def report(text: str) -> None:
    print(f"\n[measured] {text}")


def test_kill_leader_new_leader_within_3s(make_cluster: MakeCluster) -> None:
    cluster = make_cluster()
    leader = cluster.wait_leader()
    for i in range(50):
        put(cluster, leader, f"k/{i}", str(i))
    survivors = [n for n in cluster.nodes if n != leader]

    t0 = time.monotonic()
    cluster.kill(leader)
    new_leader = cluster.wait_leader(timeout=10, among=survivors, not_=leader)
    elected = time.monotonic() - t0
    # Writes succeed again, through either survivor (a follower forwards to the leader).
    written = None
    while time.monotonic() - t0 < 10:
        try:
            put(cluster, survivors[0], "after/kill", "ok", timeout=1)
            written = time.monotonic() - t0
            break
        except grpc.RpcError:
            time.sleep(0.02)
    assert written is not None, f"no write succeeded within 10 s\n{cluster.describe()}"
    report(f"leader SIGKILLed: new leader {new_leader} after {elected:.3f} s, "
           f"first write after {written:.3f} s")  # fmt: skip
    assert elected < 3.0, cluster.describe()
    assert written < 3.0, cluster.describe()
    assert get(cluster, survivors[1], "after/kill") == b"ok"
    assert get(cluster, survivors[1], "k/49") == b"49"

    # The killed member restarts, catches up, and serves what it missed.
    cluster.start(leader)
    target = status(cluster, new_leader).raftAppliedIndex
    took = cluster.wait_applied(leader, target, timeout=20)
    report(f"SIGKILLed member restarted and applied index {target} after {took:.3f} s")
    assert get(cluster, leader, "after/kill", serializable=True) == b"ok"
    cluster.wait_leader()


async def _write_many(endpoint: str, count: int, concurrency: int, value: bytes) -> float:
    start = time.monotonic()
    next_key = iter(range(count))
    async with grpc.aio.insecure_channel(endpoint) as channel:
        stub = rpc_pb2_grpc.KVStub(channel)

        async def worker() -> None:
            for i in next_key:
                key = f"bulk/{i:06d}".encode()
                for attempt in range(5):
                    try:
                        await stub.Put(rpc_pb2.PutRequest(key=key, value=value), timeout=10)
                        break
                    except grpc.aio.AioRpcError:
                        if attempt == 4:
                            raise
                        await asyncio.sleep(0.1)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.monotonic() - start


def test_follower_catches_up_by_snapshot(make_cluster: MakeCluster) -> None:
    cluster = make_cluster(extra_args=("--snapshot-count", "1000"))
    leader = cluster.wait_leader()
    follower = next(n for n in cluster.nodes if n != leader)
    put(cluster, leader, "before", "x")
    cluster.kill(follower)
    behind = 20_000
    took = asyncio.run(
        _write_many(cluster.nodes[leader].endpoint, behind, concurrency=128, value=b"v" * 64)
    )
    report(f"{behind} puts from 128 concurrent clients in {took:.2f} s ({behind / took:.0f}/s)")
    leader = cluster.wait_leader(among=[n for n in cluster.nodes if n != follower])
    target = status(cluster, leader).raftAppliedIndex
    log_before = cluster.nodes[follower].log_path.read_text(errors="replace")

    t0 = time.monotonic()
    cluster.start(follower)
    took = cluster.wait_applied(follower, target, timeout=60)
    report(f"follower restarted {behind} entries behind: applied index {target} after {took:.2f} s")
    assert count_prefix(cluster, follower, b"bulk/") == behind
    rev = int(status(cluster, leader).header.revision)
    deadline = time.monotonic() + 10
    while hash_kv(cluster, follower, rev) != hash_kv(cluster, leader, rev):
        assert time.monotonic() < deadline, "HashKV differs between the follower and the leader"
        time.sleep(0.1)
    log_after = cluster.nodes[follower].log_path.read_text(errors="replace")[len(log_before) :]
    restored = [line for line in log_after.splitlines() if re.search(r"snapshot", line, re.I)]
    report(f"follower log lines about snapshots after restart: {restored[:3]}")
    assert restored, f"no snapshot in the follower's log after restart:\n{log_after[-3000:]}"
    assert get(cluster, follower, "before", serializable=True) == b"x"
    assert time.monotonic() - t0 < 60


def test_graceful_stop_hands_leadership_over(make_cluster: MakeCluster) -> None:
    # A long election timeout: without a hand-over, a new leader needs at least 2 s.
    cluster = make_cluster(heartbeat_ms=100, election_ms=2000)
    leader = cluster.wait_leader()
    put(cluster, leader, "k", "v")
    term = status(cluster, leader).raftTerm
    survivors = [n for n in cluster.nodes if n != leader]

    t0 = time.monotonic()
    cluster.signal(leader, 15)  # SIGTERM
    new_leader = cluster.wait_leader(timeout=10, among=survivors, not_=leader)
    took = time.monotonic() - t0
    code = cluster.nodes[leader].proc.wait(15)  # type: ignore[union-attr]
    stopped = time.monotonic() - t0
    report(f"leader SIGTERMed: {new_leader} leads after {took:.3f} s; old leader exited "
           f"{code} after {stopped:.3f} s")  # fmt: skip
    assert code == 0, cluster.describe()
    assert took < 1.0, f"no hand-over: {took:.3f} s\n{cluster.describe()}"
    assert status(cluster, new_leader).raftTerm == term + 1
    assert "handing leadership to" in cluster.log_tail(leader, 50)
    put(cluster, survivors[0], "after", "stop")
    assert get(cluster, survivors[1], "after") == b"stop"


def test_whole_cluster_restart_keeps_data(make_cluster: MakeCluster) -> None:
    cluster = make_cluster(extra_args=("--snapshot-count", "100"))
    leader = cluster.wait_leader()
    for i in range(300):
        put(cluster, leader, f"keep/{i:03d}", f"value {i}")
    cluster.kv(leader).DeleteRange(
        rpc_pb2.DeleteRangeRequest(key=b"keep/000", range_end=b"keep/010"), timeout=5
    )
    rev = put(cluster, leader, "keep/last", "last")
    cluster.kv(leader).Compact(rpc_pb2.CompactionRequest(revision=rev - 5), timeout=5)
    for name in cluster.nodes:
        cluster.wait_applied(name, status(cluster, leader).raftAppliedIndex)
    before = {name: hash_kv(cluster, name, rev) for name in cluster.nodes}
    assert len(set(before.values())) == 1

    cluster.stop_all()
    t0 = time.monotonic()
    cluster.start()
    leader = cluster.wait_leader(timeout=30)
    report(f"whole cluster restarted: leader after {time.monotonic() - t0:.2f} s")
    after: dict[str, Any] = {}
    for name in cluster.nodes:
        st = status(cluster, name)
        assert st.header.revision == rev, (name, st.header.revision, rev)
        after[name] = hash_kv(cluster, name, rev)
    assert after == before
    assert count_prefix(cluster, leader, b"keep/") == 300 - 10 + 1
    assert get(cluster, leader, "keep/299") == b"value 299"
    assert get(cluster, leader, "keep/005") is None
    with pytest.raises(grpc.RpcError) as info:  # the compaction survived too
        cluster.kv(leader).Range(rpc_pb2.RangeRequest(key=b"keep/001", revision=2), timeout=5)
    assert info.value.details() == "etcdserver: mvcc: required revision has been compacted"
    put(cluster, leader, "after/restart", "ok")
