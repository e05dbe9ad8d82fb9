"""/version, /health, /livez and /readyz over a FakeNode, with etcd's bodies and statuses."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp

from raftkv.pb.etcdserverpb import rpc_pb2
from raftkv.server.maintenance_service import ETCD_VERSION


def run(serving: Any, scenario: Any, **options: Any) -> None:
    async def main() -> None:
        async with serving(**options) as served, aiohttp.ClientSession() as session:
            await scenario(served, session)

    asyncio.run(main())


async def get(session: aiohttp.ClientSession, url: str) -> tuple[int, str, str]:
    async with session.get(url) as resp:
        return resp.status, await resp.text(), resp.headers.get("Content-Type", "")


def test_version(serving: Any) -> None:
    async def scenario(served: Any, session: aiohttp.ClientSession) -> None:
        for base in (served.url, served.metrics_url):
            status, body, ctype = await get(session, base + "/version")
            assert status == 200 and ctype == "application/json"
            # The version Status reports, and the cluster version etcd derives from it.
            assert json.loads(body) == {"etcdserver": ETCD_VERSION, "etcdcluster": "3.4.0"}
            assert body.startswith('{"etcdserver":"')  # compact, in etcd's order
        async with session.post(served.url + "/version") as resp:
            assert resp.status == 405 and resp.headers["Allow"] == "GET"

    run(serving, scenario)


def test_health_ok_and_its_failures_in_etcds_order(serving: Any) -> None:
    async def scenario(served: Any, session: aiohttp.ClientSession) -> None:
        node = served.node
        assert await get(session, served.url + "/health") == (
            200,
            '{"health":"true","reason":""}',
            "text/plain; charset=utf-8",
        )
        node.alarm_list.append((node.member_id, rpc_pb2.NOSPACE))
        node.leader = 0
        unhealthy = (503, '{"health":"false","reason":"ALARM NOSPACE"}\n')
        assert (await get(session, served.url + "/health"))[:2] == unhealthy
        # An excluded alarm is skipped; then the leader check comes before the read.
        status, body, _ = await get(session, served.url + "/health?exclude=NOSPACE")
        assert (status, json.loads(body)) == (503, {"health": "false", "reason": "RAFT NO LEADER"})
        node.alarm_list.clear()
        # serializable=true: no leader needed, a local read.
        status, _, _ = await get(session, served.metrics_url + "/health?serializable=true")
        assert status == 200
        node.leader = node.member_id
        node.stalled = True  # the quorum read never completes: etcd's timeout, within 1 s
        started = asyncio.get_running_loop().time()
        status, body, _ = await get(session, served.url + "/health")
        assert asyncio.get_running_loop().time() - started < 2
        assert (status, json.loads(body)) == (
            503,
            {"health": "false", "reason": "RANGE ERROR:etcdserver: request timed out"},
        )
        async with session.put(served.url + "/health") as resp:
            assert resp.status == 405
        assert served.http.health.counts.failures == 3

    run(serving, scenario, health_timeout_s=0.3)


def test_livez_and_readyz(serving: Any) -> None:
    async def scenario(served: Any, session: aiohttp.ClientSession) -> None:
        assert (await get(session, served.url + "/livez"))[:2] == (200, "ok\n")
        status, body, _ = await get(session, served.url + "/readyz?verbose")
        assert (status, body) == (
            200,
            "[+]data_corruption ok\n[+]serializable_read ok\n[+]linearizable_read ok\n"
            "[+]non_learner ok\nok\n",
        )
        served.node.stalled = True
        status, body, _ = await get(session, served.url + "/readyz")
        assert status == 503
        assert "[-]linearizable_read failed: etcdserver: request timed out\n" in body
        assert "[+]serializable_read ok\n" in body
        status, body, _ = await get(session, served.url + "/readyz?exclude=linearizable_read")
        assert (status, body) == (200, "ok\n")
        assert (await get(session, served.url + "/readyz/serializable_read"))[:2] == (200, "ok\n")
        assert (await get(session, served.url + "/readyz/linearizable_read"))[0] == 503
        assert (await get(session, served.url + "/livez"))[:2] == (200, "ok\n")
        assert (await get(session, served.url + "/livez/nothing"))[0] == 404

    run(serving, scenario, health_timeout_s=0.2)
