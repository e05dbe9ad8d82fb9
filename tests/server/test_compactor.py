"""The automatic compactor (etcd 3.4's --auto-compaction-*) over a FakeNode, on a fake clock."""

from __future__ import annotations

import asyncio

import pytest

from raftkv.errors import ConfigError
from raftkv.kv.types import PutRequest
from raftkv.server.compactor import AutoCompaction, Compactor, parse_auto_compaction
from raftkv.server.config import ServerConfig
from raftkv.server.fake_node import FakeNode


def test_retention_parses_as_etcd() -> None:
    assert parse_auto_compaction("periodic", "0") == AutoCompaction("periodic", 0)
    assert not parse_auto_compaction("periodic", "0").enabled
    assert parse_auto_compaction("periodic", "1").retention == 3600  # a bare number: hours
    assert parse_auto_compaction("periodic", "30m").retention == 1800
    assert parse_auto_compaction("periodic", "1h30m").retention == 5400
    assert parse_auto_compaction("periodic", "2.5s").retention == 2.5
    assert parse_auto_compaction("revision", "1000").retention == 1000
    with pytest.raises(ConfigError, match="number of revisions"):
        parse_auto_compaction("revision", "1h")
    with pytest.raises(ConfigError, match="neither a number of hours nor a duration"):
        parse_auto_compaction("periodic", "soon")
    with pytest.raises(ConfigError, match="neither 'periodic' nor 'revision'"):
        parse_auto_compaction("daily", "1")
    with pytest.raises(ConfigError, match="auto-compaction-mode"):
        ServerConfig(auto_compaction_mode="never")
    assert ServerConfig().auto_compaction == AutoCompaction("periodic", 0)


class Clock:
    """A fake clock: every sleep advances it, and runs one write on the node."""

    def __init__(self, node: FakeNode) -> None:
        self.now = 0.0
        self.node = node
        self.samples: list[tuple[float, int]] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await self.node.propose(PutRequest(b"k", b"v"), timeout_s=1)  # one write per tick
        self.samples.append((self.now, self.node.store.current_revision()))
        await asyncio.sleep(0)


async def _run_for(compactor: Compactor, clock: Clock, until: float) -> None:
    task = asyncio.create_task(compactor.run())
    while clock.now < until:
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_periodic_waits_one_retention_then_compacts_every_interval() -> None:
    async def main() -> None:
        node = FakeNode()
        clock = Clock(node)
        policy = parse_auto_compaction("periodic", "10s")
        compactor = Compactor(node, policy, timeout_s=1, clock=clock, sleep=clock.sleep)
        await _run_for(compactor, clock, 9.5)
        assert node.store.compacted_revision() == 0  # nothing before one whole retention
        await _run_for(compactor, clock, 31)
        # Samples every second (a tenth of the interval); the compaction keeps ~10 s of history.
        compacted = node.store.compacted_revision()
        assert compacted > 0 and node.store.current_revision() - compacted <= 12
        assert compactor.compactions >= 2

    asyncio.run(main())


def test_revision_mode_keeps_the_last_n_revisions_and_only_on_the_leader() -> None:
    async def main() -> None:
        node = FakeNode()
        clock = Clock(node)
        policy = parse_auto_compaction("revision", "5")
        compactor = Compactor(
            node, policy, timeout_s=1, clock=clock, sleep=clock.sleep, revision_check_interval_s=1
        )
        node.leader = node.member_id + 1  # a follower: paused
        await _run_for(compactor, clock, 8)
        assert node.store.compacted_revision() == 0
        node.leader = node.member_id
        await _run_for(compactor, clock, 12)
        # The last check saw one write fewer than there are now (the fake sleep writes).
        assert node.store.current_revision() - node.store.compacted_revision() in (5, 6)

    asyncio.run(main())
