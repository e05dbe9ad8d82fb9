"""Every etcdctl client command against a real three-member raftkv cluster.

One cluster serves the whole module; each test works under its own key prefix. etcdctl is the
Debian ``etcd-client`` 3.4 build; its ``get`` has no ``--count-only`` (added in 3.5), so
count-only and the min/max revision filters are exercised over gRPC instead.
"""

from __future__ import annotations

import base64
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest

from raftkv.pb.etcdserverpb import rpc_pb2

if TYPE_CHECKING:
    from tests.integration.conftest import LocalCluster

pytestmark = pytest.mark.integration


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def unb64(text: str) -> str:
    return base64.b64decode(text).decode()


def keys_of(doc: Any) -> list[str]:
    return [unb64(kv["key"]) for kv in doc.get("kvs", [])]


def values_of(doc: Any) -> list[str]:
    return [unb64(kv.get("value", "")) for kv in doc.get("kvs", [])]


def revision(cluster: LocalCluster) -> int:
    doc = cluster.etcdctl_json("get", "revision-probe")
    return int(doc["header"]["revision"])


# -- put and get ---------------------------------------------------------------------------------


def test_put_flags(cluster: LocalCluster) -> None:
    assert cluster.etcdctl("put", "p/a", "1").stdout == "OK\n"
    assert cluster.etcdctl("put", "p/a", "2", "--prev-kv").stdout == "OK\np/a\n1\n"
    # --ignore-value keeps the value and bumps the version.
    assert cluster.etcdctl("put", "--ignore-value", "p/a").stdout == "OK\n"
    doc = cluster.etcdctl_json("get", "p/a")
    assert values_of(doc) == ["2"]
    assert doc["kvs"][0]["version"] == 3
    # ... and fails on a missing key, with etcd's error.
    r = cluster.etcdctl("put", "--ignore-value", "p/missing", check=False)
    assert r.returncode != 0
    assert "Error: etcdserver: key not found" in r.stderr
    # The value may also come from stdin.
    assert cluster.etcdctl("put", "p/stdin", stdin="from stdin").stdout == "OK\n"
    assert cluster.etcdctl("get", "p/stdin", "--print-value-only").stdout == "from stdin\n"


def test_get_flags(cluster: LocalCluster) -> None:
    # Written in an order that makes every sort target give a different order.
    writes = [("g/b", "3"), ("g/c", "1"), ("g/a", "2"), ("g/c", "0"), ("g/c", "5")]
    revs = {}
    for key, value in writes:
        cluster.etcdctl("put", key, value)
        revs[(key, value)] = revision(cluster)
    cluster.etcdctl("put", "g0", "outside the prefix")

    def get(*args: str) -> list[str]:
        return keys_of(cluster.etcdctl_json("get", *args))

    assert cluster.etcdctl("get", "g/a").stdout == "g/a\n2\n"
    assert get("g/", "--prefix") == ["g/a", "g/b", "g/c"]
    assert get("g/b", "g/d") == ["g/b", "g/c"]  # an explicit range end
    assert get("g/b", "--from-key")[:3] == ["g/b", "g/c", "g0"]
    assert get("g/", "--prefix", "--limit", "2") == ["g/a", "g/b"]
    doc = cluster.etcdctl_json("get", "g/", "--prefix", "--limit", "2")
    assert doc["more"] is True and doc["count"] == 3
    assert get("g/", "--prefix", "--order", "DESCEND") == ["g/c", "g/b", "g/a"]
    assert get("g/", "--prefix", "--sort-by", "KEY", "--order", "DESCEND") == ["g/c", "g/b", "g/a"]
    assert get("g/", "--prefix", "--sort-by", "VALUE") == ["g/a", "g/b", "g/c"]  # 2, 3, 5
    assert get("g/", "--prefix", "--sort-by", "VERSION", "--order", "DESCEND")[0] == "g/c"
    assert get("g/", "--prefix", "--sort-by", "CREATE") == ["g/b", "g/c", "g/a"]
    assert get("g/", "--prefix", "--sort-by", "MODIFY") == ["g/b", "g/a", "g/c"]
    assert get("g/", "--prefix", "--sort-by", "MODIFY", "--order", "DESCEND") == [
        "g/c",
        "g/a",
        "g/b",
    ]
    keys_only = cluster.etcdctl_json("get", "g/", "--prefix", "--keys-only")
    assert keys_of(keys_only) == ["g/a", "g/b", "g/c"]
    assert all("value" not in kv for kv in keys_only["kvs"])
    assert cluster.etcdctl("get", "g/", "--prefix", "--keys-only").stdout == "g/a\n\ng/b\n\ng/c\n\n"
    assert cluster.etcdctl("get", "g/", "--prefix", "--print-value-only").stdout == "2\n3\n5\n"
    # Reads at an old revision, linearizable and serializable.
    old = revs[("g/c", "1")]
    assert values_of(cluster.etcdctl_json("get", "g/c", "--rev", str(old))) == ["1"]
    assert values_of(cluster.etcdctl_json("get", "g/c", f"--rev={old + 1}")) == ["1"]
    for node in cluster.nodes.values():  # every member, once it has applied the writes
        deadline = time.monotonic() + 5
        while True:
            doc = cluster.etcdctl_json(
                "get", "g/", "--prefix", "--consistency=s", endpoints=node.endpoint
            )
            if values_of(doc) == ["2", "3", "5"] or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert values_of(doc) == ["2", "3", "5"], node.name
    assert cluster.etcdctl("get", "g/", "--prefix", "--hex", "--keys-only").stdout.startswith(
        "\\x67\\x2f\\x61"
    )


