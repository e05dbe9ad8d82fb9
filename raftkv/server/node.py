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
from raftkv.server.config import ServerConfig, host_port
from raftkv.server.driver import DriverConfig, NodeDriver, bootstrap_log
from raftkv.server.grpc_server import add_client_services, client_server_options
from raftkv.server.peer.options import PEER_SERVER_OPTIONS
from raftkv.server.peer.sender import GrpcTransport
from raftkv.server.peer.service import PeerService
from raftkv.server.peer.snapshot_receiver import ReceivedSnapshots

logger = logging.getLogger(__name__)


@dataclass
class RunningNode:
    driver: NodeDriver
    transport: GrpcTransport
    peer_server: grpc.aio.Server
    client_server: grpc.aio.Server
    raft_log: DurableLog
    backend: KVBackend

    async def stop(self, *, transfer_leadership: bool = True) -> None:
        await self.client_server.stop(grace=0.5)
        await self.driver.stop(transfer_leadership=transfer_leadership)
        await self.transport.close()
        await self.peer_server.stop(grace=0.2)


def _members(config: ServerConfig) -> list[Member]:
    ids = config.member_ids()
    members = []
    for name, urls in sorted(config.initial_cluster.items()):
        client_urls = config.advertise_client_urls if name == config.name else ()
        members.append(Member(ids[name], name, urls, tuple(client_urls)))
    return members


def _listen(server: grpc.aio.Server, url: str, flag: str) -> None:
    address = host_port(url, flag)
    try:
        server.add_insecure_port(address)
    except RuntimeError as exc:
        raise OSError(
            f"--{flag}: cannot listen on {address} ({exc}); is another process using the port?"
        ) from None


def member_dir(config: ServerConfig) -> Path:
    return config.data_dir / "member"


async def start_node(config: ServerConfig, raft_log: DurableLog, backend: KVBackend) -> RunningNode:
    """Start serving over storage the caller opened (see ``member_dir`` for the layout)."""
    snap_dir = member_dir(config) / "snap"
    snap_dir.mkdir(parents=True, exist_ok=True)
    driver = _build_driver(config, raft_log, backend, snap_dir)
    transport = _build_transport(config, driver)
    driver.attach_transport(transport)
    peer_server = _build_peer_server(config, driver, snap_dir)
    client_server = _build_client_server(config, driver)

    await peer_server.start()
    await transport.start()
    await driver.start()
    await client_server.start()
    logger.info(
        "member %x (%s) serving clients on %s, peers on %s",
        config.member_id,
        config.name,
        ",".join(config.listen_client_urls),
        ",".join(config.listen_peer_urls),
    )
    return RunningNode(driver, transport, peer_server, client_server, raft_log, backend)


def _build_driver(
    config: ServerConfig, raft_log: DurableLog, backend: KVBackend, snap_dir: Path
) -> NodeDriver:
    """The member's driver over its storage, the log bootstrapped with the initial cluster."""
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


def _build_transport(config: ServerConfig, driver: NodeDriver) -> GrpcTransport:
    """The sending side of the peer transport: one stream to each other initial member."""
    ids = config.member_ids()
    peers = {
        ids[name]: host_port(urls[0])
        for name, urls in config.initial_cluster.items()
        if name != config.name
    }
    return GrpcTransport(
        member_id=config.member_id,
        cluster_id=config.cluster_id,
        peers=peers,
        handler=driver,
    )


def _build_peer_server(config: ServerConfig, driver: NodeDriver, snap_dir: Path) -> grpc.aio.Server:
    """The receiving side of the peer transport, bound to the peer URLs (not started)."""
    peer_server = grpc.aio.server(options=PEER_SERVER_OPTIONS)
    peer_pb2_grpc.add_RaftServicer_to_server(
        PeerService(
            member_id=config.member_id,
            cluster_id=config.cluster_id,
            handler=driver,
            snap_dir=snap_dir,
        ),
        peer_server,
    )
    for url in config.listen_peer_urls:
        _listen(peer_server, url, "listen-peer-urls")
    return peer_server


def _build_client_server(config: ServerConfig, driver: NodeDriver) -> grpc.aio.Server:
    """etcd's client API over the driver, bound to the client URLs (not started)."""
    client_server = grpc.aio.server(options=client_server_options(config.max_request_bytes))
    add_client_services(
        client_server,
        driver,
        max_request_bytes=config.max_request_bytes,
        request_timeout_s=config.request_timeout_s,
        watch_progress_notify_interval_s=config.watch_progress_notify_interval_ms / 1000,
    )
    for url in config.listen_client_urls:
        _listen(client_server, url, "listen-client-urls")
    return client_server


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
