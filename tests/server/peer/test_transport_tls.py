"""raftkv.server.peer over TLS: messages and snapshots flow between members whose certificates
the same CA signed, and never to or from a member with a certificate from another CA.

The receiving side listens as ``raftkv.server.node`` makes it listen for https:// peer URLs
(``server_credentials`` of the peer TLSInfo); the sending side dials with a
``ChannelCredentialsSource``. Certificates come from the openssl command (``raftkv_cli.certs``).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from grpc import aio
from raftkv_cli.certs import OPENSSL, CertFiles, install, make_ca, make_cert

from raftkv.pb.peer import peer_pb2_grpc
from raftkv.raft.messages import Heartbeat, InstallSnapshot, Message
from raftkv.raft.types import ConfState, Snapshot, SnapshotMeta
from raftkv.server.peer.handler import PeerHandler, Refusal
from raftkv.server.peer.options import PEER_SERVER_OPTIONS
from raftkv.server.peer.sender import GrpcTransport
from raftkv.server.peer.service import PeerService
from raftkv.server.tls import ChannelCredentialsSource, TLSInfo, server_credentials

pytestmark = pytest.mark.skipif(OPENSSL is None, reason="openssl is not installed")

CLUSTER = 0xC1
META = SnapshotMeta(index=0x20, term=3, conf_state=ConfState(voters=(1, 2)))


@dataclass
class Recorder:
    """A member as its transport sees it: records what arrives and what the sender hears."""

    messages: list[Message] = field(default_factory=list)
    unreachable: list[int] = field(default_factory=list)
    snapshots: list[tuple[int, bool]] = field(default_factory=list)

    def deliver(self, messages: Sequence[Message]) -> None:
        self.messages.extend(messages)

    def handle_forwards(self, commands: list[bytes]) -> Refusal | None:
        return None

    def report_unreachable(self, member_id: int) -> None:
        self.unreachable.append(member_id)

    def report_snapshot(self, member_id: int, ok: bool) -> None:
        self.snapshots.append((member_id, ok))

    def forwards_rejected(self, forward_ids: Sequence[int], refusal: Refusal | None) -> None:
        pass

    def forwards_lost(self, forward_ids: Sequence[int]) -> None:
        pass

    def snapshot_chunks(self) -> Iterator[bytes]:
        return iter([b"image-" * 1000])


_RECORDER_IS_A_HANDLER: PeerHandler = Recorder()


@dataclass(frozen=True)
class Pki:
    ca: CertFiles
    member1: CertFiles
    member2: CertFiles
    stranger: CertFiles
    """Signed by another CA."""


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("peer-pki")
    ca, other = make_ca(d / "ca", "peer-ca"), make_ca(d / "other", "other-ca")
    return Pki(ca, make_cert(ca, d, "m1"), make_cert(ca, d, "m2"), make_cert(other, d, "m3"))


def peer_tls(files: CertFiles, ca: CertFiles) -> TLSInfo:
    """A member's peer flags: its certificate, the cluster's CA, --peer-client-cert-auth."""
    return TLSInfo(files.cert, files.key, ca.cert, client_cert_auth=True, prefix="peer-")


@asynccontextmanager
async def receiver(
    member_id: int, tls: TLSInfo, snap_dir: Path
) -> AsyncIterator[tuple[str, Recorder]]:
    handler = Recorder()
    server = aio.server(options=PEER_SERVER_OPTIONS)
    service = PeerService(
        member_id=member_id, cluster_id=CLUSTER, handler=handler, snap_dir=snap_dir
    )
    peer_pb2_grpc.add_RaftServicer_to_server(service, server)
    port = server.add_secure_port("127.0.0.1:0", server_credentials(tls))
    await server.start()
    try:
        yield f"127.0.0.1:{port}", handler
    finally:
        await server.stop(None)


@asynccontextmanager
async def sender(tls: TLSInfo, address: str) -> AsyncIterator[tuple[GrpcTransport, Recorder]]:
    handler = Recorder()
    transport = GrpcTransport(
        member_id=1,
        cluster_id=CLUSTER,
        peers={2: address},
        handler=handler,
        rng=random.Random(1),
        backoff_max_s=0.2,
        credentials=ChannelCredentialsSource(tls),
    )
    await transport.start()
    try:
        yield transport, handler
    finally:
        await transport.close()


async def eventually(cond: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


def beat(n: int) -> Heartbeat:
    return Heartbeat(src=1, dst=2, term=1, commit=n)


def run(coro: object) -> None:
    async def bounded() -> None:
        async with asyncio.timeout(30):
            await coro  # type: ignore[misc]

    asyncio.run(bounded())


def test_messages_and_snapshots_flow_over_mutual_tls(pki: Pki, tmp_path: Path) -> None:
    async def main() -> None:
        async with (
            receiver(2, peer_tls(pki.member2, pki.ca), tmp_path) as (address, got),
            sender(peer_tls(pki.member1, pki.ca), address) as (transport, sent),
        ):
            transport.send([beat(n) for n in range(100)])
            await eventually(lambda: len(got.messages) == 100)
            snapshot = InstallSnapshot(src=1, dst=2, term=3, snapshot=Snapshot(META, b""))
            transport.send([snapshot])
            await eventually(lambda: sent.snapshots != [])
            assert sent.snapshots == [(2, True)]
            await eventually(lambda: any(isinstance(m, InstallSnapshot) for m in got.messages))

    run(main())


@pytest.mark.parametrize("foreign", ["sender", "receiver"])
def test_a_member_with_a_certificate_from_another_ca_gets_nothing_through(
    pki: Pki, tmp_path: Path, foreign: str
) -> None:
    """Neither its messages nor its snapshots are received, and none reach it: the handshake
    fails whichever side holds the foreign certificate."""
    send_files = pki.stranger if foreign == "sender" else pki.member1
    recv_files = pki.stranger if foreign == "receiver" else pki.member2

    async def main() -> None:
        async with (
            receiver(2, peer_tls(recv_files, pki.ca), tmp_path) as (address, got),
            sender(peer_tls(send_files, pki.ca), address) as (transport, sent),
        ):
            transport.send([beat(1)])
            await eventually(lambda: 2 in sent.unreachable)
            transport.send([InstallSnapshot(src=1, dst=2, term=3, snapshot=Snapshot(META, b""))])
            await eventually(lambda: sent.snapshots != [])
            transport.send([beat(2)])
            await asyncio.sleep(0.5)
            assert sent.snapshots == [(2, False)]
            assert got.messages == []

    run(main())


def test_a_refused_link_reconnects_with_replaced_certificate_files(
    pki: Pki, tmp_path: Path
) -> None:
    """The dialling side reads its certificate again before a new attempt: replacing a foreign
    certificate with a good one brings the link up without restarting anything."""
    live = CertFiles(tmp_path / "peer.pem", tmp_path / "peer-key.pem", pki.ca.cert)
    install(pki.stranger, live)

    async def main() -> None:
        async with (
            receiver(2, peer_tls(pki.member2, pki.ca), tmp_path) as (address, got),
            sender(peer_tls(live, pki.ca), address) as (transport, sent),
        ):
            transport.send([beat(1)])
            await eventually(lambda: 2 in sent.unreachable)
            install(pki.member1, live)
            for n in range(2, 200):  # keep the sender trying while it backs off
                transport.send([beat(n)])
                if got.messages:
                    break
                await asyncio.sleep(0.05)
            assert got.messages, "the link did not come up with the new certificate"

    run(main())