def test_range_flags_etcdctl_lacks(cluster: LocalCluster) -> None:
    """count_only and the min/max revision filters, which etcdctl 3.4 cannot send."""
    for i in range(4):
        cluster.etcdctl("put", f"r/{i}", str(i))
    first = revision(cluster) - 3
    kv = cluster.kv("infra1")
    count = kv.Range(rpc_pb2.RangeRequest(key=b"r/", range_end=b"r0", count_only=True), timeout=5)
    assert count.count == 4 and not count.kvs
    resp = kv.Range(
        rpc_pb2.RangeRequest(key=b"r/", range_end=b"r0", min_mod_revision=first + 2), timeout=5
    )
    assert [k.key for k in resp.kvs] == [b"r/2", b"r/3"]
    assert resp.count == 4  # count ignores the filters, as in etcd
    resp = kv.Range(
        rpc_pb2.RangeRequest(key=b"r/", range_end=b"r0", max_create_revision=first + 1), timeout=5
    )
    assert [k.key for k in resp.kvs] == [b"r/0", b"r/1"]


# -- delete and txn ------------------------------------------------------------------------------


def test_del_prefix_prev_kv(cluster: LocalCluster) -> None:
    for key, value in [("d/a", "1"), ("d/b", "2"), ("d/c", "3"), ("d0", "keep")]:
        cluster.etcdctl("put", key, value)
    out = cluster.etcdctl("del", "--prefix", "--prev-kv", "d/").stdout
    assert out == "3\nd/a\n1\nd/b\n2\nd/c\n3\n"
    assert cluster.etcdctl("get", "d/", "--prefix").stdout == ""
    assert cluster.etcdctl("get", "d0", "--print-value-only").stdout == "keep\n"
    assert cluster.etcdctl("del", "d/", "--prefix").stdout == "0\n"
    # A plain delete and a ranged one.
    cluster.etcdctl("put", "d/x", "1")
    cluster.etcdctl("put", "d/y", "1")
    assert cluster.etcdctl("del", "d/x", "d/y").stdout == "1\n"
    assert cluster.etcdctl("del", "d/y").stdout == "1\n"
    doc = cluster.etcdctl_json("del", "d0", "--prev-kv")
    assert doc["deleted"] == 1 and values_of({"kvs": doc["prev_kvs"]}) == ["keep"]


