"""Which failed calls the history records as fail (definite) and which as info (unknown)."""

from __future__ import annotations

import random
import socket
import threading
from pathlib import Path
from typing import Any

import grpc
import pytest

from jepsen.client import Client, Definite, Indefinite, classify
from jepsen.db import Node
from jepsen.history import Recorder
from jepsen.runner import Options, _work
from jepsen.workloads import Register, Worker

U = grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize(
    ("code", "detail"),
    [
        (
            U,
            "failed to connect to all addresses; last error: UNKNOWN: ipv4:10.88.0.2:2379: "
            "Failed to connect to remote host: Connection refused",
        ),
        (U, "etcdserver: leader changed"),
        (U, "etcdserver: no leader"),
        (grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: duplicate key given in txn request"),
        (grpc.StatusCode.OUT_OF_RANGE, "etcdserver: mvcc: required revision has been compacted"),
        (grpc.StatusCode.FAILED_PRECONDITION, "etcdserver: not leader"),
    ],
)
def test_definite(code: grpc.StatusCode, detail: str) -> None:
    assert classify(code, detail)


@pytest.mark.parametrize(
    ("code", "detail"),
    [
        (U, "etcdserver: request timed out"),
        (U, "etcdserver: request timed out, possibly due to previous leader failure"),
        (U, "etcdserver: server stopped"),
        (U, "Socket closed"),
        (U, "Connection reset by peer"),
        (U, ""),
        (grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded"),
        (grpc.StatusCode.UNKNOWN, "raft: proposal dropped"),
        (grpc.StatusCode.CANCELLED, "Cancelled"),
        (None, "failed to connect to all addresses"),
    ],
)
def test_indefinite(code: grpc.StatusCode | None, detail: str) -> None:
    assert not classify(code, detail)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def test_a_call_that_never_connected_is_definite() -> None:
    # The real gRPC stack: nothing listens, so the call fails before any byte is sent.
    with (
        Client(f"127.0.0.1:{_closed_port()}", timeout_s=2.0) as c,
        pytest.raises(Definite, match="failed to connect to all addresses"),
    ):
        c.put("k", "v")


class _FakeClient:
    def __init__(self, error: Exception | None = None) -> None:
        self.error = error
        self.puts: list[tuple[str, str]] = []

    def put(self, key: str, value: str) -> int:
        if self.error is not None:
            raise self.error
        self.puts.append((key, value))
        return 1

    def get(self, key: str, **_kw: Any) -> tuple[str | None, int, int]:
        if self.error is not None:
            raise self.error
        return None, 0, 1

    def txn(self, compares: Any, success: Any, failure: Any = ()) -> Any:
        if self.error is not None:
            raise self.error
        for op in success:
            self.puts.append((op.request_put.key.decode(), op.request_put.value.decode()))

        class R:
            succeeded = True

        return R()


def _register_ops(error: Exception, n: int = 60) -> tuple[list[Any], Worker]:
    rec = Recorder()
    reg = Register(rec, {}, 1)
    w = Worker(0, 1, "n1", _FakeClient(error), random.Random(3))  # type: ignore[arg-type]
    for _ in range(n):
        reg.op(w)
    return rec.ops, w


def test_definite_write_errors_are_fails_and_keep_the_process() -> None:
    ops, w = _register_ops(Definite("UNAVAILABLE: failed to connect to all addresses"))
    writes = [o for o in ops if o.f in ("write", "cas")]
    assert writes and all(o.status == "fail" for o in writes)
    assert w.process == 0


def test_indefinite_write_errors_are_info_and_renew_the_process() -> None:
    ops, w = _register_ops(Indefinite("UNAVAILABLE: etcdserver: request timed out"))
    writes = [o for o in ops if o.f in ("write", "cas")]
    assert writes and all(o.status == "info" for o in writes)
    assert w.process == len(writes)  # one fresh process per info
    reads = [o for o in ops if o.f == "read"]
    assert reads and all(o.status == "fail" for o in reads)  # a read never has an effect


def test_no_operation_is_sent_to_a_killed_node(tmp_path: Path) -> None:
    # A node without a process (killed by the nemesis): its workers invoke nothing.
    dead = Node("n1", "127.0.0.1", _closed_port(), 1, 1, tmp_path, tmp_path / "log")
    calls: list[Any] = []

    class Counting:
        def op(self, w: Worker) -> None:
            calls.append(w)

    stop = threading.Event()
    timer = threading.Timer(0.3, stop.set)
    timer.start()
    _work(Options(), 0, 1, 0.01, 1, dead, workload=Counting(), stop=stop)  # type: ignore[arg-type]
    timer.join()
    assert calls == []
