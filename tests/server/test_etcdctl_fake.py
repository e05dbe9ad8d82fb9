"""The real etcdctl (3.4, Debian's etcd-client) against the client services over a FakeNode.

One grpc.aio server runs on its own event loop in a background thread for the whole module;
each test uses its own keys. Expected outputs and error texts are etcd 3.4's, as etcdctl prints
them against a real etcd.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest

from raftkv.pb.etcdserverpb import rpc_pb2 as pb
from raftkv.pb.etcdserverpb import rpc_pb2_grpc
from raftkv.server.api import Member
from raftkv.server.fake_node import FakeNode
from raftkv.server.grpc_server import add_client_services, client_server_options

ETCDCTL = shutil.which("etcdctl")
pytestmark = pytest.mark.skipif(ETCDCTL is None, reason="etcdctl (Debian etcd-client) missing")

T = TypeVar("T")
OTHER = Member(0x1234ABCD, "other", ("http://127.0.0.1:2480",), ("http://127.0.0.1:2479",))


class Server:
    """A grpc.aio server with add_client_services(FakeNode), on a loop in its own thread."""

    def __init__(self) -> None:
        self.node = FakeNode(other_members=[OTHER])
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server: grpc.aio.Server | None = None
        self.port = self.submit(self._start).result(10)

    async def _start(self) -> int:
        self.server = grpc.aio.server(options=client_server_options(1536 * 1024))
        add_client_services(self.server, self.node, request_timeout_s=2.0)
        port = self.server.add_insecure_port("127.0.0.1:0")
        await self.server.start()
        return port

    def submit(self, fn: Callable[[], Any]) -> Future[Any]:
        async def call() -> Any:
            result = fn()
            return await result if asyncio.iscoroutine(result) else result

        return asyncio.run_coroutine_threadsafe(call(), self.loop)

    def on_loop(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the server's loop (the node is single-threaded) and return its result."""
        return self.submit(fn).result(10)  # type: ignore[no-any-return]

    def close(self) -> None:
        if self.server is not None:
            self.submit(lambda: self.server.stop(None) if self.server else None).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    def etcdctl(
        self, *args: str, stdin: str | bytes | None = None, ok: bool = True
    ) -> subprocess.CompletedProcess[str]:
        assert ETCDCTL is not None
        env = {**os.environ, "ETCDCTL_API": "3"}
        proc = subprocess.run(
            [ETCDCTL, f"--endpoints=127.0.0.1:{self.port}", "--command-timeout=5s", *args],
            input=stdin.decode() if isinstance(stdin, bytes) else stdin,
            capture_output=True,
            text=True,
            timeout=30,
            env=env,
            check=False,
        )
        if ok:
            assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
        else:
            assert proc.returncode != 0, (args, proc.stdout, proc.stderr)
        return proc

    def revision(self) -> int:
        return self.on_loop(self.node.store.current_revision)


@pytest.fixture(scope="module")
def srv() -> Iterator[Server]:
    server = Server()
    try:
        yield server
    finally:
        server.close()


def error_line(proc: subprocess.CompletedProcess[str]) -> str:
    """etcdctl's last line on stderr: "Error: <the server's details>"."""
    return proc.stderr.strip().splitlines()[-1]


# -- KV ----------------------------------------------------------------------------------------


def test_put_and_get(srv: Server) -> None:
    assert srv.etcdctl("put", "basic/foo", "bar").stdout == "OK\n"
    assert srv.etcdctl("get", "basic/foo").stdout == "basic/foo\nbar\n"
    prev = srv.etcdctl("put", "basic/foo", "baz", "--prev-kv").stdout
    assert prev == "OK\nbasic/foo\nbar\n"
    assert srv.etcdctl("get", "basic/missing").stdout == ""
    out = json.loads(srv.etcdctl("get", "basic/foo", "-w", "json").stdout)
    assert out["header"]["member_id"] == srv.node.member_id
    assert out["header"]["cluster_id"] == srv.node.cluster_id
    assert out["header"]["revision"] == srv.revision() and out["header"]["raft_term"] == 2
    assert out["count"] == 1 and out["kvs"][0]["version"] == 2