def test_txn_stdin(cluster: LocalCluster) -> None:
    cluster.etcdctl("put", "t/a", "1")
    # The non-interactive form: compares, a blank line, success ops, a blank line, failure ops.
    script = 'value("t/a") = "1"\nmod("t/a") > "0"\n\nput t/a 2\nget t/a\n\nput t/b lost\n\n'
    out = cluster.etcdctl("txn", stdin=script).stdout
    assert out == "SUCCESS\n\nOK\n\nt/a\n2\n"
    out = cluster.etcdctl("txn", stdin=script).stdout  # t/a is 2 now: the failure branch
    assert out == "FAILURE\n\nOK\n"
    assert cluster.etcdctl("get", "t/b", "--print-value-only").stdout == "lost\n"
    doc = cluster.etcdctl_json(
        "txn", stdin='version("t/none") = "0"\n\nput t/c 3\ndel t/b\nget t/ --prefix\n\n\n'
    )
    assert doc["succeeded"] is True
    ops = [next(iter(r["Response"])) for r in doc["responses"]]
    assert ops == ["ResponsePut", "ResponseDeleteRange", "ResponseRange"]
    # One txn, one revision.
    heads = {
        r["Response"][op]["header"]["revision"] for r, op in zip(doc["responses"], ops, strict=True)
    }
    assert heads == {doc["header"]["revision"]}
    assert keys_of(doc["responses"][2]["Response"]["ResponseRange"]) == ["t/a", "t/c"]
    # create() and a compare on a missing key.
    out = cluster.etcdctl("txn", stdin='create("t/zz") > "0"\n\n\nput t/zz x\n\n').stdout
    assert out.startswith("FAILURE")


# -- compaction ----------------------------------------------------------------------------------


def test_compaction_and_compacted_read(cluster: LocalCluster) -> None:
    cluster.etcdctl("put", "c/k", "old")
    old = revision(cluster)
    cluster.etcdctl("put", "c/k", "new")
    now = revision(cluster)
    assert cluster.etcdctl("compaction", str(now)).stdout == f"compacted revision {now}\n"
    r = cluster.etcdctl("get", "c/k", "--rev", str(old), check=False)
    assert r.returncode != 0
    assert "Error: etcdserver: mvcc: required revision has been compacted" in r.stderr
    # The compacted revision itself is still readable; the latest too.
    assert values_of(cluster.etcdctl_json("get", "c/k", "--rev", str(now))) == ["new"]
    assert cluster.etcdctl("get", "c/k", "--print-value-only").stdout == "new\n"
    r = cluster.etcdctl("get", "c/k", "--rev", str(now + 1000), check=False)
    assert "Error: etcdserver: mvcc: required revision is a future revision" in r.stderr
    r = cluster.etcdctl("compaction", str(old), check=False)  # already compacted
    assert "Error: etcdserver: mvcc: required revision has been compacted" in r.stderr
    cluster.etcdctl("put", "c/k", "newer")
    physical = revision(cluster)
    out = cluster.etcdctl("compaction", "--physical", str(physical)).stdout
    assert out == f"compacted revision {physical}\n"


# -- cluster and maintenance ---------------------------------------------------------------------


def test_member_list(cluster: LocalCluster) -> None:
    doc = cluster.etcdctl_json("member", "list")
    members = {m["name"]: m for m in doc["members"]}
    assert sorted(members) == ["infra1", "infra2", "infra3"]
    for name, node in cluster.nodes.items():
        assert members[name]["peerURLs"] == [node.peer_url]
        status = cluster.status(name)
        assert status is not None
        assert members[name]["ID"] == status.header.member_id
    table = cluster.etcdctl("member", "list", "-w", "table").stdout
    assert "infra1" in table and "started" in table


def test_member_list_has_every_client_url(cluster: LocalCluster) -> None:
    # Members publish their client URLs through the log shortly after start, as etcd does.
    deadline = time.monotonic() + 10
    while True:
        doc = cluster.etcdctl_json("member", "list")
        if all(m.get("clientURLs") for m in doc["members"]) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert all(m.get("clientURLs") for m in doc["members"])
    proc = cluster.etcdctl("endpoint", "health", "--cluster")
    out = proc.stdout + proc.stderr  # etcdctl 3.4 prints health lines to stderr
    assert out.count("is healthy") == 3


