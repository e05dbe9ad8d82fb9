"""Throwaway certificate authorities and certificates for local TLS clusters and tests.

Made with the ``openssl`` command (``openssl req`` and ``openssl x509``), so neither raftkv nor
its tests need a cryptography library. Keys are ECDSA P-256; every leaf certificate names
127.0.0.1 and localhost (and any further hosts given) in its subjectAltName, because gRPC and Go
check the address dialled against the SAN, never the common name, and may be used both as a
server and as a client certificate, as a member's peer certificate must be (it serves peers and
dials them). Nothing here is fit for production: the keys are written unencrypted.
"""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["OPENSSL", "CertFiles", "der", "install", "make_ca", "make_cert", "served_certificate"]

OPENSSL = shutil.which("openssl")
"""The openssl binary, or None when it is not installed."""

_DAYS = "3650"
_EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


@dataclass(frozen=True, slots=True)
class CertFiles:
    """A certificate, its private key, and the CA certificate that signed it (PEM files)."""

    cert: Path
    key: Path
    ca: Path


def _openssl(*args: str) -> None:
    if OPENSSL is None:
        raise FileNotFoundError("openssl is not installed")
    proc = subprocess.run([OPENSSL, *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {proc.stderr.strip()}")


def make_ca(directory: Path, name: str = "raftkv-test-ca") -> CertFiles:
    """A self-signed CA in ``directory``: ``<name>.pem`` and ``<name>-key.pem``."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / f"{name}.pem", directory / f"{name}-key.pem"
    _openssl(
        "req", "-x509", *_EC, "-keyout", str(key), "-out", str(cert), "-days", _DAYS,
        "-subj", f"/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    return CertFiles(cert, key, cert)


def make_cert(
    ca: CertFiles,
    directory: Path,
    name: str,
    *,
    hosts: Sequence[str] = (),
    serial: int | None = None,
) -> CertFiles:
    """A server-and-client certificate ``<name>.pem`` (key ``<name>-key.pem``) signed by ``ca``.

    ``serial`` defaults to a random one, so two certificates made for one name differ.
    """
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / f"{name}.pem", directory / f"{name}-key.pem"
    sans = ["IP:127.0.0.1", "DNS:localhost"]
    for host in hosts:
        san = f"IP:{host}" if host.replace(".", "").isdigit() or ":" in host else f"DNS:{host}"
        if san not in sans:
            sans.append(san)
    extensions = (
        f"subjectAltName={','.join(sans)}\n"
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth,clientAuth\n"
    )
    with tempfile.TemporaryDirectory() as tmp:
        csr, ext = Path(tmp) / "req.csr", Path(tmp) / "ext.cnf"
        ext.write_text(extensions, encoding="ascii")
        _openssl("req", "-new", *_EC, "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={name}")
        serial_args = ["-set_serial", str(serial)] if serial is not None else []
        _openssl(
            "x509", "-req", "-in", str(csr), "-CA", str(ca.cert), "-CAkey", str(ca.key),
            *(serial_args or ["-CAcreateserial", "-CAserial", str(Path(tmp) / "ca.srl")]),
            "-days", _DAYS, "-extfile", str(ext), "-out", str(cert),
        )  # fmt: skip
    return CertFiles(cert, key, ca.cert)


def install(source: CertFiles, target: CertFiles) -> None:
    """Rotate: put ``source``'s certificate and key in place of ``target``'s files, each by an
    atomic rename, certificate first (so a reader may briefly see the new certificate with the
    old key, as during a real rotation)."""
    for src, dst in ((source.cert, target.cert), (source.key, target.key)):
        tmp = dst.with_name(dst.name + ".new")
        tmp.write_bytes(src.read_bytes())
        os.replace(tmp, dst)


def served_certificate(address: str, ca: Path, client: CertFiles | None = None) -> bytes:
    """The DER certificate a TLS server at ``host:port`` presents in a new handshake (offering
    HTTP/2, as gRPC clients do, and ``client``'s certificate if given)."""
    host, _, port = address.rpartition(":")
    context = ssl.create_default_context(cafile=str(ca))
    context.set_alpn_protocols(["h2"])
    if client is not None:
        context.load_cert_chain(client.cert, client.key)
    with (
        socket.create_connection((host, int(port)), timeout=5) as sock,
        context.wrap_socket(sock, server_hostname=host) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    if der is None:
        raise ConnectionError(f"{address} presented no certificate")
    return der


def der(cert: Path) -> bytes:
    """A PEM certificate file's DER bytes (what :func:`served_certificate` returns)."""
    return ssl.PEM_cert_to_DER_cert(cert.read_text(encoding="ascii"))
