"""TLS on the client side, in one process: etcd's flag checks, mutual TLS and rotation.

A grpc.aio server with the client services over a FakeNode listens with
``raftkv.server.tls.server_credentials``; the client is raftkv's own. Certificates are made with
the openssl command (``raftkv_cli.certs``), so no cryptography library is needed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

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

from raftkv.client import AsyncClient, ClientTimeout
from raftkv.errors import ConfigError
from raftkv.server.config import ServerConfig
from raftkv.server.fake_node import FakeNode
from raftkv.server.grpc_server import add_client_services, client_server_options
from raftkv.server.tls import ChannelCredentialsSource, TLSInfo, server_credentials

pytestmark = pytest.mark.skipif(OPENSSL is None, reason="openssl is not installed")


@dataclass(frozen=True)
class Pki:
    ca: CertFiles
    server: CertFiles
    client: CertFiles
    stranger: CertFiles
    """Signed by another CA."""


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    ca = make_ca(d / "ca", "ca")
    other = make_ca(d / "other", "other-ca")
    return Pki(
        ca, make_cert(ca, d, "server"), make_cert(ca, d, "client"), make_cert(other, d, "stranger")
    )


def copy_of(files: CertFiles, directory: Path) -> CertFiles:
    directory.mkdir(parents=True, exist_ok=True)
    target = CertFiles(directory / "cert.pem", directory / "key.pem", files.ca)
    install(files, target)
    return target


# -- configuration ---------------------------------------------------------------------------------


def _config(**kw: object) -> ServerConfig:
    peer = str(kw.pop("peer", "http://127.0.0.1:2380"))
    base: dict[str, object] = {
        "name": "n1",
        "listen_peer_urls": (peer,),
        "initial_advertise_peer_urls": (peer,),
        "initial_cluster": {"n1": (peer,)},
    }
    base.update(kw)
    return ServerConfig(**base)  # type: ignore[arg-type]


def test_https_urls_without_certificates_are_refused_with_etcds_message(pki: Pki) -> None:
    with pytest.raises(ConfigError) as client:
        _config(listen_client_urls=("https://127.0.0.1:2379",))
    assert str(client.value) == (
        "TLS key/cert (--cert-file, --key-file) must be provided for client url "
        "https://127.0.0.1:2379 with HTTPS scheme"
    )
    with pytest.raises(
        ConfigError, match=r"\(--peer-cert-file, --peer-key-file\) must be provided"
    ):
        _config(peer="https://127.0.0.1:2380")
    served = TLSInfo(pki.server.cert, pki.server.key)
    config = _config(listen_client_urls=("https://127.0.0.1:2379",), client_tls=served)
    assert not config.peer_links_use_tls


def test_mixed_plain_and_tls_peer_urls_are_refused(pki: Pki) -> None:
    peer_tls = TLSInfo(pki.server.cert, pki.server.key, prefix="peer-")
    with pytest.raises(ConfigError, match=r"peer URLs mix https:// and http://") as mixed:
        _config(
            peer="https://127.0.0.1:2380",
            initial_cluster={"n1": ("https://127.0.0.1:2380",), "n2": ("http://127.0.0.1:2390",)},
            peer_tls=peer_tls,
        )
    assert "http: http://127.0.0.1:2390" in str(mixed.value)
    assert _config(peer="https://127.0.0.1:2380", peer_tls=peer_tls).peer_links_use_tls


def test_tls_flags_that_cannot_work_are_refused(pki: Pki) -> None:
    with pytest.raises(ConfigError, match="--cert-file and --key-file must be given together"):
        TLSInfo(cert_file=pki.server.cert).check()
    with pytest.raises(ConfigError, match="--peer-client-cert-auth needs --peer-trusted-ca-file"):
        TLSInfo(pki.server.cert, pki.server.key, client_cert_auth=True, prefix="peer-").check()
    # As in etcd 3.4, a trusted CA alone already makes the listener verify client certificates.
    assert TLSInfo(pki.server.cert, pki.server.key, trusted_ca_file=pki.ca.cert).verifies_clients
    assert not TLSInfo(pki.server.cert, pki.server.key).verifies_clients
    with pytest.raises(ConfigError, match="cannot load"):
        server_credentials(TLSInfo(pki.server.cert, pki.client.key))  # not the cert's key


# -- a client-facing listener ----------------------------------------------------------------------


@asynccontextmanager
async def tls_server(info: TLSInfo) -> AsyncIterator[str]:
    server = grpc.aio.server(options=client_server_options(1536 * 1024))
    add_client_services(server, FakeNode(), request_timeout_s=2.0)
    port = server.add_secure_port("127.0.0.1:0", server_credentials(info))
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(None)


def test_mutual_tls_serves_certified_clients_and_refuses_others(pki: Pki) -> None:
    info = TLSInfo(pki.server.cert, pki.server.key, pki.ca.cert, client_cert_auth=True)

    async def main() -> None:
        async with tls_server(info) as address:
            ca = str(pki.ca.cert)
            # Paths or PEM bytes; an https:// endpoint or any TLS option means TLS.
            cert, key = pki.client.cert.read_bytes(), str(pki.client.key)
            async with AsyncClient(f"https://{address}", ca_cert=ca, cert=cert, key=key) as c:
                await c.put("k", "v")
                assert (await c.get("k")).kvs[0].value == b"v"
            stranger = (str(pki.stranger.cert), str(pki.stranger.key))
            for cert_key in ((None, None), stranger):  # no client certificate, another CA's
                c = AsyncClient(
                    address, timeout_s=1.0, ca_cert=ca, cert=cert_key[0], key=cert_key[1]
                )
                async with c:
                    with pytest.raises(ClientTimeout, match="the TLS handshake failed"):
                        await c.get("k")
            async with AsyncClient(address, timeout_s=1.0) as plain:
                with pytest.raises(ClientTimeout):
                    await plain.get("k")

    asyncio.run(main())


def test_a_client_certificate_needs_its_key(pki: Pki) -> None:
    with pytest.raises(ConfigError, match="give cert and key together"):
        AsyncClient("127.0.0.1:1", ca_cert=str(pki.ca.cert), cert=str(pki.client.cert))


def test_replaced_certificate_files_serve_the_next_handshakes(
    pki: Pki, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Rotation without a restart, including a half-done one (new certificate, old key): the
    old pair keeps serving until the key arrives."""
    current = copy_of(pki.server, tmp_path / "live")
    second = make_cert(pki.ca, tmp_path, "server-2")
    third = make_cert(pki.ca, tmp_path, "server-3")
    info = TLSInfo(current.cert, current.key, pki.ca.cert, client_cert_auth=True)

    async def served(address: str) -> bytes:
        return await asyncio.to_thread(served_certificate, address, pki.ca.cert, pki.client)

    async def main() -> None:
        async with tls_server(info) as address:
            assert await served(address) == der(pki.server.cert)
            install(second, current)
            assert await served(address) == der(second.cert)
            # Half a rotation: the third certificate beside the second one's key.
            current.cert.write_bytes(third.cert.read_bytes())
            with caplog.at_level(logging.WARNING, logger="raftkv.server.tls"):
                assert await served(address) == der(second.cert)
                assert await served(address) == der(second.cert)
            warnings = [r for r in caplog.records if "do not load" in r.getMessage()]
            assert len(warnings) == 1  # once per change, not once per handshake
            current.key.write_bytes(third.key.read_bytes())
            assert await served(address) == der(third.cert)

    asyncio.run(main())


def test_peer_channel_credentials_change_only_with_the_files(pki: Pki, tmp_path: Path) -> None:
    current = copy_of(pki.client, tmp_path / "live")
    source = ChannelCredentialsSource(
        TLSInfo(current.cert, current.key, pki.ca.cert, prefix="peer-")
    )
    first = source()
    assert source() is first
    install(pki.server, current)
    second = source()
    assert second is not first
    assert source() is second
