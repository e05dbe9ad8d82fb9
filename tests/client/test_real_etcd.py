"""raftkv.client's whole API against a real etcd (Debian's etcd-server 3.4)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from raftkv_cli.localcluster import ETCD, local_members, member_argv, spawn, stop, wait_ready

from raftkv.client import (
    AsyncClient,
    Client,
    EtcdError,
    Txn,
    WatchCompacted,
    get,
    put,
    value,
    version,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if not os.path.exists(ETCD):
        pytest.skip("etcd is not installed")
    d: Path = tmp_path_factory.mktemp("etcd")
    members = local_members(["e1"])
    argv = member_argv([ETCD], members[0], members, data_root=d, token="real-etcd")
    proc = spawn(argv, log_path=d / "etcd.log")
    try:
        wait_ready(members, [proc], timeout_s=20, describe=lambda m: f"etcd (see {d}/etcd.log)")
        yield members[0].endpoint
    finally:
        stop([proc])


def test_kv_txn_compact_members_status(etcd: str) -> None:
    with Client([etcd], timeout_s=5) as c:
        base = c.put("r/a", "1").header.revision
        c.put("r/b", "2")
        g = c.get("r/", prefix=True, sort_order="descend")
        assert [kv.key for kv in g.kvs] == [b"r/b", b"r/a"] and g.count == 2
        assert c.get("r/", prefix=True, count_only=True).count == 2
        assert c.get("r/", prefix=True, keys_only=True, limit=1).more
        assert c.get("r/a", serializable=True).value == b"1"
        t = c.txn(
            Txn().when(value("r/a") == "1", version("r/b") > 0).then(put("r/a", "2"), get("r/a"))
        )
        assert t.succeeded and t.responses[1].kvs[0].value == b"2"  # type: ignore[union-attr]
        t = c.txn(Txn().when(value("r/a") == "1").then(put("r/a", "x")).otherwise(get("r/b")))
        assert not t.succeeded
        d = c.delete("r/", prefix=True, prev_kv=True)
        assert d.deleted == 2
        c.compact(base + 1)
        with pytest.raises(EtcdError) as ei:
            c.get("r/a", revision=base)
        assert "compacted" in ei.value.details
        with pytest.raises(WatchCompacted):
            for _ in c.watch("r/", prefix=True, start_revision=base):
                pass
        assert c.member_list().members[0].name == "e1"
        st = c.status()
        assert st.version.startswith("3.") and st.leader == st.header.member_id


def test_watch_sync_and_async(etcd: str) -> None:
    import asyncio

    with Client([etcd], timeout_s=5) as c:
        start = c.put("wx/0", "0").header.revision
        w = c.watch("wx/", prefix=True, start_revision=start, prev_kv=True)
        for i in range(1, 5):
            c.put("wx/0", str(i))
        revs: list[int] = []
        while len(revs) < 5:
            r = next(w)
            revs.extend(e.revision for e in r.events)
        assert revs == list(range(start, start + 5))
        w.cancel()

    async def main() -> None:
        async with AsyncClient([etcd]) as ac:
            aw = ac.watch("wy", start_revision=0)
            it = aw.__aiter__()
            nxt = asyncio.ensure_future(it.__anext__())
            await aw.wait_created()
            rev = (await ac.put("wy", "v")).header.revision
            resp = await asyncio.wait_for(nxt, 5)
            assert resp.events[0].revision == rev
            await aw.cancel()

    asyncio.run(main())
