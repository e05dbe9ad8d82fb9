"""TLS on both sides of real ``raftkv node`` processes, driven with the real etcdctl.

Every member serves clients on an https:// URL with ``--client-cert-auth`` and talks to its
peers over https:// with ``--peer-client-cert-auth``; clients and peers have CAs of their own.
Each member reads copies of the certificates in its own directory, so a test can rotate one
member's files. A real etcd 3.4 with the same flags and certificates is the reference for what
etcdctl prints when mutual TLS refuses it.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from raftkv_cli.certs import (
    OPENSSL,
    CertFiles,
    der,
    install,
    make_ca,
    make_cert,
    served_certificate,
)
from raftkv_cli.real_etcd import ETCD, real_etcd

from raftkv.client import Client, ClientTimeout
from tests.integration.conftest import ETCDCTL, LocalCluster, Node

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(OPENSSL is None, reason="openssl is not installed"),
]


@dataclass(frozen=True)
class Pki:
    client_ca: CertFiles
    peer_ca: CertFiles
    server: CertFiles
    """What members serve clients with."""
    client: CertFiles
    """What clients (etcdctl, raftkv's client) present."""
    peers: dict[str, CertFiles]
    stranger: CertFiles
    """A peer certificate signed by a third CA."""


def make_pki(root: Path) -> Pki:
    client_ca, peer_ca = make_ca(root, "client-ca"), make_ca(root, "peer-ca")
    peers = {f"infra{i}": make_cert(peer_ca, root, f"peer-infra{i}") for i in (1, 2, 3)}
    return Pki(
        client_ca,
        peer_ca,
        make_cert(client_ca, root, "server"),
        make_cert(client_ca, root, "client"),
        peers,
        make_cert(make_ca(root, "other-ca"), root, "stranger"),
    )


def _copy(files: CertFiles, directory: Path, name: str) -> CertFiles:
    directory.mkdir(parents=True, exist_ok=True)
    target = CertFiles(directory / f"{name}.pem", directory / f"{name}-key.pem", files.ca)
    install(files, target)
    return target


@dataclass
class TLSCluster(LocalCluster):
    """LocalCluster with https:// client and peer URLs and mutual TLS on both."""

    pki: Pki | None = None
    peer_override: dict[str, CertFiles] = field(default_factory=dict)

    @property
    def certs(self) -> Pki:
        assert self.pki is not None
        return self.pki

    def member_files(self, name: str) -> tuple[CertFiles, CertFiles]:
        """The (client-side, peer-side) certificate files member ``name`` reads."""
        d = self.root / "tls" / name
        return CertFiles(d / "server.pem", d / "server-key.pem", self.certs.client_ca.cert), (
            CertFiles(d / "peer.pem", d / "peer-key.pem", self.certs.peer_ca.cert)
        )

    def command(self, node: Node) -> list[str]:
        server, peer = self.member_files(node.name)
        if not server.cert.exists():
            _copy(self.certs.server, server.cert.parent, "server")
            own = self.peer_override.get(node.name, self.certs.peers[node.name])
            _copy(own, peer.cert.parent, "peer")
        argv = [a.replace("http://127.0.0.1", "https://127.0.0.1") for a in super().command(node)]
        return [
            *argv,
            "--cert-file", str(server.cert), "--key-file", str(server.key),
            "--trusted-ca-file", str(server.ca), "--client-cert-auth",
            "--peer-cert-file", str(peer.cert), "--peer-key-file", str(peer.key),
            "--peer-trusted-ca-file", str(peer.ca), "--peer-client-cert-auth",
        ]  # fmt: skip

    def channel(self, name: str) -> grpc.Channel:
        node = self.nodes[name]
        if node.channel is None:
            c = self.certs.client
            creds = grpc.ssl_channel_credentials(
                c.ca.read_bytes(), c.key.read_bytes(), c.cert.read_bytes()
            )
            node.channel = grpc.secure_channel(node.endpoint, creds)
        return node.channel

    @property
    def endpoints(self) -> str:
        return ",".join(f"https://{n.endpoint}" for n in self.nodes.values())

    @property
    def client_flags(self) -> list[str]:
        c = self.certs.client
        return ["--cacert", str(c.ca), "--cert", str(c.cert), "--key", str(c.key)]

    def etcdctl(self, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
        return super().etcdctl(*self.client_flags, *args, **kw)


def start_tls_cluster(root: Path, pki: Pki, *names: str, **kw: Any) -> TLSCluster:
    cluster = TLSCluster(root, pki=pki, **kw)
    try:
        cluster.start(*names)
        if not names:
            cluster.wait_leader(timeout=30)
    except BaseException:
        cluster.close()
        raise
    return cluster


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[TLSCluster]:
    cluster = start_tls_cluster(tmp_path_factory.mktemp("tls-cluster"), pki)
    try:
        yield cluster
    finally:
        cluster.close()


def run_etcdctl(args: Sequence[str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, ETCDCTL_API="3")
    return subprocess.run(
        [ETCDCTL, *args], capture_output=True, text=True, env=env, timeout=timeout, check=False
    )


# -- etcdctl over TLS ------------------------------------------------------------------------------


def test_etcdctl_reads_writes_and_inspects_over_tls_on_both_sides(tls_cluster: TLSCluster) -> None:
    cl = tls_cluster
    assert cl.etcdctl("put", "tls/k", "v1").stdout.strip() == "OK"
    assert cl.etcdctl("get", "tls/k").stdout.split() == ["tls/k", "v1"]
    deadline = time.monotonic() + 10
    while True:  # each member publishes its client URLs through Raft once it is up
        members = cl.etcdctl_json("member", "list")["members"]
        if all(m.get("clientURLs") for m in members) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert sorted(m["name"] for m in members) == ["infra1", "infra2", "infra3"]
    for m in members:
        assert m["peerURLs"][0].startswith("https://127.0.0.1:")
        assert m["clientURLs"][0].startswith("https://127.0.0.1:")
    statuses = cl.etcdctl_json("endpoint", "status")
    assert sorted(s["Endpoint"] for s in statuses) == sorted(cl.endpoints.split(","))
    leaders = {s["Status"]["leader"] for s in statuses}
    assert len(leaders) == 1 and leaders != {0}


def test_etcdctl_watch_over_tls(tls_cluster: TLSCluster) -> None:
    cl = tls_cluster
    rev = cl.etcdctl_json("put", "tls/w", "old")["header"]["revision"]
    env = dict(os.environ, ETCDCTL_API="3")
    proc = subprocess.Popen(
        [ETCDCTL, f"--endpoints={cl.endpoints}", *cl.client_flags,
         "watch", "--prefix", "tls/w", "--rev", str(rev)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True,
    )  # fmt: skip
    lines: queue.Queue[str] = queue.Queue()
    stdout = proc.stdout
    assert stdout is not None

    def read() -> None:
        for line in stdout:
            lines.put(line.strip())

    threading.Thread(target=read, daemon=True).start()
    try:
        seen = [lines.get(timeout=10) for _ in range(3)]
        assert seen == ["PUT", "tls/w", "old"]  # history from --rev
        cl.etcdctl("put", "tls/w", "new")
        seen = [lines.get(timeout=10) for _ in range(3)]
        assert seen == ["PUT", "tls/w", "new"]  # a live event
    finally:
        proc.terminate()
        proc.wait(10)
        for f in (proc.stdout, proc.stderr):
            if f is not None:
                f.close()


# -- refusals, compared with etcd ------------------------------------------------------------------


def _refusal(endpoint: str, flags: Sequence[str]) -> tuple[int, str, list[str]]:
    """etcdctl's exit code, last stderr line, and the gRPC codes in its retry warnings."""
    proc = run_etcdctl([f"--endpoints={endpoint}", *flags, "--command-timeout=2s", "get", "k"])
    lines = proc.stderr.strip().splitlines()
    codes = []
    for line in lines:
        if line.startswith("{"):
            error = json.loads(line).get("error", "")
            codes.append(error.split("desc =")[0].strip())
    return proc.returncode, lines[-1] if lines else "", codes


@pytest.mark.skipif(ETCD is None, reason="etcd is not installed")
def test_mutual_tls_refuses_clients_as_etcd_does(
    tls_cluster: TLSCluster, pki: Pki, tmp_path: Path
) -> None:
    """No client certificate, or one from another CA: etcdctl fails the same way against both
    servers (exit code 1, "context deadline exceeded" after its retries)."""
    ca = ["--cacert", str(pki.client_ca.cert)]
    stranger = [*ca, "--cert", str(pki.stranger.cert), "--key", str(pki.stranger.key)]
    raftkv_ep = f"https://{tls_cluster.nodes['infra1'].endpoint}"
    with real_etcd(tmp_path, tls=pki.server, client_cert_auth=True) as etcd_ep:
        etcd_ep = f"https://{etcd_ep}"
        for flags in (ca, stranger):
            ours, theirs = _refusal(raftkv_ep, flags), _refusal(etcd_ep, flags)
            assert ours == theirs, (flags, ours, theirs)
            code, last, codes = ours
            assert code == 1 and last == "Error: context deadline exceeded"
            assert codes and set(codes) == {"rpc error: code = DeadlineExceeded"}
        # And with the certificate both answer.
        good = tls_cluster.client_flags
        assert run_etcdctl([f"--endpoints={etcd_ep}", *good, "put", "k", "v"]).returncode == 0
    assert run_etcdctl([f"--endpoints={raftkv_ep}", *good, "put", "k", "v"]).returncode == 0


# -- raftkv's client library and CLI ---------------------------------------------------------------


def test_the_client_library_and_cli_over_tls(tls_cluster: TLSCluster, pki: Pki) -> None:
    cl = tls_cluster
    c = pki.client
    endpoints = cl.endpoints.split(",")
    with Client(endpoints, ca_cert=str(c.ca), cert=str(c.cert), key=str(c.key)) as client:
        rev = client.put("tls/lib", "v").header.revision
        assert client.get("tls/lib").kvs[0].value == b"v"
        assert len(client.member_list().members) == 3
        assert client.status(endpoints[0].removeprefix("https://")).leader != 0
        watch = client.watch("tls/lib", start_revision=rev)
        assert next(iter(watch)).events[0].kv.value == b"v"
        watch.cancel()
    with (
        Client(endpoints, ca_cert=str(c.ca), timeout_s=1.0) as no_cert,
        pytest.raises(ClientTimeout, match="TLS handshake failed"),
    ):
        no_cert.get("tls/lib")

    cli = [sys.executable, "-m", "raftkv_cli"]
    flags = [f"--endpoints={cl.endpoints}", *cl.client_flags]
    out = subprocess.run([*cli, "put", "tls/cli", "x", *flags], capture_output=True, text=True)
    assert (out.returncode, out.stdout.strip()) == (0, "OK"), out.stderr
    out = subprocess.run([*cli, "get", "tls/cli", *flags], capture_output=True, text=True)
    assert out.stdout.split() == ["tls/cli", "x"], out.stderr
    refused = subprocess.run(
        [*cli, "get", "tls/cli", f"--endpoints={cl.endpoints}", "--cacert", str(c.ca),
         "--command-timeout", "1"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert refused.returncode == 1
    assert "TLS handshake failed" in refused.stderr


# -- rotation --------------------------------------------------------------------------------------


def test_certificates_rotate_without_a_restart(
    tls_cluster: TLSCluster, pki: Pki, tmp_path: Path
) -> None:
    """New files on disk: the next handshakes, on the client and the peer port, present them."""
    cl = tls_cluster
    node = cl.nodes["infra1"]
    pid = node.proc.pid if node.proc else None
    server, peer = cl.member_files("infra1")
    peer_address = node.peer_url.removeprefix("http://")
    assert served_certificate(node.endpoint, pki.client_ca.cert, pki.client) == der(server.cert)

    new_server = make_cert(pki.client_ca, tmp_path, "server-rotated")
    new_peer = make_cert(pki.peer_ca, tmp_path, "peer-rotated")
    install(new_server, server)
    install(new_peer, peer)
    got = served_certificate(node.endpoint, pki.client_ca.cert, pki.client)
    assert got == der(new_server.cert)
    other_peer = pki.peers["infra2"]
    assert served_certificate(peer_address, pki.peer_ca.cert, other_peer) == der(new_peer.cert)

    # Still one cluster: clients are served through infra1, and the members replicate.
    out = cl.etcdctl(f"--endpoints=https://{node.endpoint}", "put", "tls/rotated", "1")
    assert out.stdout.strip() == "OK"
    index = max(s.raftIndex for s in map(cl.status, cl.nodes) if s is not None)
    for name in cl.nodes:
        cl.wait_applied(name, index, timeout=10)
    assert node.proc is not None and node.proc.pid == pid and node.running


# -- a member with a certificate from another CA ---------------------------------------------------


def test_a_peer_certified_by_another_ca_cannot_join(
    tmp_path_factory: pytest.TempPathFactory, pki: Pki
) -> None:
    """infra3's peer certificate comes from another CA (it trusts the right one): the others
    refuse its handshakes and do not trust its server, so with infra1 alone it forms no
    leader, and once infra2 is up the two go on without it."""
    cl = start_tls_cluster(
        tmp_path_factory.mktemp("tls-stranger"),
        pki,
        "infra1",
        "infra3",
        peer_override={"infra3": pki.stranger},
    )
    try:
        time.sleep(3.0)  # six election timeouts
        for name in ("infra1", "infra3"):
            st = cl.status(name)
            assert st is not None and st.leader == 0, (name, st, cl.describe())
        cl.start("infra2")
        cl.wait_leader(among=["infra1", "infra2"], timeout=30)
        first_two = cl.endpoints.rsplit(",", 1)[0]
        assert cl.etcdctl("put", "tls/without-3", "v", endpoints=first_two).stdout.strip() == "OK"
        time.sleep(1.0)
        st3 = cl.status("infra3")
        st1 = cl.status("infra1")
        assert st3 is not None and st1 is not None
        assert st3.leader == 0 and st3.raftAppliedIndex < st1.raftAppliedIndex
        assert cl.nodes["infra3"].running
    finally:
        cl.close()
