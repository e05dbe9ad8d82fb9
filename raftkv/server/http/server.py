"""HttpServer: the member's HTTP/1.1 listeners, on the member's own asyncio loop (aiohttp).

Two kinds of listener, as etcd 3.5 has with ``--listen-client-http-urls`` and
``--listen-metrics-urls``:

* client HTTP URLs: the JSON gateway under ``/v3/`` (and ``/v3beta/``), plus everything below;
* metrics URLs: ``/metrics``, ``/health``, ``/livez``, ``/readyz`` and ``/version`` only.

etcd serves HTTP and gRPC on one port (cmux). grpcio owns its listening sockets, so raftkv
serves HTTP on ports of its own; docs/http.md says how HTTP clients are pointed there.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from urllib.parse import urlsplit

import grpc
from aiohttp import web

from raftkv.errors import ConfigError
from raftkv.server.api import NodeApi
from raftkv.server.http.gateway import Gateway
from raftkv.server.http.health import HealthEndpoints
from raftkv.server.http.metrics import MemberCollector, member_registry, scrape
from raftkv.server.rpc_stats import RpcStats

__all__ = ["HttpServer", "split_url"]

logger = logging.getLogger(__name__)

_METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The classic text format, as etcd answers (prometheus-client's newest default, 1.0.0, is one
that older Prometheus servers do not know)."""

_GRPC_CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", -1),
    ("grpc.max_send_message_length", -1),
]


def split_url(url: str, flag: str = "url") -> tuple[str, int]:
    """``http://127.0.0.1:2381`` -> ("127.0.0.1", 2381); brackets of IPv6 hosts removed."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "") or not parts.hostname or parts.port is None:
        raise ConfigError(f"--{flag}: {url!r} must be http://host:port")
    return parts.hostname, parts.port


class HttpServer:
    """Serves one member over HTTP; ``grpc_target`` is the member's own client gRPC address,
    which the gateway calls (as etcd's gateway calls its own gRPC server)."""

    def __init__(
        self,
        node: NodeApi,
        *,
        grpc_target: str,
        quota_bytes: int,
        max_request_bytes: int,
        rpc_stats: RpcStats | None = None,
        health_timeout_s: float = 1.0,
    ) -> None:
        self._grpc_target = grpc_target
        self.rpc_stats = rpc_stats
        """The gRPC server's call counts shown in /metrics (its owner registers them)."""
        self._max_body = 4 * max_request_bytes + (1 << 20)  # base64 and JSON around the bytes
        self.health = HealthEndpoints(node, timeout_s=health_timeout_s)
        collector = MemberCollector(
            node, quota_bytes=quota_bytes, rpc_stats=rpc_stats, health=self.health.counts
        )
        self.registry = member_registry(collector)
        self._channel: grpc.aio.Channel | None = None
        self._runners: list[web.AppRunner] = []
        self.addresses: dict[str, list[tuple[str, int]]] = {"client": [], "metrics": []}
        """Bound (host, port) per kind of listener, once started (port 0 binds a free port)."""

    async def metrics(self, request: web.Request) -> web.Response:
        if request.method != "GET":
            return web.Response(status=405, text="Method Not Allowed\n")
        return web.Response(
            body=scrape(self.registry), headers={"Content-Type": _METRICS_CONTENT_TYPE}
        )

    async def _not_found(self, request: web.Request) -> web.Response:
        return web.Response(status=404, text="404 page not found\n")

    def _app(self, gateway: Gateway | None) -> web.Application:
        app = web.Application(client_max_size=self._max_body)
        self.health.add_routes(app)
        app.router.add_route("*", "/metrics", self.metrics)
        if gateway is not None:
            for prefix in ("/v3/", "/v3beta/"):
                app.router.add_route("*", prefix + "{tail:.*}", gateway.handle)
        app.router.add_route("*", "/{tail:.*}", self._not_found)
        return app

    async def start(self, client_urls: Sequence[str], metrics_urls: Sequence[str]) -> None:
        if client_urls:
            self._channel = grpc.aio.insecure_channel(
                self._grpc_target, options=_GRPC_CHANNEL_OPTIONS
            )
            await self._serve(self._app(Gateway(self._channel)), client_urls, "client")
        if metrics_urls:
            await self._serve(self._app(None), metrics_urls, "metrics")

    async def _serve(self, app: web.Application, urls: Sequence[str], kind: str) -> None:
        # handler_cancellation: a handler is cancelled when its client goes away, so an HTTP
        # watch ends (and its gRPC stream with it) when the HTTP client disconnects.
        runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
        await runner.setup()
        self._runners.append(runner)
        flag = "listen-client-http-urls" if kind == "client" else "listen-metrics-urls"
        for url in urls:
            host, port = split_url(url, flag)
            site = web.TCPSite(runner, host, port, reuse_address=True)
            try:
                await site.start()
            except OSError as exc:
                raise OSError(f"--{flag}: cannot listen on {host}:{port} ({exc})") from None
        for address in runner.addresses:
            self.addresses[kind].append((str(address[0]), int(address[1])))

    async def stop(self) -> None:
        for runner in reversed(self._runners):
            await runner.cleanup()
        self._runners.clear()
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
