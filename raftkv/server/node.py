"""Assemble and run one member: storage, driver, peer transport, and the etcd client API.

Data directory layout (``--data-dir``):
    member/raft/   the durable Raft log and hard state (LMDB)
    member/kv/     the MVCC key space (LMDB)
    member/snap/   snapshots received from the leader, before they are restored, each named by
                   its index and term (raftkv.server.peer.snapshot_receiver.snapshot_path)
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import random
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc

from raftkv.kv.backend import KVBackend
from raftkv.kv.state_machine import KVStateMachine
from raftkv.pb.peer import peer_pb2_grpc
from raftkv.raft.storage import DurableLog
from raftkv.server.api import Member
from raftkv.server.compactor import Compactor
from raftkv.server.config import ServerConfig, host_port, is_tls
from raftkv.server.driver import DriverConfig, NodeDriver, bootstrap_log
from raftkv.server.grpc_server import add_client_services, client_server_options
from raftkv.server.http import HttpServer
from raftkv.server.peer.options import PEER_SERVER_OPTIONS
from raftkv.server.peer.sender import GrpcTransport
from raftkv.server.peer.service import PeerService
from raftkv.server.peer.snapshot_receiver import ReceivedSnapshots
from raftkv.server.rpc_stats import RpcStats
from raftkv.server.tls import ChannelCredentialsSource, TLSInfo, server_credentials

logger = logging.getLogger(__name__)


@dataclass
class RunningNode:
    driver: NodeDriver
    transport: GrpcTransport
    peer_server: grpc.aio.Server
    client_server: grpc.aio.Server
    raft_log: DurableLog
    backend: KVBackend
    compactor: asyncio.Task[None] | None = None
    peer_service: PeerService | None = None
    http: HttpServer | None = None

    async def stop(self, *, transfer_leadership: bool = True) -> None:
        if self.http is not None:
            await self.http.stop()
        if self.compactor is not None:
            self.compactor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.compactor
        await self.client_server.stop(grace=0.5)
        # With every peer gone (the last member of a cluster being shut down), a hand-over
        # could only time out.
        if transfer_leadership and not self.transport.peers_up():
            transfer_leadership = False
        await self.driver.stop(transfer_leadership=transfer_leadership)
        await self.transport.close()
        if self.peer_service is not None:
            await self.peer_service.close()
        await self.peer_server.stop(grace=0.2)


def _members(config: ServerConfig) -> list[Member]:
    ids = config.member_ids()
    members = []
    for name, urls in sorted(config.initial_cluster.items()):
        client_urls = config.advertise_client_urls if name == config.name else ()
        members.append(Member(ids[name], name, urls, tuple(client_urls)))
    return members


def _listen(server: grpc.aio.Server, urls: tuple[str, ...], flag: str, tls: TLSInfo) -> None:
    """Listen on every URL: https ones with ``tls``'s certificates, reloaded when they change."""
    credentials = None
    if any(is_tls(url) for url in urls):
        credentials = server_credentials(tls)  # ConfigError if the files do not load
    elif not tls.empty:
        # etcd's behaviour and warning: certificates are for https:// URLs only.
        logger.warning(
            "--%s: scheme is HTTP while key and cert files are present; ignoring key and cert "
            "files",
            flag,
        )
    for url in urls:
        _listen_one(server, url, flag, credentials if is_tls(url) else None)


def _listen_one(
    server: grpc.aio.Server, url: str, flag: str, credentials: grpc.ServerCredentials | None
) -> None:
    address = host_port(url, flag)
    try:
        if credentials is None:
            server.add_insecure_port(address)
        else:
            server.add_secure_port(address, credentials)
    except RuntimeError as exc:
        raise OSError(
            f"--{flag}: cannot listen on {address} ({exc}); is another process using the port?"
        ) from None


def _loopback(url: str) -> str:
    """The address the HTTP gateway dials to reach this member's gRPC server."""
    address = host_port(url)
    host, _, port = address.rpartition(":")
    host = {"0.0.0.0": "127.0.0.1", "[::]": "[::1]"}.get(host, host)
    return f"{host}:{port}"


def _http_server(config: ServerConfig, driver: NodeDriver) -> HttpServer | None:
    if not (config.listen_client_http_urls or config.listen_metrics_urls):
        return None
    return HttpServer(
        driver,
        grpc_target=_loopback(config.listen_client_urls[0]),
        quota_bytes=config.quota_backend_bytes,
        max_request_bytes=config.max_request_bytes,
        rpc_stats=RpcStats(),
    )


def member_dir(config: ServerConfig) -> Path:
    return config.data_dir / "member"


def _peer_side(
    config: ServerConfig, driver: NodeDriver, snap_dir: Path
) -> tuple[GrpcTransport, grpc.aio.Server, PeerService]:
    """The transport to the other members and the server that receives from them (over TLS
    when the peer URLs are https://; ServerConfig refuses a mix)."""
    ids = config.member_ids()
    peers = {
        ids[name]: host_port(urls[0])
        for name, urls in config.initial_cluster.items()
        if name != config.name
    }
    transport = GrpcTransport(
        member_id=config.member_id,
        cluster_id=config.cluster_id,
        peers=peers,
        handler=driver,
        credentials=(
            ChannelCredentialsSource(config.peer_tls) if config.peer_links_use_tls else None
        ),
    )
    driver.attach_transport(transport)
    peer_server = grpc.aio.server(options=PEER_SERVER_OPTIONS)
    peer_service = PeerService(
        member_id=config.member_id,
        cluster_id=config.cluster_id,
        handler=driver,
        snap_dir=snap_dir,
    )
    peer_pb2_grpc.add_RaftServicer_to_server(peer_service, peer_server)
    _listen(peer_server, config.listen_peer_urls, "listen-peer-urls", config.peer_tls)
    return transport, peer_server, peer_service


