"""``/health``, ``/livez``, ``/readyz`` and ``/version``, with etcd's checks and bodies.

``/health`` is etcd 3.5's: the checks run in etcd's order and the first failure is the answer:
an active alarm not named in ``?exclude=`` ("ALARM NOSPACE", "ALARM CORRUPT"), no known leader
("RAFT NO LEADER", skipped with ``?serializable=true``), then a read: linearizable (a ReadIndex
confirmed by a quorum and applied here) unless ``?serializable=true``, within ``timeout_s``
("RANGE ERROR:<etcd's error text>"). 200 ``{"health":"true","reason":""}``, or 503 with
``"false"`` and the reason. raftkv raises no alarm yet, so that check passes unless the node
reports one.

``/livez`` and ``/readyz`` are etcd 3.6's named checks (livez: serializable_read; readyz:
data_corruption, serializable_read, linearizable_read, non_learner); each also has its own
sub-path (``/readyz/linearizable_read``). ``?exclude=NAME`` skips a check and ``?verbose``
lists them as ``[+]name ok`` / ``[-]name failed: why``. 200 ``ok``, or 503 with the list.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

from aiohttp import web

from raftkv.pb.etcdserverpb import rpc_pb2
from raftkv.server.api import NodeApi
from raftkv.server.maintenance_service import ETCD_VERSION, AlarmSource
from raftkv.server.status import status_of

__all__ = ["HealthCounts", "HealthEndpoints", "cluster_version"]

_TEXT = "text/plain"
LIVEZ_CHECKS = ("serializable_read",)
READYZ_CHECKS = ("data_corruption", "serializable_read", "linearizable_read", "non_learner")
_GRACE_S = 0.25


def cluster_version(server_version: str) -> str:
    """etcd's cluster version: the major and minor version of the members, patch 0."""
    major, minor, *_ = server_version.split(".")
    return f"{major}.{minor}.0"


class HealthCounts:
    """etcd_server_health_success and etcd_server_health_failures, for /metrics."""

    def __init__(self) -> None:
        self.success = 0
        self.failures = 0


def _method_not_allowed() -> web.Response:
    # Go's http.Error, as etcd answers anything but GET.
    return web.Response(
        status=405,
        text="Method Not Allowed\n",
        content_type=_TEXT,
        headers={"Allow": "GET", "X-Content-Type-Options": "nosniff"},
    )


class HealthEndpoints:
    def __init__(self, node: NodeApi, *, timeout_s: float = 1.0) -> None:
        self._node = node
        self._timeout_s = timeout_s
        self.counts = HealthCounts()

    def add_routes(self, app: web.Application) -> None:
        app.router.add_route("*", "/health", self.health)
        app.router.add_route("*", "/version", self.version)
        for path, checks in (("/livez", LIVEZ_CHECKS), ("/readyz", READYZ_CHECKS)):
            app.router.add_route("*", path, self._probe(checks))
            for name in checks:
                app.router.add_route("*", f"{path}/{name}", self._probe((name,), single=True))

    async def version(self, request: web.Request) -> web.Response:
        if request.method != "GET":
            return _method_not_allowed()
        body = {"etcdserver": ETCD_VERSION, "etcdcluster": cluster_version(ETCD_VERSION)}
        data = json.dumps(body, separators=(",", ":")).encode()
        return web.Response(body=data, headers={"Content-Type": "application/json"})

    # -- the checks -----------------------------------------------------------------------

    def _alarm(self, excluded: set[str]) -> str:
        """The first active alarm's name that is not excluded, "" if none."""
        node = self._node
        if not isinstance(node, AlarmSource):
            return ""
        for _, kind in node.alarms():
            name = rpc_pb2.AlarmType.Name(rpc_pb2.AlarmType.ValueType(kind))
            if name not in excluded:
                return name
        return ""

    async def _read(self, *, serializable: bool) -> str:
        """etcd's health read; "" if it worked, else etcd's error text."""
        if serializable:
            self._node.store.current_revision()  # a local read
            return ""
        try:
            async with asyncio.timeout(self._timeout_s + _GRACE_S):
                await self._node.linearizable_barrier(timeout_s=self._timeout_s)
        except Exception as exc:
            return status_of(exc)[1]
        return ""

    async def _health_reason(self, excluded: set[str], serializable: bool) -> str:
        alarm = self._alarm(excluded)
        if alarm:
            return f"ALARM {alarm}" if alarm in ("NOSPACE", "CORRUPT") else "ALARM UNKNOWN"
        if not serializable and not self._node.status().leader:
            return "RAFT NO LEADER"
        error = await self._read(serializable=serializable)
        return f"RANGE ERROR:{error}" if error else ""

    async def health(self, request: web.Request) -> web.Response:
        if request.method != "GET":
            return _method_not_allowed()
        excluded = {a for a in request.query.getall("exclude", []) if a}
        serializable = request.query.get("serializable") == "true"
        reason = await self._health_reason(excluded, serializable)
        body = json.dumps(
            {"health": "false" if reason else "true", "reason": reason}, separators=(",", ":")
        )
        if reason:
            self.counts.failures += 1
            return web.Response(
                status=503,
                text=body + "\n",
                content_type=_TEXT,
                headers={"X-Content-Type-Options": "nosniff"},
            )
        self.counts.success += 1
        return web.Response(text=body, content_type=_TEXT)

    async def _check(self, name: str) -> str:
        """One named check of /livez or /readyz: "" if it passed, else why not."""
        if name == "data_corruption":
            return "alarm activated: CORRUPT" if self._alarm(set()) == "CORRUPT" else ""
        if name in ("serializable_read", "linearizable_read"):
            return await self._read(serializable=name == "serializable_read")
        if name == "non_learner":
            return "not supported for learner" if self._node.status().is_learner else ""
        raise KeyError(name)

    def _probe(
        self, checks: tuple[str, ...], *, single: bool = False
    ) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def probe(request: web.Request) -> web.Response:
            if request.method != "GET":
                return _method_not_allowed()
            excluded = set() if single else set(request.query.getall("exclude", []))
            lines, failed = [], False
            for name in checks:
                if name in excluded:
                    continue
                why = await self._check(name)
                failed = failed or bool(why)
                lines.append(f"[-]{name} failed: {why}\n" if why else f"[+]{name} ok\n")
            report = "".join(lines)
            headers = {"X-Content-Type-Options": "nosniff"}
            if failed:
                self.counts.failures += 1
                return web.Response(
                    status=503, text=report + "\n", content_type=_TEXT, headers=headers
                )
            self.counts.success += 1
            text = (report if "verbose" in request.query else "") + "ok\n"
            return web.Response(text=text, content_type=_TEXT, headers=headers)

        return probe