def test_endpoint_status(cluster: LocalCluster) -> None:
    doc = cluster.etcdctl_json("endpoint", "status")
    assert [d["Endpoint"] for d in doc] == [n.endpoint for n in cluster.nodes.values()]
    ids = {d["Status"]["header"]["member_id"] for d in doc}
    assert len(ids) == 3
    leaders = {d["Status"]["leader"] for d in doc}
    assert len(leaders) == 1 and leaders <= ids
    for d in doc:
        st = d["Status"]
        assert st["raftTerm"] >= 2
        assert st["raftIndex"] >= st["raftAppliedIndex"] > 0
        assert st["dbSize"] > 0
        assert st["header"]["cluster_id"] == doc[0]["Status"]["header"]["cluster_id"]
    table = cluster.etcdctl("endpoint", "status", "-w", "table").stdout
    assert table.count("true") >= 1


def test_endpoint_health(cluster: LocalCluster) -> None:
    out = (
        cluster.etcdctl("endpoint", "health").stderr + cluster.etcdctl("endpoint", "health").stdout
    )
    for node in cluster.nodes.values():
        assert f"{node.endpoint} is healthy" in out


def test_endpoint_hashkv_agrees(cluster: LocalCluster) -> None:
    for i in range(20):
        cluster.etcdctl("put", f"h/{i}", "x" * i)
    cluster.etcdctl("del", "h/1")
    rev = revision(cluster)
    deadline = time.monotonic() + 10
    while True:
        doc = cluster.etcdctl_json("endpoint", "hashkv")
        hashes = {d["Endpoint"]: d["HashKV"]["hash"] for d in doc}
        if len(set(hashes.values())) == 1 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert len(hashes) == 3 and len(set(hashes.values())) == 1, hashes
    # At a fixed revision the hash is the same, and stays the same after later writes.
    fixed = cluster.etcdctl_json("endpoint", "hashkv", "--rev", str(rev))
    cluster.etcdctl("put", "h/later", "y")
    again = cluster.etcdctl_json("endpoint", "hashkv", "--rev", str(rev))
    assert {d["HashKV"]["hash"] for d in fixed} == {d["HashKV"]["hash"] for d in again}
    assert len({d["HashKV"]["hash"] for d in fixed}) == 1


def test_snapshot_save(cluster: LocalCluster, tmp_path: Path) -> None:
    cluster.etcdctl("put", "s/key", "in the snapshot")
    for node in cluster.nodes.values():
        path = tmp_path / f"{node.name}.db"
        out = cluster.etcdctl("snapshot", "save", str(path), endpoints=node.endpoint)
        assert f"Snapshot saved at {path}" in out.stdout
        assert path.stat().st_size > 0
    # etcdctl insists on one endpoint, as with etcd.
    r = cluster.etcdctl("snapshot", "save", str(tmp_path / "x.db"), check=False)
    assert r.returncode != 0


def test_defrag(cluster: LocalCluster) -> None:
    out = cluster.etcdctl("defrag").stdout
    for node in cluster.nodes.values():
        assert f"Finished defragmenting etcd member[{node.endpoint}]" in out
    assert cluster.etcdctl("get", "s/key", "--print-value-only").stdout == "in the snapshot\n"


def test_move_leader(cluster: LocalCluster) -> None:
    leader = cluster.wait_leader()
    target = next(n for n in cluster.nodes if n != leader)
    target_id = cluster.nodes[target].member_id
    leader_id = cluster.nodes[leader].member_id
    out = cluster.etcdctl("move-leader", f"{target_id:x}").stdout
    assert out == f"Leadership transferred from {leader_id:x} to {target_id:x}\n"
    assert cluster.wait_leader(timeout=5) == target
    # Only the leader can move leadership; an unknown member is a bad transferee.
    other = next(n for n in cluster.nodes if n != target)
    r = cluster.etcdctl(
        "move-leader", f"{leader_id:x}", endpoints=cluster.nodes[other].endpoint, check=False
    )
    assert "no leader endpoint given" in r.stderr
    r = cluster.etcdctl("move-leader", "123", check=False)
    assert "Error: etcdserver: bad leader transferee" in r.stderr
    assert cluster.etcdctl("put", "m/after", "ok").stdout == "OK\n"


