"""raftkv.client against in-process servers over a FakeNode (several servers may share one node,
standing in for members with the same history)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from raftkv.client import (
    AsyncClient,
    Client,
    ClientTimeout,
    EtcdError,
    OutcomeUnknown,
    Txn,
    Unavailable,
    WatchCompacted,
    create_revision,
    delete,
    get,
    put,
    value,
    version,
)
from raftkv.server.fake_node import FakeNode
from raftkv.server.grpc_server import add_client_services, client_server_options


class Servers:
    """grpc.aio servers for one FakeNode, on a loop in a background thread."""

    def __init__(self, n: int = 1, **opts: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.opts = opts
        self.node: FakeNode = self.run(self._node())
        self.servers: list[grpc.aio.Server | None] = []
        self.ports: list[int] = []
        for _ in range(n):
            self.start(None)

    async def _node(self) -> FakeNode:
        return FakeNode()

    def run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def start(self, index: int | None) -> None:
        async def go() -> tuple[grpc.aio.Server, int]:
            server = grpc.aio.server(options=client_server_options(1 << 20))
            add_client_services(server, self.node, **self.opts)
            port = server.add_insecure_port(
                f"127.0.0.1:{0 if index is None else self.ports[index]}"
            )
            await server.start()
            return server, port

        server, port = self.run(go())
        if index is None:
            self.servers.append(server)
            self.ports.append(port)
        else:
            self.servers[index] = server

    def stop(self, index: int) -> None:
        server = self.servers[index]
        assert server is not None
        self.run(server.stop(0))
        self.servers[index] = None

    @property
    def endpoints(self) -> list[str]:
        return [f"127.0.0.1:{p}" for p in self.ports]

    def close(self) -> None:
        for i, s in enumerate(self.servers):
            if s is not None:
                self.stop(i)

        async def cancel_rest() -> None:
            for t in asyncio.all_tasks():
                if t is not asyncio.current_task():
                    t.cancel()

        self.run(cancel_rest())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture
def servers() -> Iterator[Servers]:
    s = Servers(2, request_timeout_s=0.5)
    try:
        yield s
    finally:
        s.close()


def test_empty_key_with_prefix_or_from_key_means_every_key(servers: Servers) -> None:
    # As etcdctl's `get "" --prefix`: clientv3 sends key "\0", which the server accepts.
    with Client(servers.endpoints, timeout_s=3) as c:
        for k in ("a", "b/1", "\x01"):
            c.put(k, "v")
        assert [kv.key for kv in c.get("", prefix=True).kvs] == [b"\x01", b"a", b"b/1"]
        assert c.get("", from_key=True).count == 3
        assert c.get("\0", prefix=True).count == 0  # a real "\0" prefix still means itself
        assert c.delete("", prefix=True).deleted == 3
        assert c.get("", prefix=True).count == 0


def test_kv_api(servers: Servers) -> None:
    with Client(servers.endpoints, timeout_s=3) as c:
        r = c.put("a/1", "x")
        assert r.header.revision == 2 and r.prev_kv is None
        c.put("a/2", "y")
        c.put("a/3", "z")
        c.put("b", "w")
        assert c.get("a/1").value == b"x"
        assert c.get("nope").value is None
        g = c.get("a/", prefix=True)
        assert [kv.key for kv in g.kvs] == [b"a/1", b"a/2", b"a/3"] and g.count == 3
        g = c.get("a/", prefix=True, limit=2, sort_order="descend")
        assert [kv.key for kv in g.kvs] == [b"a/3", b"a/2"] and g.more
        g = c.get("a/", prefix=True, keys_only=True, serializable=True)
        assert all(kv.value == b"" for kv in g.kvs)
        assert c.get("a/", prefix=True, count_only=True).count == 3
        assert c.get("a/1", revision=1).value is None
        assert c.get("a", from_key=True).count == 4
        r = c.put("a/1", "x2", prev_kv=True)
        assert r.prev_kv is not None and r.prev_kv.value == b"x"
        d = c.delete("a/", prefix=True, prev_kv=True)
        assert d.deleted == 3 and len(d.prev_kvs) == 3
        t = c.txn(
            Txn()
            .when(version("b") > 0, value("b") == "w")
            .then(put("b", "w2"), get("b"), delete("zz"))
            .otherwise(get("b"))
        )
        assert t.succeeded and len(t.responses) == 3
        t = c.txn(Txn().when(create_revision("b") == 0).then(put("b", "no")).otherwise(get("b")))
        assert not t.succeeded and t.responses[0].kvs[0].value == b"w2"  # type: ignore[union-attr]
        rev = c.get("b").header.revision
        c.compact(rev)
        with pytest.raises(EtcdError) as ei:
            c.get("b", revision=1)
        assert "compacted" in ei.value.details
        members = c.member_list()
        assert members.members[0].name == "default"
        st = c.status()
        assert st.leader == servers.node.member_id and st.endpoint in servers.endpoints


def test_failover_reads_and_writes(servers: Servers) -> None:
    with Client(servers.endpoints, timeout_s=3, connect_timeout_s=0.3) as c:
        c.put("k", "1")
        servers.stop(0)
        for i in range(5):
            c.put("k", str(i))
            assert c.get("k").value == str(i).encode()
        servers.start(0)
        servers.stop(1)
        assert c.get("k").value == b"4"
        c.put("k", "after")


def test_write_outcome_unknown_is_never_retried(servers: Servers) -> None:
    with Client(servers.endpoints, timeout_s=2) as c:
        c.put("k", "1")
        servers.node.stalled = True  # proposals hang: the server answers "request timed out"
        n = len(servers.node.proposals)
        with pytest.raises(OutcomeUnknown):
            c.put("k", "2")
        # reads are retried and time out as reads
        with pytest.raises(ClientTimeout):
            c.get("k", timeout_s=1)
        servers.node.stalled = False
        assert len(servers.node.proposals) == n


def test_no_leader_is_definite_and_retried(servers: Servers) -> None:
    with Client(servers.endpoints[:1], timeout_s=1) as c:
        servers.node.leader = 0
        with pytest.raises(Unavailable) as ei:
            c.put("k", "1")
        assert not isinstance(ei.value, OutcomeUnknown)
        servers.node.leader = servers.node.member_id
        c.put("k", "1")


def test_bad_input_is_raised_not_retried(servers: Servers) -> None:
    with Client(servers.endpoints) as c:
        with pytest.raises(EtcdError) as ei:
            c.put("", "x")
        assert ei.value.details == "etcdserver: key is not provided"


def test_sync_watch_resumes_on_other_member(servers: Servers) -> None:
    with Client(servers.endpoints, timeout_s=3, connect_timeout_s=0.3) as c:
        w = c.watch("w/", prefix=True, start_revision=1)
        c.put("w/0", "0")
        first = next(w)
        assert [e.kv.key for e in first.events] == [b"w/0"]
        ep = w.aio.endpoint
        assert ep is not None
        idx = servers.endpoints.index(ep)
        servers.stop(idx)
        for i in range(1, 20):
            c.put(f"w/{i}", str(i))
        got = [e.kv.mod_revision for e in first.events]
        while len(got) < 20:
            got.extend(e.kv.mod_revision for e in next(w).events)
        assert got == list(range(2, 22))
        assert w.resumes >= 1 and w.aio.endpoint != ep
        w.cancel()


def test_async_watch_compacted_and_progress(servers: Servers) -> None:
    async def main() -> None:
        async with AsyncClient(servers.endpoints, timeout_s=3) as c:
            for i in range(5):
                await c.put("c", str(i))
            await c.compact(5)
            with pytest.raises(WatchCompacted) as ei:
                async for _ in c.watch("c", start_revision=2):
                    pass
            assert ei.value.compact_revision == 5
            w = c.watch("c")
            it = w.__aiter__()
            nxt = asyncio.ensure_future(it.__anext__())
            await w.wait_created()
            await w.request_progress()
            resp = await asyncio.wait_for(nxt, 3)
            assert resp.is_progress_notify and resp.revision == 6
            await c.put("c", "x")
            resp = await asyncio.wait_for(it.__anext__(), 3)
            assert resp.events[0].kv.value == b"x"
            await w.cancel()

    asyncio.run(main())