def test_get_with_every_range_flag(srv: Server) -> None:
    # "~" sorts after every other test's keys, so --from-key sees only these.
    for key, value in [("~f/a", "3"), ("~f/b", "1"), ("~f/c", "2"), ("~f/d", "0")]:
        srv.etcdctl("put", key, value)
    rev_before = srv.revision()
    srv.etcdctl("put", "~f/b", "9")

    def lines(*args: str) -> list[str]:
        return srv.etcdctl("get", *args).stdout.splitlines()

    assert lines("~f/", "--prefix", "--keys-only") == [
        "~f/a",
        "",
        "~f/b",
        "",
        "~f/c",
        "",
        "~f/d",
        "",
    ]
    assert lines("~f/c", "--from-key", "--keys-only") == ["~f/c", "", "~f/d", ""]
    assert lines("~f/a", "~f/c", "--keys-only") == ["~f/a", "", "~f/b", ""]  # [key, range_end)
    assert lines("~f/", "--prefix", "--limit=2") == ["~f/a", "3", "~f/b", "9"]
    assert lines("~f/b", f"--rev={rev_before}") == ["~f/b", "1"]
    assert lines("~f/", "--prefix", "--order=DESCEND", "--keys-only") == [
        "~f/d", "", "~f/c", "", "~f/b", "", "~f/a", "",
    ]  # fmt: skip
    assert lines("~f/", "--prefix", "--sort-by=VALUE", "--print-value-only") == ["0", "2", "3", "9"]
    assert (
        lines("~f/", "--prefix", "--sort-by=MODIFY", "--order=DESCEND", "--keys-only")[0] == "~f/b"
    )
    assert lines("~f/", "--prefix", "--sort-by=CREATE", "--keys-only")[0] == "~f/a"
    assert lines("~f/", "--prefix", "--sort-by=VERSION", "--order=DESCEND", "--keys-only")[0] == (
        "~f/b"
    )
    assert lines("~f/", "--prefix", "--sort-by=KEY", "--order=ASCEND", "--keys-only")[0] == "~f/a"
    assert lines("~f/d", "--print-value-only") == ["0"]
    counted = json.loads(srv.etcdctl("get", "~f/", "--prefix", "--limit=1", "-w", "json").stdout)
    assert counted["count"] == 4 and counted["more"] and len(counted["kvs"]) == 1
    if "--count-only" in srv.etcdctl("get", "--help").stdout:  # etcdctl 3.5+
        assert "4" in srv.etcdctl("get", "~f/", "--prefix", "--count-only").stdout

    barriers = srv.on_loop(lambda: srv.node.barriers)
    assert lines("~f/a", "--consistency=s") == ["~f/a", "3"]
    assert srv.on_loop(lambda: srv.node.barriers) == barriers  # served locally
    assert lines("~f/a", "--consistency=l") == ["~f/a", "3"]
    assert srv.on_loop(lambda: srv.node.barriers) == barriers + 1


def test_del_prefix_prev_kv(srv: Server) -> None:
    for i in range(3):
        srv.etcdctl("put", f"del/k{i}", f"v{i}")
    out = srv.etcdctl("del", "del/", "--prefix", "--prev-kv").stdout
    assert out == "3\ndel/k0\nv0\ndel/k1\nv1\ndel/k2\nv2\n"
    assert srv.etcdctl("del", "del/", "--prefix").stdout == "0\n"
    assert srv.etcdctl("get", "del/", "--prefix").stdout == ""


def test_txn_from_stdin(srv: Server) -> None:
    srv.etcdctl("put", "txn/k1", "v1")
    script = 'value("txn/k1") = "v1"\n\nput txn/k2 v2\nget txn/k1\n\nput txn/k3 v3\n\n'
    assert srv.etcdctl("txn", stdin=script).stdout == "SUCCESS\n\nOK\n\ntxn/k1\nv1\n"
    script = 'mod("txn/k1") > "1000"\n\nput txn/k2 x\n\nput txn/k3 v3\n\n'
    assert srv.etcdctl("txn", stdin=script).stdout == "FAILURE\n\nOK\n"
    assert srv.etcdctl("get", "txn/", "--prefix", "--print-value-only").stdout == "v1\nv2\nv3\n"
    interactive = srv.etcdctl("txn", "-i", stdin='version("txn/k2") = "1"\n\ndel txn/k2\n\n\n')
    assert "SUCCESS" in interactive.stdout and interactive.stdout.endswith("\n1\n")


