"""TLS for the client and peer listeners, and for the peer links: etcd's ``TLSInfo``, reloaded.

One :class:`TLSInfo` describes one side (clients' or peers'), as etcd's flags do: a certificate
and key, a trusted CA bundle, and whether clients must present a certificate. As in etcd 3.4,
naming a trusted CA file alone already makes the listener require and verify client
certificates (etcd's ``TLSInfo.ServerConfig`` sets ``RequireAndVerifyClientCert`` when either
is given); ``--client-cert-auth`` without a CA file is refused here, where etcd would verify
against the system's roots (docs/security.md).

Certificates are read again when their files change, so rotating them needs no restart:

* listeners use :func:`server_credentials`, built on ``grpc.dynamic_ssl_server_credentials``:
  gRPC asks the fetcher before every new handshake, and the fetcher answers with a new
  configuration only when a file's identity (inode, size, mtime) changed and the new files load
  as a matching certificate and key. A half-replaced pair (the certificate written, its key not
  yet) is not taken: the old configuration keeps serving and the next handshake looks again.
* outgoing peer links ask a :class:`ChannelCredentialsSource` for credentials whenever they
  open a channel; it returns the same object until the files change, so a link can tell when to
  reconnect with the new certificate.
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path

import grpc

from raftkv.errors import ConfigError, InternalError

__all__ = ["ChannelCredentialsSource", "TLSInfo", "server_credentials"]

logger = logging.getLogger(__name__)

_Signature = tuple[tuple[int, int, int], ...]


@dataclass(frozen=True, slots=True)
class TLSInfo:
    """One side's certificate files, under etcd's flag names (``prefix`` is ``""`` or ``peer-``)."""

    cert_file: Path | None = None
    key_file: Path | None = None
    trusted_ca_file: Path | None = None
    client_cert_auth: bool = False
    prefix: str = ""

    @property
    def empty(self) -> bool:
        """No certificate: the listener cannot serve TLS (etcd's ``TLSInfo.Empty``)."""
        return self.cert_file is None and self.key_file is None

    @property
    def verifies_clients(self) -> bool:
        """Whether the listener requires a client certificate signed by the trusted CA."""
        return self.client_cert_auth or self.trusted_ca_file is not None

    def check(self) -> None:
        """Refuse combinations that cannot work (the files themselves are read at start)."""
        p = self.prefix
        if (self.cert_file is None) != (self.key_file is None):
            raise ConfigError(f"--{p}cert-file and --{p}key-file must be given together")
        if self.client_cert_auth and self.trusted_ca_file is None:
            raise ConfigError(
                f"--{p}client-cert-auth needs --{p}trusted-ca-file: the CA that signs the "
                "certificates to accept"
            )

    def files(self) -> tuple[Path, ...]:
        return tuple(f for f in (self.cert_file, self.key_file, self.trusted_ca_file) if f)


@dataclass(frozen=True, slots=True)
class _Loaded:
    signature: _Signature
    cert: bytes
    key: bytes
    ca: bytes | None


def _signature(files: tuple[Path, ...]) -> _Signature:
    out = []
    for f in files:
        st = os.stat(f)
        out.append((st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(out)


def _load(info: TLSInfo) -> _Loaded:
    """Read and check the files; ``OSError``/``ssl.SSLError`` when they do not load, or changed
    while being read (a rotation in progress)."""
    if info.cert_file is None or info.key_file is None:
        raise InternalError(f"--{info.prefix}cert-file and --{info.prefix}key-file are unset")
    files = info.files()
    before = _signature(files)
    cert, key = info.cert_file.read_bytes(), info.key_file.read_bytes()
    ca = info.trusted_ca_file.read_bytes() if info.trusted_ca_file else None
    # The standard library checks that the key belongs to the certificate and that the CA bundle
    # parses, which gRPC would otherwise find out only inside a handshake.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(info.cert_file, info.key_file)
    if info.trusted_ca_file is not None:
        context.load_verify_locations(cafile=info.trusted_ca_file)
    if _signature(files) != before:
        raise OSError("the files changed while they were read")
    return _Loaded(before, cert, key, ca)


def load_or_refuse(info: TLSInfo) -> _Loaded:
    """:func:`_load` at start, where a bad file is a configuration error."""
    try:
        return _load(info)
    except (OSError, ssl.SSLError) as exc:
        names = ", ".join(str(f) for f in info.files())
        raise ConfigError(f"--{info.prefix}cert-file etc.: cannot load {names}: {exc}") from None


class _Reloader:
    """The newest good load of ``info``'s files; ``poll`` looks for a change (thread-safe)."""

    def __init__(self, info: TLSInfo) -> None:
        self._info = info
        self._lock = threading.Lock()
        self.current = load_or_refuse(info)
        self._rejected: _Signature | None = None

    def poll(self) -> _Loaded | None:
        """A new load if the files changed and load well, else None (keep the current one)."""
        with self._lock:
            try:
                signature = _signature(self._info.files())
            except OSError:
                return None  # a file is being replaced (removed, then renamed into place)
            if signature in (self.current.signature, self._rejected):
                return None
            try:
                loaded = _load(self._info)
            except (OSError, ssl.SSLError) as exc:
                self._rejected = signature
                logger.warning(
                    "--%scert-file etc. changed but do not load (%s); still using the previous "
                    "certificate",
                    self._info.prefix,
                    exc,
                )
                return None
            self.current = loaded
            logger.info(
                "reloaded the %scertificate from %s", self._info.prefix, self._info.cert_file
            )
            return loaded


def _server_config(loaded: _Loaded) -> grpc.ServerCertificateConfiguration:
    return grpc.ssl_server_certificate_configuration([(loaded.key, loaded.cert)], loaded.ca)


def server_credentials(info: TLSInfo) -> grpc.ServerCredentials:
    """Credentials for a listener that serve the newest good certificate at every handshake.

    Raises :class:`~raftkv.errors.ConfigError` when the files do not load now.
    """
    reloader = _Reloader(info)

    def fetch() -> grpc.ServerCertificateConfiguration | None:
        loaded = reloader.poll()
        return None if loaded is None else _server_config(loaded)

    return grpc.dynamic_ssl_server_credentials(
        _server_config(reloader.current),
        # gRPC documents None as "no change"; types-grpcio's signature leaves it out.
        fetch,  # type: ignore[arg-type]
        require_client_authentication=info.verifies_clients,
    )


class ChannelCredentialsSource:
    """Channel credentials for dialling peers: the member's certificate (a client certificate
    for peers that verify it) and the trusted CA; without a CA file, gRPC's default roots.

    Calling it returns the same credentials object until the files change.
    """

    def __init__(self, info: TLSInfo) -> None:
        self._reloader = _Reloader(info)
        self._credentials = self._make(self._reloader.current)

    @staticmethod
    def _make(loaded: _Loaded) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(loaded.ca, loaded.key, loaded.cert)

    def __call__(self) -> grpc.ChannelCredentials:
        loaded = self._reloader.poll()
        if loaded is not None:
            self._credentials = self._make(loaded)
        return self._credentials
