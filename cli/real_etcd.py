"""A real etcd (Debian's etcd-server 3.4) on loopback, for tests that compare raftkv's answers with
etcd's. One member, its own data directory, free ports; stopped when the context ends.

With ``tls``, etcd serves clients on an https:// URL with that certificate, and with
``client_cert_auth`` requires client certificates signed by its CA (``--client-cert-auth``)."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
from raftkv_cli.certs import CertFiles

from raftkv.pb.etcdserverpb import rpc_pb2, rpc_pb2_grpc

__all__ = ["ETCD", "real_etcd"]

ETCD = shutil.which("etcd")
"""The etcd binary, or None when it is not installed (callers skip)."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def real_etcd(
    data_dir: Path,
    *,
    ready_timeout_s: float = 20.0,
    tls: CertFiles | None = None,
    client_cert_auth: bool = False,
) -> Iterator[str]:
    """Run etcd with its data under ``data_dir``; yields its client endpoint (host:port)."""
    if ETCD is None:
        raise FileNotFoundError("etcd is not installed")
    cp, pp = _free_port(), _free_port()
    scheme = "http" if tls is None else "https"
    tls_args: list[str] = []
    if tls is not None:
        tls_args = ["--cert-file", str(tls.cert), "--key-file", str(tls.key)]
        if client_cert_auth:
            tls_args += ["--trusted-ca-file", str(tls.ca), "--client-cert-auth"]
    log = (data_dir / "etcd.log").open("wb")
    proc = subprocess.Popen(
        [ETCD, "--name", "e1", "--data-dir", str(data_dir / "data"),
         "--listen-client-urls", f"{scheme}://127.0.0.1:{cp}",
         "--advertise-client-urls", f"{scheme}://127.0.0.1:{cp}",
         "--listen-peer-urls", f"http://127.0.0.1:{pp}",
         "--initial-advertise-peer-urls", f"http://127.0.0.1:{pp}",
         "--initial-cluster", f"e1=http://127.0.0.1:{pp}", *tls_args],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    endpoint = f"127.0.0.1:{cp}"
    try:
        _wait_ready(endpoint, proc, ready_timeout_s, tls)
        yield endpoint
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _channel(endpoint: str, tls: CertFiles | None) -> grpc.Channel:
    if tls is None:
        return grpc.insecure_channel(endpoint)
    # The server's own certificate doubles as a client certificate (certs.make_cert's usage).
    creds = grpc.ssl_channel_credentials(
        tls.ca.read_bytes(), tls.key.read_bytes(), tls.cert.read_bytes()
    )
    return grpc.secure_channel(endpoint, creds)


def _wait_ready(
    endpoint: str, proc: subprocess.Popen[bytes], timeout_s: float, tls: CertFiles | None
) -> None:
    deadline = time.monotonic() + timeout_s
    with _channel(endpoint, tls) as channel:
        stub = rpc_pb2_grpc.MaintenanceStub(channel)
        while True:
            try:
                if stub.Status(rpc_pb2.StatusRequest(), timeout=1).leader:
                    return
            except grpc.RpcError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"etcd at {endpoint} did not become ready")
            time.sleep(0.2)