def test_compaction_then_read_at_a_compacted_revision(srv: Server) -> None:
    srv.etcdctl("put", "compact/k", "old")
    old = srv.revision()
    srv.etcdctl("put", "compact/k", "new")
    current = srv.revision()
    assert srv.etcdctl("compaction", str(current)).stdout == f"compacted revision {current}\n"
    proc = srv.etcdctl("get", "compact/k", f"--rev={old}", ok=False)
    assert error_line(proc) == "Error: etcdserver: mvcc: required revision has been compacted"
    proc = srv.etcdctl("compaction", str(current), ok=False)
    assert error_line(proc) == "Error: etcdserver: mvcc: required revision has been compacted"
    proc = srv.etcdctl("get", "compact/k", f"--rev={current + 1000}", ok=False)
    assert error_line(proc) == "Error: etcdserver: mvcc: required revision is a future revision"
    assert srv.etcdctl("get", "compact/k", f"--rev={current}").stdout == "compact/k\nnew\n"
    srv.etcdctl("put", "compact/k", "newer")
    physical = srv.etcdctl("compaction", "--physical", str(srv.revision())).stdout
    assert physical.startswith("compacted revision ")


# -- Cluster and Maintenance ------------------------------------------------------------------


def test_member_list(srv: Server) -> None:
    out = srv.etcdctl("member", "list").stdout.splitlines()
    assert out == [
        "8e9e05c52164694d, started, default, http://localhost:2380, http://localhost:2379, false",
        "1234abcd, started, other, http://127.0.0.1:2480, http://127.0.0.1:2479, false",
    ]
    table = json.loads(srv.etcdctl("member", "list", "-w", "json").stdout)
    assert table["header"]["cluster_id"] == srv.node.cluster_id
    assert [m["ID"] for m in table["members"]] == [srv.node.member_id, OTHER.id]


def test_endpoint_status(srv: Server) -> None:
    index = srv.on_loop(lambda: srv.node.index)
    fields = srv.etcdctl("endpoint", "status").stdout.rstrip("\n").split(", ")
    # endpoint, id, version, db size, is leader, is learner, term, index, applied index, errors
    assert fields[:3] == [f"127.0.0.1:{srv.port}", "8e9e05c52164694d", "3.4.0"]
    assert fields[4:] == ["true", "false", "2", str(index), str(index), ""]
    status = json.loads(srv.etcdctl("endpoint", "status", "-w", "json").stdout)[0]["Status"]
    assert status["leader"] == srv.node.member_id and status["version"] == "3.4.0"
    assert status["dbSize"] > 0


def test_endpoint_health(srv: Server) -> None:
    out = srv.etcdctl("endpoint", "health").stderr  # etcdctl 3.4 reports health on stderr
    assert re.fullmatch(
        rf"127\.0\.0\.1:{srv.port} is healthy: successfully committed proposal: took = \S+\n",
        out,
    )
    srv.on_loop(lambda: setattr(srv.node, "leader", 0))
    try:
        proc = srv.etcdctl("endpoint", "health", "--command-timeout=1s", ok=False)
        assert "is unhealthy" in proc.stderr and "etcdserver: no leader" in proc.stderr
    finally:
        srv.on_loop(lambda: setattr(srv.node, "leader", srv.node.member_id))


def test_endpoint_hashkv(srv: Server) -> None:
    srv.etcdctl("put", "hash/k", "v")
    out = srv.etcdctl("endpoint", "hashkv").stdout
    expected = srv.on_loop(lambda: srv.node.store.hash_kv(0).hash)
    assert out == f"127.0.0.1:{srv.port}, {expected}\n"


def test_snapshot_save(srv: Server, tmp_path: Path) -> None:
    srv.etcdctl("put", "snap/k", "v" * 5000)
    path = tmp_path / "snap.db"
    proc = srv.etcdctl("snapshot", "save", str(path))
    assert proc.stdout == f"Snapshot saved at {path}\n"
    blob = path.read_bytes()
    data, digest = blob[:-32], blob[-32:]
    assert len(blob) % 512 == 32 and hashlib.sha256(data).digest() == digest
    raw = srv.on_loop(lambda: b"".join(srv.node.state_machine.snapshot_chunks()))
    assert data.startswith(raw[:14])  # the dump's magic