def _build_driver(
    config: ServerConfig, raft_log: DurableLog, backend: KVBackend, snap_dir: Path
) -> NodeDriver:
    bootstrap_log(raft_log, list(config.member_ids().values()))
    driver_config = DriverConfig(
        member_id=config.member_id,
        cluster_id=config.cluster_id,
        tick_interval_ms=config.heartbeat_interval_ms,
        election_ticks=config.election_ticks,
        snapshot_count=config.snapshot_count,
        unsafe_local_reads=config.unsafe_local_reads,
    )
    if config.unsafe_local_reads:
        logger.warning(
            "--experimental-unsafe-local-reads is on: linearizable reads are served from local "
            "state without ReadIndex and CAN RETURN STALE DATA; use it only to test checkers"
        )
    return NodeDriver(
        driver_config,
        raft_log,
        KVStateMachine(backend, quota_bytes=config.quota_backend_bytes),
        _members(config),
        db_path=member_dir(config) / "kv" / "data.mdb",
        members_path=member_dir(config) / "members.json",
        received_snapshots=ReceivedSnapshots(snap_dir),
        rng=random.Random(),
    )


def _client_server(
    config: ServerConfig, driver: NodeDriver, http: HttpServer | None
) -> grpc.aio.Server:
    client_server = grpc.aio.server(options=client_server_options(config.max_request_bytes))
    add_client_services(
        client_server,
        driver,
        max_request_bytes=config.max_request_bytes,
        request_timeout_s=config.request_timeout_s,
        watch_progress_notify_interval_s=config.watch_progress_notify_interval_ms / 1000,
        # Calls are counted only for /metrics: without HTTP the gRPC path stays as it was.
        rpc_stats=http.rpc_stats if http is not None else None,
    )
    _listen(client_server, config.listen_client_urls, "listen-client-urls", config.client_tls)
    return client_server


async def _start_http(config: ServerConfig, http: HttpServer) -> None:
    await http.start(config.listen_client_http_urls, config.listen_metrics_urls)
    logger.info(
        "member %x serving HTTP (JSON gateway, /health, /version, /metrics) on %s; "
        "/metrics, /health and /version on %s",
        config.member_id,
        ",".join(config.listen_client_http_urls) or "-",
        ",".join(config.listen_metrics_urls) or "-",
    )


def _start_compactor(config: ServerConfig, driver: NodeDriver) -> asyncio.Task[None] | None:
    policy = config.auto_compaction
    if not policy.enabled:
        return None
    compactor = Compactor(driver, policy, timeout_s=config.request_timeout_s)
    logger.info("auto compaction: %s, retention %s", policy.mode, config.auto_compaction_retention)
    return asyncio.get_running_loop().create_task(compactor.run(), name="raftkv-auto-compaction")


async def start_node(config: ServerConfig, raft_log: DurableLog, backend: KVBackend) -> RunningNode:
    """Start serving over storage the caller opened (see ``member_dir`` for the layout)."""
    snap_dir = member_dir(config) / "snap"
    snap_dir.mkdir(parents=True, exist_ok=True)
    driver = _build_driver(config, raft_log, backend, snap_dir)
    transport, peer_server, peer_service = _peer_side(config, driver, snap_dir)
    http = _http_server(config, driver)
    client_server = _client_server(config, driver, http)

    await peer_server.start()
    await transport.start()
    await driver.start()
    await client_server.start()
    if http is not None:
        await _start_http(config, http)
    logger.info(
        "member %x (%s) serving clients on %s, peers on %s",
        config.member_id,
        config.name,
        ",".join(config.listen_client_urls),
        ",".join(config.listen_peer_urls),
    )
    running = RunningNode(
        driver, transport, peer_server, client_server, raft_log, backend, http=http
    )
    running.peer_service = peer_service
    running.compactor = _start_compactor(config, driver)
    return running


async def run_node(
    config: ServerConfig,
    raft_log: DurableLog,
    backend: KVBackend,
    *,
    on_ready: Callable[[], None] | None = None,
) -> None:
    """Run until SIGINT or SIGTERM, then stop gracefully (handing leadership over first)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    node = await start_node(config, raft_log, backend)
    # Everything built so far (modules, protobuf descriptors, gRPC machinery) lives as long as
    # the process: moved out of the collector's view, full collections stop re-scanning it.
    gc.freeze()
    if on_ready is not None:
        on_ready()
    try:
        stopped = asyncio.ensure_future(stop.wait())
        failed = asyncio.ensure_future(node.driver.failed.wait())
        await asyncio.wait({stopped, failed}, return_when=asyncio.FIRST_COMPLETED)
        for waiter in (stopped, failed):
            waiter.cancel()
        if node.driver.failed.is_set():
            raise SystemExit("raftkv: member stopped after an internal error (see the log)")
        logger.info("member %x stopping", config.member_id)
    finally:
        await node.stop()
        logger.info("member %x stopped", config.member_id)