# -- bad input -----------------------------------------------------------------------------------


def _snapshot_state(cluster: LocalCluster) -> tuple[int, list[tuple[str, str | None]]]:
    doc = cluster.etcdctl_json("get", "", "--from-key")
    return doc["header"]["revision"], [(kv["key"], kv.get("value")) for kv in doc["kvs"]]


def test_bad_input_gets_etcd_errors_and_costs_no_data(cluster: LocalCluster) -> None:
    cluster.etcdctl("put", "bad/sentinel", "intact")
    before = _snapshot_state(cluster)

    def rejected(args: list[str], message: str, stdin: str | None = None) -> None:
        r = cluster.etcdctl(*args, stdin=stdin, check=False)
        assert r.returncode != 0, r.stdout
        assert f"Error: {message}" in r.stderr, r.stderr
        assert _snapshot_state(cluster) == before

    rejected(["put", "", "v"], "etcdserver: key is not provided")
    rejected(["put", "bad/big"], "etcdserver: request is too large", stdin="x" * (1600 * 1024))
    many = "\n" + "".join(f"put bad/k{i} v\n" for i in range(129)) + "\n\n"
    rejected(["txn"], "etcdserver: too many operations in txn request", stdin=many)
    rejected(
        ["txn"],
        "etcdserver: duplicate key given in txn request",
        stdin="\nput bad/d 1\nput bad/d 2\n\n\n",
    )
    rejected(
        ["txn"],
        "etcdserver: duplicate key given in txn request",
        stdin="\nput bad/e 1\ndel bad/ --prefix\n\n\n",
    )
    # 128 ops is the limit, and allowed.
    ok = "\n" + "".join(f"get bad/k{i}\n" for i in range(128)) + "\n\n"
    assert cluster.etcdctl("txn", stdin=ok).stdout.startswith("SUCCESS")

    # etcdctl validates sorts itself; a raw client reaches the server's check.
    r = cluster.etcdctl("get", "bad/", "--prefix", "--sort-by", "SIZE", check=False)
    assert r.returncode != 0
    kv = cluster.kv("infra2")
    for request in (
        rpc_pb2.RangeRequest(
            key=b"bad/", range_end=b"bad0", sort_order=rpc_pb2.RangeRequest.SortOrder.ValueType(7)
        ),
        rpc_pb2.RangeRequest(
            key=b"bad/",
            range_end=b"bad0",
            sort_order=rpc_pb2.RangeRequest.ASCEND,
            sort_target=rpc_pb2.RangeRequest.SortTarget.ValueType(9),
        ),
    ):
        with pytest.raises(grpc.RpcError) as info:
            kv.Range(request, timeout=5)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert info.value.details() == "etcdserver: invalid sort option"
    # The same errors over gRPC carry etcd's status codes.
    with pytest.raises(grpc.RpcError) as info:
        kv.Put(rpc_pb2.PutRequest(key=b"", value=b"v"), timeout=5)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details() == "etcdserver: key is not provided"
    ops = [rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=b"bad/x", value=b"v"))] * 2
    with pytest.raises(grpc.RpcError) as info:
        kv.Txn(rpc_pb2.TxnRequest(success=ops), timeout=5)
    assert info.value.details() == "etcdserver: duplicate key given in txn request"
    with pytest.raises(grpc.RpcError) as info:
        kv.Put(rpc_pb2.PutRequest(key=b"bad/big", value=b"x" * (1600 * 1024)), timeout=5)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details() == "etcdserver: request is too large"
    assert _snapshot_state(cluster) == before
    assert cluster.etcdctl("get", "bad/sentinel", "--print-value-only").stdout == "intact\n"


def test_cluster_status_command(cluster: LocalCluster) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "raftkv_cli", "cluster", "status", "--endpoints", cluster.endpoints],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["NAME", "ID", "CLIENT"]
    leader = cluster.wait_leader()
    for name, node in cluster.nodes.items():
        row = next(line for line in lines if line.startswith(name + " "))
        assert f"{node.member_id:x}" in row and node.client_url in row
        assert ("*" in row.split()) == (name == leader)
    assert lines[-1].startswith(f"leader: {leader} (")