def test_defrag(srv: Server) -> None:
    before = srv.on_loop(lambda: srv.node.defragments)
    out = srv.etcdctl("defrag").stdout
    assert out == f"Finished defragmenting etcd member[127.0.0.1:{srv.port}]\n"
    assert srv.on_loop(lambda: srv.node.defragments) == before + 1


def test_alarm_list(srv: Server) -> None:
    assert srv.etcdctl("alarm", "list").stdout == ""
    srv.on_loop(lambda: srv.node.alarm_list.append((srv.node.member_id, pb.NOSPACE)))
    try:
        out = srv.etcdctl("alarm", "list").stdout
        assert out == f"memberID:{srv.node.member_id} alarm:NOSPACE \n"
    finally:
        srv.on_loop(srv.node.alarm_list.clear)


def test_move_leader(srv: Server) -> None:
    proc = srv.etcdctl("move-leader", "42", ok=False)
    assert error_line(proc) == "Error: etcdserver: bad leader transferee"
    try:
        out = srv.etcdctl("move-leader", f"{OTHER.id:x}").stdout
        assert out == f"Leadership transferred from 8e9e05c52164694d to {OTHER.id:x}\n"
        assert srv.on_loop(lambda: srv.node.leader) == OTHER.id
    finally:
        srv.on_loop(lambda: setattr(srv.node, "leader", srv.node.member_id))


# -- bad input: etcd's error text and code, and no data touched ---------------------------------


def test_bad_input_through_etcdctl(srv: Server) -> None:
    srv.etcdctl("put", "bad/k", "keep")
    revision = srv.revision()
    cases: list[tuple[tuple[str, ...], str | None, str]] = [
        (("put", "", "x"), None, "Error: etcdserver: key is not provided"),
        (("get", ""), None, "Error: etcdserver: key is not provided"),
        (("put", "bad/big"), "x" * (1536 * 1024), "Error: etcdserver: request is too large"),
        (
            ("txn",),
            "\n" + "".join(f"put bad/t{i} v\n" for i in range(129)) + "\n\n",
            "Error: etcdserver: too many operations in txn request",
        ),
        (
            ("txn",),
            "\nput bad/k a\nput bad/k b\n\n\n",
            "Error: etcdserver: duplicate key given in txn request",
        ),
    ]
    for args, stdin, expected in cases:
        proc = srv.etcdctl(*args, stdin=stdin, ok=False)
        assert error_line(proc) == expected, args
    # etcdctl checks --sort-by and --order itself; the server's check is exercised below.
    assert srv.etcdctl("get", "bad/k", "--sort-by=FOO", ok=False).returncode == 4
    assert srv.revision() == revision
    assert srv.etcdctl("get", "bad/k", "--print-value-only").stdout == "keep\n"


def test_bad_input_through_the_python_stub(srv: Server) -> None:
    revision = srv.revision()
    with grpc.insecure_channel(f"127.0.0.1:{srv.port}") as channel:
        kv = rpc_pb2_grpc.KVStub(channel)
        ops = [pb.RequestOp(request_put=pb.PutRequest(key=b"py/%d" % i)) for i in range(129)]
        bad = [
            (pb.TxnRequest(success=ops), "etcdserver: too many operations in txn request"),
            (
                pb.TxnRequest(success=[ops[0], ops[0]]),
                "etcdserver: duplicate key given in txn request",
            ),
            (
                pb.TxnRequest(
                    success=[
                        pb.RequestOp(
                            request_range=pb.RangeRequest(
                                key=b"py", sort_target=pb.RangeRequest.SortTarget.ValueType(9)
                            )
                        )
                    ]
                ),
                "etcdserver: invalid sort option",
            ),
        ]
        for request, details in bad:
            with pytest.raises(grpc.RpcError) as info:
                kv.Txn(request, timeout=5)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert info.value.details() == details
        with pytest.raises(grpc.RpcError) as info:
            kv.Range(
                pb.RangeRequest(key=b"py", sort_order=pb.RangeRequest.SortOrder.ValueType(3)),
                timeout=5,
            )
        assert info.value.details() == "etcdserver: invalid sort option"
        with pytest.raises(grpc.RpcError) as info:
            kv.Put(pb.PutRequest(key=b""), timeout=5)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert info.value.details() == "etcdserver: key is not provided"
        assert len(kv.Txn(pb.TxnRequest(success=ops[:128]), timeout=5).responses) == 128
    assert srv.revision() == revision + 1
