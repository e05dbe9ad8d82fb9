"""The gateway's answers next to real etcd 3.4's (Debian's etcd-server) for the same requests.

Both start empty, so revisions agree; ids (cluster, member, term) differ by construction and
are compared as present-or-absent only. Known differences, kept on purpose (docs/http.md): the
error body adds ``details`` (etcd 3.6 reads it), ``/health`` adds 3.5's ``reason``, parse errors
have Python's wording, and Alarm answers with a header where etcd 3.4 sends ``{}``.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
from raftkv_cli.real_etcd import ETCD, real_etcd

IDS = {"cluster_id", "member_id", "raft_term", "leader", "ID", "memberID"}


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def normal(value: Any) -> Any:
    """``value`` with ids replaced by a marker, so that two members' answers compare."""
    if isinstance(value, dict):
        return {k: "<id>" if k in IDS else normal(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [normal(v) for v in value]
    return value


@pytest.fixture(scope="module")
def etcd_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if ETCD is None:
        pytest.skip("etcd is not installed")
    with real_etcd(tmp_path_factory.mktemp("etcd")) as endpoint:
        yield "http://" + endpoint


async def ask(
    session: aiohttp.ClientSession, base: str, path: str, body: Any = None, method: str = "POST"
) -> tuple[int, Any]:
    data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
    async with session.request(method, base + path, data=data) as resp:
        text = await resp.text()
    try:
        return resp.status, json.loads(text)
    except ValueError:
        return resp.status, text


_IF = {"key": b64("foo"), "result": "EQUAL", "target": "VALUE", "value": b64("baz")}
_THEN = [{"requestRange": {"key": b64("foo")}}, {"request_put": {"key": b64("t")}}]
TXN = (
    "/v3/kv/txn",
    {
        "compare": [_IF],
        "success": _THEN,
        "failure": [{"request_delete_range": {"key": b64("foo")}}],
    },
)

SAME = [  # (path, body): answers must be equal once ids are masked
    ("/v3/kv/put", {"key": b64("foo"), "value": b64("bar")}),
    ("/v3/kv/range", {"key": b64("foo")}),
    ("/v3/kv/range", {"key": b64("none")}),
    ("/v3/kv/put", {"key": b64("foo"), "value": b64("baz"), "prev_kv": True}),
    ("/v3/kv/put", {"key": b64("fop"), "value": b64("1"), "lease": 0}),
    ("/v3beta/kv/range", {"key": b64("fo"), "range_end": b64("fp"), "sort_order": 2, "limit": 1}),
    ("/v3/kv/range", {"key": b64("fo"), "range_end": b64("fp"), "keys_only": True}),
    ("/v3/kv/range", {"key": b64("fo"), "range_end": b64("fp"), "count_only": True}),
    ("/v3/kv/range", {"key": b64("foo"), "revision": "2"}),
    TXN,
    ("/v3/kv/deleterange", {"key": b64("fop"), "prev_kv": True}),
    ("/v3/kv/deleterange", {"key": b64("nothing")}),
    ("/v3/kv/compaction", {"revision": 2}),
    ("/v3/kv/range", {"key": b64("foo"), "revision": 1}),
    ("/v3/kv/range", {"key": b64("foo"), "revision": 100}),
    ("/v3/kv/compaction", {"revision": 100}),
    ("/v3/kv/put", {"key": ""}),
    ("/v3/kv/put", {"key": b64("k"), "lease": "99"}),
    ("/v3/maintenance/transfer-leadership", {"targetID": 77}),
    ("/v3/maintenance/defragment", {}),
]  # fmt: skip


def answers(base: str) -> list[tuple[int, Any]]:
    async def main() -> list[tuple[int, Any]]:
        async with aiohttp.ClientSession() as session:
            return [await ask(session, base, path, body) for path, body in SAME]

    return asyncio.run(main())


def test_kv_and_maintenance_answers_match_etcd(serving: Any, etcd_url: str) -> None:
    async def ours() -> list[tuple[int, Any]]:
        async with serving() as served:
            return await asyncio.to_thread(answers, served.url)

    mine, theirs = asyncio.run(ours()), answers(etcd_url)
    for (path, body), a, b in zip(SAME, mine, theirs, strict=True):
        if isinstance(a[1], dict):
            a[1].pop("details", None)  # raftkv's error body adds etcd 3.6's details
        if (path, body) == TXN:
            # A gap of the KV layer, not of the gateway: see the test below.
            for answer in (a[1], b[1]):
                for op in answer["responses"]:
                    next(iter(op.values()))["header"].pop("revision")
        assert normal(a) == normal(b), (path, body)


@pytest.mark.xfail(
    reason="raftkv's txn sub-responses carry the txn's final revision; etcd 3.4's carry the "
    "revision at each op (a range before a put in the same txn sees the revision before it)",
    strict=True,
)
def test_txn_sub_response_revisions_match_etcd(serving: Any, etcd_url: str) -> None:
    async def go(base: str) -> list[str]:
        async with aiohttp.ClientSession() as session:
            await ask(session, base, "/v3/kv/put", {"key": b64("s"), "value": b64("1")})
            ops = [{"requestRange": {"key": b64("s")}}, {"request_put": {"key": b64("s")}}]
            _, got = await ask(session, base, "/v3/kv/txn", {"success": ops})
        top = int(got["header"]["revision"])
        subs = [next(iter(op.values())) for op in got["responses"]]
        return [str(top - int(sub["header"]["revision"])) for sub in subs]

    async def ours() -> list[str]:
        async with serving() as served:
            return await go(served.url)

    assert asyncio.run(ours()) == asyncio.run(go(etcd_url))


ROUGH = [  # (method, path, body): same status; same error code where there is one
    ("POST", "/v3/kv/put", b"{bad"),
    ("POST", "/v3/kv/put", b'{"key":123}'),
    ("POST", "/v3alpha/kv/range", b"{}"),
    ("POST", "/v3/kv/nothing", b"{}"),
    ("GET", "/v3/kv/range", None),
    ("POST", "/v3/watch", b'{"create_request":{"key":"YQ=="},'),
    ("GET", "/version", None),
    ("POST", "/health", None),
]


def test_statuses_and_codes_match_etcd(serving: Any, etcd_url: str) -> None:
    async def go(base: str) -> list[tuple[int, Any]]:
        async with aiohttp.ClientSession() as session:
            out = []
            for method, path, body in ROUGH:
                status, got = await ask(session, base, path, body, method)
                out.append((status, got.get("code") if isinstance(got, dict) else None))
            return out

    async def ours() -> list[tuple[int, Any]]:
        async with serving() as served:
            return await go(served.url)

    assert asyncio.run(ours()) == asyncio.run(go(etcd_url))


def test_shapes_of_status_members_version_health_match_etcd(serving: Any, etcd_url: str) -> None:
    async def go(base: str) -> dict[str, Any]:
        async with aiohttp.ClientSession() as session:
            _, status = await ask(session, base, "/v3/maintenance/status", {})
            _, members = await ask(session, base, "/v3/cluster/member/list", {})
            _, version = await ask(session, base, "/version", method="GET")
            health = await ask(session, base, "/health", method="GET")
        return {
            # Sizes are left out at zero (the fake node's memory backend) by the same rule.
            "status": set(status) - {"dbSize", "dbSizeInUse"},
            "header": set(status["header"]),
            "member": set(members["members"][0]),
            "version": set(version),
            "health": (health[0], health[1]["health"]),
        }

    async def ours() -> dict[str, Any]:
        async with serving() as served:
            return await go(served.url)

    assert asyncio.run(ours()) == asyncio.run(go(etcd_url))


def test_watch_stream_matches_etcd(serving: Any, etcd_url: str) -> None:
    async def go(base: str) -> list[Any]:
        async with aiohttp.ClientSession() as session:
            for i in range(3):
                await ask(session, base, "/v3/kv/put", {"key": b64("w"), "value": b64(str(i))})
            await ask(session, base, "/v3/kv/deleterange", {"key": b64("w")})
            create = {"key": b64("w"), "start_revision": 2, "prev_kv": True}
            body = json.dumps({"create_request": create})
            async with session.post(base + "/v3/watch", data=body) as resp:
                chunks = []
                for _ in range(2):
                    data, _ = await asyncio.wait_for(resp.content.readchunk(), 5)
                    chunks.append(normal(json.loads(data)))
                # then a put after the watch started
                await ask(session, base, "/v3/kv/put", {"key": b64("w"), "value": b64("x")})
                data, _ = await asyncio.wait_for(resp.content.readchunk(), 5)
                chunks.append(normal(json.loads(data)))
            return chunks

    async def ours() -> list[Any]:
        async with serving() as served:
            return await go(served.url)

    mine, theirs = asyncio.run(ours()), asyncio.run(go(etcd_url))
    # Revisions differ (the etcd store has the earlier test's writes): compare without them.
    assert _no_revisions(mine) == _no_revisions(theirs)


def _no_revisions(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _no_revisions(v) for k, v in value.items() if "revision" not in k}
    if isinstance(value, list):
        return [_no_revisions(v) for v in value]
    return value
