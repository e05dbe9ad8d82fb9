"""A member served over gRPC and HTTP in-process, over a FakeNode (no Raft): the ``serving``
fixture gives an async context manager yielding the HTTP base URL, the node and the server."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest

from raftkv.server.api import Member
from raftkv.server.fake_node import FakeNode
from raftkv.server.grpc_server import add_client_services, client_server_options
from raftkv.server.http import HttpServer
from raftkv.server.rpc_stats import RpcStats

MAX_REQUEST_BYTES = 1536 * 1024
OTHER = Member(0x1234, "other", ("http://127.0.0.1:2480",), ("http://127.0.0.1:2479",))


@dataclass
class Served:
    url: str
    """The client HTTP listener (gateway and all)."""
    metrics_url: str
    """The metrics listener (no gateway)."""
    node: FakeNode
    http: HttpServer
    grpc_target: str


@contextlib.asynccontextmanager
async def _serving(node: FakeNode | None = None, **options: Any) -> AsyncIterator[Served]:
    node = node or FakeNode(other_members=[OTHER])
    stats = RpcStats()
    server = grpc.aio.server(options=client_server_options(MAX_REQUEST_BYTES))
    add_client_services(server, node, rpc_stats=stats)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    http = HttpServer(
        node,
        grpc_target=f"127.0.0.1:{port}",
        quota_bytes=node.quota_bytes,
        max_request_bytes=MAX_REQUEST_BYTES,
        rpc_stats=stats,
        **options,
    )
    try:
        await http.start(["http://127.0.0.1:0"], ["http://127.0.0.1:0"])
        client = http.addresses["client"][0][1]
        metrics = http.addresses["metrics"][0][1]
        yield Served(
            f"http://127.0.0.1:{client}",
            f"http://127.0.0.1:{metrics}",
            node,
            http,
            f"127.0.0.1:{port}",
        )
    finally:
        await http.stop()
        await server.stop(None)


@pytest.fixture
def serving() -> Callable[..., contextlib.AbstractAsyncContextManager[Served]]:
    return _serving
