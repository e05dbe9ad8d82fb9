"""Leases with the real etcdctl: one scenario against a three-member raftkv cluster and against
a real etcd 3.4, with the same answers (lease ids and the seconds remaining normalized).

The raftkv cluster runs etcd's default timings (heartbeat 100 ms, election 1 s), so the
minimum TTL is etcd's 2 s.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest
from raftkv_cli.real_etcd import ETCD, real_etcd

from raftkv.pb.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from tests.integration.conftest import ETCDCTL

if TYPE_CHECKING:
    from tests.integration.conftest import LocalCluster

pytestmark = pytest.mark.integration

Run = Callable[..., subprocess.CompletedProcess[str]]


def _runner(endpoint: str) -> Run:
    def run(*args: str, endpoint_: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [ETCDCTL, f"--endpoints={endpoint_ or endpoint}", *args],
            capture_output=True,
            text=True,
            env=dict(os.environ, ETCDCTL_API="3"),
            timeout=30,
            check=False,
        )

    return run


def _revision(run: Run) -> int:
    return int(json.loads(run("get", "probe", "-w", "json").stdout)["header"]["revision"])


def _lease_id(text: str) -> str:
    match = re.search(r"lease ([0-9a-f]+) granted", text)
    assert match, text
    return match.group(1)


def _norm(text: str, *ids: str) -> str:
    """Lease ids as <idN>, the seconds remaining as N, and clientv3's JSON log lines (with
    timestamps and client ids) reduced to the gRPC code they report."""
    for n, lease in enumerate(ids):
        text = text.replace(lease, f"<id{n}>")
    text = re.sub(r"\{\"level\"[^\n]*code = (\w+)[^\n]*\n", r"[\1] ", text)
    # etcd lists a lease's keys in Go map order (any order); raftkv in key order.
    text = re.sub(
        r"attached keys\(\[(.*?)\]\)",
        lambda m: f"attached keys([{' '.join(sorted(m.group(1).split()))}])",
        text,
    )
    return re.sub(r"remaining\(\d+s\)", "remaining(Ns)", text)


def scenario(run: Run, endpoint: str) -> list[str]:
    """What etcdctl prints for every lease command, normalized; the same on both servers."""
    out: list[str] = []

    def note(*args: str, ids: tuple[str, ...] = ()) -> str:
        r = run(*args)
        line = f"{' '.join(args)} -> {r.returncode} {r.stdout}{r.stderr}"
        out.append(_norm(line, *ids))
        return r.stdout

    granted = run("lease", "grant", "1")  # raised to the minimum, 2 s
    short = _lease_id(granted.stdout)
    out.append(_norm(granted.stdout, short))
    granted = run("lease", "grant", "60")
    long = _lease_id(granted.stdout)
    ids = (short, long)
    out.append(_norm(granted.stdout, *ids))
    note("lease", "grant", "9000000001")
    for key in ("c", "a", "b"):
        note("put", f"l/{key}", "v", f"--lease={long}", ids=ids)
    note("put", "l/x", "v", "--lease=1234abcd")
    note("lease", "timetolive", long, "--keys", ids=ids)
    note("lease", "keep-alive", "--once", long, ids=ids)
    out.append(f"lease list count: {len(run('lease', 'list').stdout.splitlines()) - 1}")
    before = _revision(run)
    note("lease", "revoke", long, ids=ids)
    out.append(f"revoke took {_revision(run) - before} revision(s)")
    note("get", "l/", "--prefix", ids=ids)
    note("lease", "timetolive", long, ids=ids)
    note("lease", "revoke", long, ids=ids)
    note("put", "l/short", "v", f"--lease={short}", ids=ids)
    deadline = time.monotonic() + 10  # TTL 2 s, plus at most the leader's 1 s extension
    while run("get", "l/short").stdout and time.monotonic() < deadline:
        time.sleep(0.2)
    note("get", "l/short", ids=ids)
    note("lease", "timetolive", short, ids=ids)
    out.append(_grpc_answers(endpoint))
    return out


def _grpc_answers(endpoint: str) -> str:
    """What etcdctl cannot ask: a chosen id granted twice, keep-alive and TimeToLive of an
    unknown lease (answers, not errors)."""
    with grpc.insecure_channel(endpoint) as channel:
        stub = rpc_pb2_grpc.LeaseStub(channel)
        got = stub.LeaseGrant(rpc_pb2.LeaseGrantRequest(ID=777, TTL=0), timeout=10)
        try:
            stub.LeaseGrant(rpc_pb2.LeaseGrantRequest(ID=777, TTL=5), timeout=10)
            again = "ok"
        except grpc.RpcError as exc:
            again = f"{exc.code().name} {exc.details()}"
        ttl = stub.LeaseTimeToLive(rpc_pb2.LeaseTimeToLiveRequest(ID=4242), timeout=10)
        kept = list(stub.LeaseKeepAlive(iter([rpc_pb2.LeaseKeepAliveRequest(ID=4242)])))
        stub.LeaseRevoke(rpc_pb2.LeaseRevokeRequest(ID=777), timeout=10)
    return (
        f"grant 777 ttl 0 -> {got.ID} {got.TTL}; again -> {again}; ttl unknown ->"
        f" {ttl.TTL}; keep-alive unknown -> {[(k.ID, k.TTL) for k in kept]}"
    )


@pytest.fixture(scope="module")
def etcd_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if ETCD is None:
        pytest.skip("etcd is not installed")
    with real_etcd(tmp_path_factory.mktemp("etcd")) as endpoint:
        yield endpoint


@pytest.fixture(scope="module")
def lease_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    from tests.integration.conftest import start_cluster

    c = start_cluster(tmp_path_factory.mktemp("cluster"), heartbeat_ms=100, election_ms=1000)
    try:
        yield c
    finally:
        c.close()


def test_lease_commands_answer_as_etcd(lease_cluster: LocalCluster, etcd_endpoint: str) -> None:
    follower = next(n for n in lease_cluster.nodes if n != lease_cluster.leader())
    ours_ep = lease_cluster.nodes[follower].endpoint  # a follower: forwarding on the way
    ours = scenario(_runner(ours_ep), ours_ep)
    theirs = scenario(_runner(etcd_endpoint), etcd_endpoint)
    assert ours == theirs, "\n".join(f"{a!r}\n{b!r}\n" for a, b in zip(ours, theirs, strict=True))


def test_keep_alive_through_a_follower_keeps_keys(lease_cluster: LocalCluster) -> None:
    run = _runner(lease_cluster.endpoints)
    lease = _lease_id(run("lease", "grant", "2").stdout)
    assert run("put", "ka/k", "v", f"--lease={lease}").returncode == 0
    follower = next(n for n in lease_cluster.nodes if n != lease_cluster.leader())
    keeper = subprocess.Popen(
        [
            ETCDCTL,
            f"--endpoints={lease_cluster.nodes[follower].endpoint}",
            "lease",
            "keep-alive",
            lease,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=dict(os.environ, ETCDCTL_API="3"),
    )
    try:
        time.sleep(5)  # more than twice the TTL
        assert run("get", "ka/k", "--print-value-only").stdout == "v\n"
    finally:
        keeper.kill()
        printed = keeper.communicate()[0].decode()
    assert f"lease {lease} keepalived with TTL(2)" in printed
    deadline = time.monotonic() + 10
    while run("get", "ka/k").stdout and time.monotonic() < deadline:
        time.sleep(0.2)
    assert run("get", "ka/k").stdout == "", "the key outlived its lease"


def test_leases_survive_a_restart(lease_cluster: LocalCluster, tmp_path: Path) -> None:
    run = _runner(lease_cluster.endpoints)
    lease = _lease_id(run("lease", "grant", "300").stdout)
    assert run("put", "rs/k", "v", f"--lease={lease}").returncode == 0
    names = list(lease_cluster.nodes)
    for name in names:
        lease_cluster.stop(name)
    lease_cluster.start(*names)
    lease_cluster.wait_leader(timeout=30)
    deadline = time.monotonic() + 20
    while True:
        r = run("lease", "timetolive", lease, "--keys")
        if r.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert re.search(
        r"granted with TTL\(300s\), remaining\(\d+s\), attached keys\(\[rs/k\]\)", r.stdout
    ), r.stdout + r.stderr
