"""etcd's JSON gateway over a FakeNode: JSON shapes, lenient input, errors, streams."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import aiohttp


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def run(serving: Any, scenario: Any) -> None:
    async def main() -> None:
        async with serving() as served, aiohttp.ClientSession() as session:
            await scenario(served, session)

    asyncio.run(main())


async def post(session: aiohttp.ClientSession, url: str, body: Any) -> tuple[int, Any]:
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    async with session.post(url, data=data) as resp:
        text = await resp.text()
        try:
            return resp.status, json.loads(text)
        except ValueError:
            return resp.status, text


def test_kv_answers_as_etcds_gateway_writes_them(serving: Any) -> None:
    async def scenario(served: Any, session: aiohttp.ClientSession) -> None:
        v3 = served.url + "/v3"
        status, put = await post(session, v3 + "/kv/put", {"key": b64("foo"), "value": b64("bar")})
        header = put["header"]
        # Field names as in the .proto, 64-bit integers as strings, defaults left out.
        assert status == 200 and list(put) == ["header"]
        assert set(header) == {"cluster_id", "member_id", "revision", "raft_term"}
        assert all(isinstance(v, str) for v in header.values())
        status, got = await post(session, v3 + "/kv/range", {"key": b64("foo")})
        assert got["kvs"] == [
            {
                "key": b64("foo"),
                "create_revision": header["revision"],
                "mod_revision": header["revision"],
                "version": "1",
                "value": b64("bar"),
            }
        ]
        assert got["count"] == "1"
        status, none = await post(session, v3 + "/kv/range", {"key": b64("none")})
        assert status == 200 and list(none) == ["header"]
        status, deleted = await post(
            session, v3 + "/kv/deleterange", {"key": b64("foo"), "prev_kv": True}
        )
        assert deleted["deleted"] == "1" and deleted["prev_kvs"][0]["value"] == b64("bar")

    run(serving, scenario)


def test_input_is_lenient_as_etcds(serving: Any) -> None:
    async def scenario(served: Any, session: aiohttp.ClientSession) -> None:
        v3 = served.url + "/v3"
        await post(session, v3 + "/kv/put", {"key": b64("k?>"), "value": b64("v")})
        # lowerCamel names, numbers for int64 and enums, URL-safe base64, unknown fields.
        urlsafe = base64.urlsafe_b64encode(b"k?>").decode()
        status, got = await post(
            session,
            v3 + "/kv/range",
            {"key": urlsafe, "keysOnly": True, "limit": 5, "sort_order": 2, "unknown": [1]},
        )
        assert status == 200, got
        assert got["kvs"][0]["key"] == b64("k?>")
        assert "value" not in got["kvs"][0]
        txn = {
            "compare": [
                {"key": b64("k?>"), "result": "EQUAL", "target": "VALUE", "value": b64("v")}
            ],
            "success": [{"requestRange": {"key": b64("k?>")}}],
            "failure": [{"request_put": {"key": b64("k?>"), "value": b64("x")}}],
        }
        status, got = await post(session, v3 + "/kv/txn", txn)
        assert status == 200 and got["succeeded"] is True
        assert list(got["responses"][0]) == ["response_range"]
        # An empty body is the empty request, as in etcd's gateway (then etcd's own check).
        status, body = await post(session, v3 + "/kv/range", b"")
        assert (status, body["message"]) == (400, "etcdserver: key is not provided")
        assert (await post(session, v3 + "/maintenance/status", b""))[0] == 200

    run(serving, scenario)


def test_errors_carry_etcds_code_message_and_http_status(serving: Any) -> None:
    async def scenario(served: Any, session: aiohttp.ClientSession) -> None:
        v3 = served.url + "/v3"
        future = "etcdserver: mvcc: required revision is a future revision"
        assert await post(session, v3 + "/kv/range", {"key": b64("a"), "revision": 99}) == (
            400,
            {"error": future, "code": 11, "message": future, "details": []},
        )
        status, body = await post(session, v3 + "/kv/put", {"key": ""})
        assert (status, body["code"], body["error"]) == (400, 3, "etcdserver: key is not provided")
        status, body = await post(session, v3 + "/kv/put", b"{bad")
        assert (status, body["code"]) == (400, 3)
        status, body = await post(session, v3 + "/kv/put", {"key": 123})
        assert (status, body["code"]) == (400, 3)
        # Services raftkv lacks answer what gRPC answers: UNIMPLEMENTED, 501.
        for path in ("/lock/lock", "/election/leader", "/auth/status"):
            status, body = await post(session, v3 + path, {})
            assert (status, body["code"]) == (501, 12), path
        # The Lease service is served: a revoke of a lease never granted is etcd's NOT_FOUND.
        status, body = await post(session, v3 + "/kv/lease/revoke", {"ID": "12345"})
        assert (status, body["code"], body["message"]) == (
            404,
            5,
            "etcdserver: requested lease not found",
        )
        status, body = await post(session, v3 + "/maintenance/transfer-leadership", {"targetID": 7})
        assert (status, body["message"]) == (412, "etcdserver: bad leader transferee")
        assert (await post(session, v3 + "/kv/nothing", {}))[0] == 404
        assert (await post(session, served.url + "/v3alpha/kv/range", {}))[0] == 404
        assert (await post(session, served.metrics_url + "/v3/kv/range", {}))[0] == 404
        async with session.get(v3 + "/kv/range") as resp:
            assert resp.status == 405

    run(serving, scenario)


def test_v3beta_is_rewritten_and_other_services_answer(serving: Any) -> None:
    async def scenario(served: Any, session: aiohttp.ClientSession) -> None:
        status, got = await post(session, served.url + "/v3beta/maintenance/status", {})
        assert status == 200 and got["version"] and got["leader"] == got["header"]["member_id"]
        status, got = await post(session, served.url + "/v3/cluster/member/list", {})
        assert status == 200 and {"ID", "name", "peerURLs", "clientURLs"} <= set(got["members"][0])
        status, got = await post(session, served.url + "/v3/maintenance/hashkv", {})
        assert status == 200 and "hash" in got

    run(serving, scenario)


async def read_chunk(resp: aiohttp.ClientResponse) -> dict[str, Any]:
    """One HTTP chunk, which must hold exactly one JSON line."""
    data = b""
    while True:
        part, end = await asyncio.wait_for(resp.content.readchunk(), 5)
        data += part
        if end:
            break
    assert data.endswith(b"\n") and data.count(b"\n") == 1, data
    value: dict[str, Any] = json.loads(data)
    return value


def test_watch_streams_one_result_per_chunk_and_stays_open(serving: Any) -> None:
    async def scenario(served: Any, session: aiohttp.ClientSession) -> None:
        v3 = served.url + "/v3"
        body = json.dumps({"create_request": {"key": b64("w"), "prev_kv": True}})
        async with session.post(v3 + "/watch", data=body) as resp:
            assert resp.status == 200 and resp.headers["Transfer-Encoding"] == "chunked"
            created = await read_chunk(resp)
            assert created["result"]["created"] is True and "watch_id" not in created["result"]
            # The request body has ended; the watch goes on.
            await post(session, v3 + "/kv/put", {"key": b64("w"), "value": b64("1")})
            await post(session, v3 + "/kv/put", {"key": b64("w"), "value": b64("2")})
            await post(session, v3 + "/kv/deleterange", {"key": b64("w")})
            events = [(await read_chunk(resp))["result"]["events"][0] for _ in range(3)]
            assert [e.get("type", "PUT") for e in events] == ["PUT", "PUT", "DELETE"]
            assert events[1]["prev_kv"]["value"] == b64("1") and "prev_kv" not in events[0]
        # The HTTP client went away: the gRPC stream behind it ends, as Canceled.
        stats = served.http.rpc_stats.methods
        watch = next(m for m in stats if m.service == "etcdserverpb.Watch")
        for _ in range(100):
            if watch.handled[1]:  # CANCELLED
                break
            await asyncio.sleep(0.05)
        assert (watch.started, watch.handled[1]) == (1, 1)

    run(serving, scenario)


def test_watch_requests_in_one_body_and_a_bad_first_value(serving: Any) -> None:
    async def scenario(served: Any, session: aiohttp.ClientSession) -> None:
        v3 = served.url + "/v3"
        await post(session, v3 + "/kv/put", {"key": b64("a"), "value": b64("1")})
        body = (
            json.dumps({"create_request": {"key": b64("a"), "start_revision": 1}})
            + "\n"
            + json.dumps({"create_request": {"key": b64("b")}})
        )
        async with session.post(v3 + "/watch", data=body) as resp:
            results = [(await read_chunk(resp))["result"] for _ in range(3)]
            # Watch 0's history may come before or after watch 1 is created.
            created = [r.get("watch_id", "0") for r in results if r.get("created")]
            history = [r for r in results if "events" in r]
            assert created == ["0", "1"] and len(history) == 1
            assert history[0]["events"][0]["kv"]["key"] == b64("a")
        status, error = await post(session, v3 + "/watch", b'{"create_request":{"key":"YQ=="},')
        assert (status, error["code"], error["message"]) == (500, 2, "unexpected EOF")

    run(serving, scenario)
