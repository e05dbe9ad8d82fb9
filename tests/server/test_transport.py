"""raftkv.server.transport: real gRPC links between members on 127.0.0.1.

Each test is a sync function running its own event loop (``asyncio.run``); every server and
transport is closed inside it, so a leaked channel or task shows up as a warning, which pytest
turns into an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import random
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc import aio

from raftkv.pb.peer import peer_pb2, peer_pb2_grpc
from raftkv.raft.messages import AppendEntries, Heartbeat, InstallSnapshot, Message
from raftkv.raft.types import ConfState, Entry, Snapshot, SnapshotMeta
from raftkv.server import transport as transport_mod
from raftkv.server.transport import PEER_SERVER_OPTIONS, GrpcTransport, PeerService

CLUSTER = 0xC1


def run(coro: Coroutine[Any, Any, None], timeout_s: float = 20.0) -> None:
    async def bounded() -> None:
        async with asyncio.timeout(timeout_s):
            await coro

    asyncio.run(bounded())


async def eventually(cond: Callable[[], bool], timeout_s: float = 5.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or cond}")
        await asyncio.sleep(0.01)


def _take(commands: list[bytes]) -> bytes | None:
    return None  # proposed: no answer


@dataclass
class Member:
    """One member's receiving side: a PeerService on a gRPC server, recording what it gets."""

    member_id: int
    snapshot_dir: Path
    forward_handler: Callable[[list[bytes]], bytes | None] = _take
    cluster_id: int = CLUSTER
    port: int = 0
    batches: list[list[Message]] = field(default_factory=list)
    count: int = 0
    service: PeerService | None = None
    server: aio.Server | None = None

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def messages(self) -> list[Message]:
        return [msg for batch in self.batches for msg in batch]

    def deliver(self, batch: Any) -> None:
        self.batches.append(list(batch))
        self.count += len(batch)

    async def start(self) -> None:
        if self.server is not None:  # already running
            return
        self.service = PeerService(
            member_id=self.member_id,
            cluster_id=self.cluster_id,
            deliver=self.deliver,
            snapshot_dir=self.snapshot_dir,
            forward_handler=self.forward_handler,
        )
        self.server = aio.server(options=PEER_SERVER_OPTIONS)
        peer_pb2_grpc.add_RaftServicer_to_server(self.service, self.server)
        port = self.server.add_insecure_port(f"127.0.0.1:{self.port}")
        assert port, "could not bind"
        self.port = port
        await self.server.start()

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop(None)
            self.server = None


@dataclass
class Reports:
    unreachable: list[int] = field(default_factory=list)
    snapshot_status: list[tuple[int, bool]] = field(default_factory=list)


def make_transport(
    member_id: int,
    peers: dict[int, str],
    reports: Reports,
    snapshot_source: Callable[[], Iterator[bytes]] = lambda: iter(()),
    **kwargs: Any,
) -> GrpcTransport:
    return GrpcTransport(
        member_id=member_id,
        cluster_id=kwargs.pop("cluster_id", CLUSTER),
        peers=peers,
        snapshot_source=snapshot_source,
        on_unreachable=reports.unreachable.append,
        on_snapshot_status=lambda peer, ok: reports.snapshot_status.append((peer, ok)),
        rng=random.Random(1),
        **kwargs,
    )


@contextlib.asynccontextmanager
async def running(*things: Member | GrpcTransport) -> AsyncIterator[None]:
    try:
        for thing in things:
            await thing.start()
        yield
    finally:
        for thing in reversed(things):
            if isinstance(thing, GrpcTransport):
                await thing.close()
            else:
                await thing.stop()


async def dead_port(tmp_path: Path) -> int:
    """A port that was just ours and is now closed."""
    probe = Member(99, tmp_path / "probe")
    await probe.start()
    await probe.stop()
    return probe.port


def hb(src: int, dst: int, n: int) -> Heartbeat:
    return Heartbeat(src=src, dst=dst, term=1, commit=n)


# ------------------------------------------------------------------------------------------------
# Message streams
# ------------------------------------------------------------------------------------------------


def test_three_members_exchange_thousands_of_messages_in_batches(tmp_path: Path) -> None:
    per_link = 3000

    async def main() -> None:
        members = {i: Member(i, tmp_path / f"m{i}") for i in (1, 2, 3)}
        for member in members.values():
            await member.start()
        reports = {i: Reports() for i in members}
        peers = {i: m.addr for i, m in members.items()}
        transports = {i: make_transport(i, peers, reports[i]) for i in members}
        async with running(*members.values(), *transports.values()):
            for n in range(per_link):
                for src, t in transports.items():
                    t.send([hb(src, dst, n) for dst in members if dst != src])
                if n % 100 == 0:
                    await asyncio.sleep(0)
            total = 2 * per_link
            await eventually(
                lambda: all(len(m.messages) == total for m in members.values()), 10, "delivery"
            )
        for member in members.values():
            by_src: dict[int, list[int]] = {}
            for msg in member.messages:
                assert isinstance(msg, Heartbeat)
                assert msg.dst == member.member_id
                by_src.setdefault(msg.src, []).append(msg.commit)
            # Every message arrived once, in the order sent on its link.
            assert by_src == {
                src: list(range(per_link)) for src in members if src != member.member_id
            }
            # Batching: far fewer deliveries (one per batch) than messages.
            assert len(member.batches) < len(member.messages) // 4, len(member.batches)
        for i, t in transports.items():
            assert t.messages_sent == 2 * per_link
            assert t.batches_sent < t.messages_sent // 4
            assert t.messages_dropped == 0
            assert reports[i].unreachable == []

    run(main())


def test_batches_respect_the_message_and_size_caps(tmp_path: Path) -> None:
    async def main() -> None:
        member = Member(2, tmp_path / "m2")
        reports = Reports()
        await member.start()
        t = make_transport(1, {2: member.addr}, reports, batch_max_msgs=10, batch_max_bytes=4000)
        # Queued before start: the first batches are cut by the caps, not by timing.
        t.send([hb(1, 2, n) for n in range(100)])
        entries = tuple(Entry(term=1, index=i, data=b"x" * 1000) for i in range(1, 4))
        t.send([AppendEntries(1, 2, 1, 0, 0, entries, 0) for _ in range(4)])
        async with running(member, t):
            await eventually(lambda: len(member.messages) == 104, what="delivery")
        assert [len(b) for b in member.batches] == [10] * 10 + [1] * 4

    run(main())


def test_dead_peer_does_not_block_a_live_one(tmp_path: Path) -> None:
    async def main() -> None:
        live = Member(2, tmp_path / "m2")
        await live.start()
        reports = Reports()
        t = make_transport(1, {2: live.addr, 3: f"127.0.0.1:{await dead_port(tmp_path)}"}, reports)
        async with running(live, t):
            for n in range(5000):
                t.send([hb(1, 2, n), hb(1, 3, n)])
                if n % 500 == 0:
                    await asyncio.sleep(0)
            await eventually(lambda: len(live.messages) == 5000, what="delivery to the live peer")
            await eventually(lambda: 3 in reports.unreachable, what="unreachable report")
            assert 2 not in reports.unreachable
            assert [m.commit for m in live.messages if isinstance(m, Heartbeat)] == list(
                range(5000)
            )
            # The dead peer's backlog was dropped (or lost in flight), not kept.
            await eventually(
                lambda: t.messages_sent + t.messages_dropped == 10_000, what="dropped backlog"
            )
            assert t.messages_dropped > 0

    run(main())


def test_full_queue_drops_and_reports_once_per_burst(tmp_path: Path) -> None:
    async def main() -> None:
        reports = Reports()
        # Not started: nothing drains the queue.
        t = make_transport(1, {2: "127.0.0.1:1"}, reports, max_queue_msgs=10)
        t.send([hb(1, 2, n) for n in range(100)])
        t.send([hb(1, 2, n) for n in range(100)])
        assert reports.unreachable == []  # never called from inside send()
        await asyncio.sleep(0)
        assert reports.unreachable == [2]
        assert t.messages_dropped == 190
        # Unknown members and this member itself are dropped quietly.
        t.send([hb(1, 7, 0), hb(1, 1, 0)])
        await asyncio.sleep(0)
        assert reports.unreachable == [2]
        await t.close()
        t.send([hb(1, 2, 0)])  # after close: ignored

    run(main())


def test_delivery_resumes_when_a_peer_comes_back(tmp_path: Path) -> None:
    async def main() -> None:
        port = await dead_port(tmp_path)
        member = Member(2, tmp_path / "m2", port=port)
        reports = Reports()
        t = make_transport(1, {2: member.addr}, reports)
        async with running(t):
            t.send([hb(1, 2, 0)])
            await eventually(lambda: reports.unreachable != [], what="unreachable report")
            await member.start()
            try:
                n = 1
                start = time.monotonic()
                while not member.messages:
                    t.send([hb(1, 2, n)])
                    n += 1
                    await asyncio.sleep(0.02)
                    assert time.monotonic() - start < 5, "delivery did not resume"
                # Once up, the link carries everything sent after it.
                t.send([hb(1, 2, k) for k in range(n, n + 100)])
                await eventually(lambda: member.messages[-1].commit == n + 99)  # type: ignore[union-attr]
                unreachable_before = len(reports.unreachable)
                # The peer goes away again (server stopped): it is reported again.
                await member.stop()
                t.send([hb(1, 2, 0)])
                await eventually(lambda: len(reports.unreachable) > unreachable_before)
            finally:
                await member.stop()

    run(main())


def test_cluster_id_mismatch_is_refused(tmp_path: Path) -> None:
    async def main() -> None:
        member = Member(2, tmp_path / "m2", cluster_id=CLUSTER + 1)
        reports = Reports()
        t = make_transport(1, {}, reports)
        async with running(member, t):
            t.set_peers({1: "ignored-self", 2: member.addr})
            t.send([hb(1, 2, 0)])
            await eventually(lambda: 2 in reports.unreachable, what="unreachable report")
            assert member.messages == []

    run(main())


def test_batch_for_another_member_is_ignored(tmp_path: Path) -> None:
    async def main() -> None:
        member = Member(2, tmp_path / "m2")
        reports = Reports()
        # Member 3's address points at member 2 (a stale address book).
        t = make_transport(1, {3: member.addr}, reports)
        async with running(member, t):
            t.send([hb(1, 3, n) for n in range(10)])
            await eventually(lambda: t.batches_sent > 0 and member.service is not None)
            await asyncio.sleep(0.2)
            assert member.messages == []

    run(main())


def test_set_peers_adds_and_removes_links(tmp_path: Path) -> None:
    async def main() -> None:
        m2, m3 = Member(2, tmp_path / "m2"), Member(3, tmp_path / "m3")
        reports = Reports()
        t = make_transport(1, {2: "placeholder:1"}, reports)
        async with running(m2, m3, t):
            t.set_peers({2: m2.addr, 3: m3.addr})  # 2's address changed; 3 is new
            t.send([hb(1, 2, 0), hb(1, 3, 0)])
            await eventually(lambda: len(m2.messages) == 1 and len(m3.messages) == 1)
            t.set_peers({2: m2.addr})  # 3 removed
            t.send([hb(1, 2, 1), hb(1, 3, 1)])
            await eventually(lambda: len(m2.messages) == 2)
            await asyncio.sleep(0.1)
            assert len(m3.messages) == 1
            assert not t.forward(3, 1, b"x")  # no link to a removed member: nothing sent

    run(main())


def test_malformed_messages_in_a_batch_are_dropped(tmp_path: Path) -> None:
    async def main() -> None:
        member = Member(2, tmp_path / "m2")
        async with running(member):
            good = peer_pb2.Message(src=1, dst=2, term=1, heartbeat=peer_pb2.Heartbeat(commit=5))
            batches = [
                peer_pb2.MessageBatch(
                    cluster_id=CLUSTER,
                    src=1,
                    dst=2,
                    seq=1,
                    messages=[peer_pb2.Message(src=1, dst=2, term=1), good],
                )
            ]
            async with aio.insecure_channel(member.addr) as channel:
                call = peer_pb2_grpc.RaftStub(channel).Stream(iter(batches))
                acks = [ack.seq async for ack in call]
            assert acks == [1]
            assert member.messages == [Heartbeat(src=1, dst=2, term=1, commit=5)]

    run(main())


def test_the_receiver_acknowledges_cumulatively_and_when_asked(tmp_path: Path) -> None:
    async def main() -> None:
        member = Member(2, tmp_path / "m2")
        async with running(member):
            batches = [
                peer_pb2.MessageBatch(
                    cluster_id=CLUSTER,
                    src=1,
                    dst=2,
                    seq=seq,
                    messages=[
                        peer_pb2.Message(
                            src=1, dst=2, term=1, heartbeat=peer_pb2.Heartbeat(commit=seq)
                        )
                    ],
                    ack_requested=seq == 11,
                )
                for seq in range(1, 21)
            ]
            async with aio.insecure_channel(member.addr) as channel:
                call = peer_pb2_grpc.RaftStub(channel).Stream(iter(batches))
                acks = [ack.seq async for ack in call]
            # The first batch, every ACK_EVERY-th, and the one that asked: not one ack per batch.
            every = transport_mod.ACK_EVERY
            assert acks == sorted({1, 11, *range(every, 21, every)})
            assert len(member.messages) == 20

    run(main())


@pytest.mark.parametrize("window", [1, 2, 3])
def test_a_small_window_still_makes_progress_with_coalesced_acks(
    tmp_path: Path, window: int
) -> None:
    async def main() -> None:
        member = Member(2, tmp_path / "m2")
        await member.start()
        reports = Reports()
        # One message per batch: many more batches than the receiver acknowledges unasked.
        t = make_transport(
            1, {2: member.addr}, reports, max_unacked_batches=window, batch_max_msgs=1
        )
        async with running(member, t):
            t.send([hb(1, 2, n) for n in range(300)])
            await eventually(lambda: len(member.messages) == 300, what="delivery")
        assert [m.commit for m in member.messages if isinstance(m, Heartbeat)] == list(range(300))
        assert reports.unreachable == []

    run(main())


# ------------------------------------------------------------------------------------------------
# Snapshots
# ------------------------------------------------------------------------------------------------

META = SnapshotMeta(index=0x1234, term=7, conf_state=ConfState(voters=(1, 2, 3)))


def snapshot_message(meta: SnapshotMeta = META) -> InstallSnapshot:
    return InstallSnapshot(src=1, dst=2, term=9, snapshot=Snapshot(meta=meta, data=b""))


def dump_chunks(seed: int = 0) -> list[bytes]:
    rnd = random.Random(seed)
    # Chunk sizes vary: tiny, empty, and one larger than the transport's chunk size.
    sizes = [1, 0, 100_000, 3 * 1024 * 1024 + 17, 65_536, 0, 1_000_000]
    return [rnd.randbytes(n) for n in sizes]


def test_snapshot_arrives_intact(tmp_path: Path) -> None:
    chunks = dump_chunks()
    threads: set[str] = set()

    def source() -> Iterator[bytes]:
        import threading

        for chunk in chunks:
            threads.add(threading.current_thread().name)
            yield chunk

    async def main() -> None:
        member = Member(2, tmp_path / "snaps")
        reports = Reports()
        t = make_transport(1, {2: ""}, reports, snapshot_source=source)
        async with running(member, t):
            t.set_peers({2: member.addr})
            # A second InstallSnapshot while one is in flight is not sent twice.
            t.send([snapshot_message(), hb(1, 2, 1), snapshot_message()])
            await eventually(lambda: reports.snapshot_status != [], 15, "snapshot status")
            assert reports.snapshot_status == [(2, True)]
            await eventually(lambda: len(member.messages) == 2)
        (snap,) = [m for m in member.messages if isinstance(m, InstallSnapshot)]
        path = Path(snap.snapshot.data.decode())
        assert path == tmp_path / "snaps" / f"{META.index:016x}-{META.term:016x}.snap"
        assert snap == InstallSnapshot(1, 2, 9, Snapshot(META, str(path).encode()))
        data = path.read_bytes()
        assert len(data) == sum(map(len, chunks))
        assert hashlib.sha256(data).digest() == hashlib.sha256(b"".join(chunks)).digest()
        assert os.listdir(tmp_path / "snaps") == [path.name]  # no temp file left
        assert len(threads) == 1 and "MainThread" not in threads

    run(main())


def test_corrupted_snapshot_checksum_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_next_chunk = transport_mod._next_chunk

    def corrupting_next_chunk(source: Iterator[bytes], hasher: Any) -> bytes | None:
        chunk = real_next_chunk(source, hasher)
        if chunk is not None:
            hasher.update(b"!")  # the sender's checksum no longer matches the data
        return chunk

    monkeypatch.setattr(transport_mod, "_next_chunk", corrupting_next_chunk)

    async def main() -> None:
        member = Member(2, tmp_path / "snaps")
        reports = Reports()
        t = make_transport(1, {}, reports, snapshot_source=lambda: iter(dump_chunks()))
        async with running(member, t):
            t.set_peers({2: member.addr})
            t.send([snapshot_message()])
            await eventually(lambda: reports.snapshot_status != [], 15, "snapshot status")
            assert reports.snapshot_status == [(2, False)]
        assert member.messages == []
        assert os.listdir(tmp_path / "snaps") == []  # the temp file was deleted

    run(main())


def test_snapshot_receiver_checks_offsets_and_checksum(tmp_path: Path) -> None:
    header = peer_pb2.SnapshotHeader(
        cluster_id=CLUSTER, src=1, dst=2, term=3, meta=peer_pb2.SnapshotMeta(index=5, term=2)
    )
    good = hashlib.sha256(b"abcdef").digest()
    cases: list[tuple[list[peer_pb2.SnapshotChunk], grpc.StatusCode]] = [
        # bad checksum
        (
            [
                peer_pb2.SnapshotChunk(header=header, data=b"abc"),
                peer_pb2.SnapshotChunk(offset=3, data=b"def", sha256=b"\0" * 32),
            ],
            grpc.StatusCode.DATA_LOSS,
        ),
        # a gap
        (
            [
                peer_pb2.SnapshotChunk(header=header, data=b"abc"),
                peer_pb2.SnapshotChunk(offset=4, data=b"ef", sha256=good),
            ],
            grpc.StatusCode.DATA_LOSS,
        ),
        # no checksum at the end
        ([peer_pb2.SnapshotChunk(header=header, data=b"abcdef")], grpc.StatusCode.DATA_LOSS),
        # header says another size
        (
            [
                peer_pb2.SnapshotChunk(
                    header=peer_pb2.SnapshotHeader(
                        cluster_id=CLUSTER, src=1, dst=2, meta=header.meta, total_bytes=7
                    ),
                    data=b"abcdef",
                    sha256=good,
                )
            ],
            grpc.StatusCode.DATA_LOSS,
        ),
        # no header
        ([peer_pb2.SnapshotChunk(data=b"abcdef", sha256=good)], grpc.StatusCode.INVALID_ARGUMENT),
        # wrong cluster
        (
            [peer_pb2.SnapshotChunk(header=peer_pb2.SnapshotHeader(cluster_id=1, src=1, dst=2))],
            grpc.StatusCode.FAILED_PRECONDITION,
        ),
    ]

    async def main() -> None:
        member = Member(2, tmp_path / "snaps")
        async with running(member), aio.insecure_channel(member.addr) as channel:
            stub = peer_pb2_grpc.RaftStub(channel)
            for chunks, code in cases:
                with pytest.raises(aio.AioRpcError) as info:
                    await stub.Snapshot(iter(chunks))
                assert info.value.code() == code, (chunks, info.value)
            assert member.messages == []
            assert list((tmp_path / "snaps").iterdir()) == []
            # And the good one, in one chunk with header, data and checksum.
            ack = await stub.Snapshot(
                iter([peer_pb2.SnapshotChunk(header=header, data=b"abcdef", sha256=good)])
            )
            assert ack.received_bytes == 6
            (snap,) = member.messages
            assert isinstance(snap, InstallSnapshot)
            assert Path(snap.snapshot.data.decode()).read_bytes() == b"abcdef"

    run(main())


def test_snapshot_source_failure_reports_false(tmp_path: Path) -> None:
    def broken_source() -> Iterator[bytes]:
        yield b"x" * 1000
        raise OSError("disk on fire")

    async def main() -> None:
        member = Member(2, tmp_path / "snaps")
        reports = Reports()
        dead = f"127.0.0.1:{await dead_port(tmp_path)}"
        t = make_transport(1, {2: "", 3: dead}, reports, snapshot_source=broken_source)
        async with running(member, t):
            t.set_peers({2: member.addr, 3: dead})
            t.send([snapshot_message()])
            t.send([InstallSnapshot(1, 3, 9, Snapshot(META))])  # to a peer that is down
            await eventually(lambda: len(reports.snapshot_status) == 2, 10)
            assert sorted(reports.snapshot_status) == [(2, False), (3, False)]
            # A later snapshot to the same peer is attempted again (and fails again).
            t.send([snapshot_message()])
            await eventually(lambda: len(reports.snapshot_status) == 3, 10)
        assert member.messages == []
        # No partial file left. The receiver makes the directory with its first chunk, and
        # whether a chunk got there before the source failed is a race.
        snaps = tmp_path / "snaps"
        assert (os.listdir(snaps) if snaps.exists() else []) == []

    run(main())


# ------------------------------------------------------------------------------------------------
# Forward
# ------------------------------------------------------------------------------------------------


def test_forwards_are_fire_and_forget_and_only_refusals_are_answered(tmp_path: Path) -> None:
    """Forwarded commands ride the message stream to the receiver's handler, in order, batched
    with whatever is queued; the receiver answers only to turn a batch down, and the sender
    reports exactly those ids."""
    received: list[bytes] = []

    def take(commands: list[bytes]) -> bytes | None:
        received.extend(commands)
        return None

    def refuse(commands: list[bytes]) -> bytes:
        return b"not leader"

    async def main() -> None:
        leader = Member(2, tmp_path / "m2", forward_handler=take)
        stale = Member(3, tmp_path / "m3", forward_handler=refuse)
        rejected: list[tuple[list[int], bytes | None]] = []
        reports = Reports()
        t = make_transport(
            1,
            {2: "", 3: ""},
            reports,
            on_forwards_rejected=lambda ids, why: rejected.append((list(ids), why)),
        )
        async with running(leader, stale, t):
            t.set_peers({2: leader.addr, 3: stale.addr})
            for i in range(50):
                assert t.forward(2, i + 1, bytes([i]))
            t.send([hb(1, 2, n) for n in range(5)])
            await eventually(lambda: len(received) == 50, what="forwards delivered")
            assert received == [bytes([i]) for i in range(50)]
            assert t.batches_sent < 50  # batched, not one stream message each
            assert t.forward(3, 100, b"x") and t.forward(3, 101, b"y")
            await eventually(lambda: sum(len(ids) for ids, _ in rejected) == 2)
            assert sorted(i for ids, _ in rejected for i in ids) == [100, 101]
            assert {why for _, why in rejected} == {b"not leader"}
            assert not t.forward(5, 1, b"x")  # an unknown member: nothing sent
        assert reports.unreachable == []

    run(main())


def test_forwards_on_a_broken_link_are_reported_lost_and_unsent_ones_rejected(
    tmp_path: Path,
) -> None:
    """A forward written to a stream that breaks before the receiver acknowledged it may or may
    not have been proposed: reported lost. One that never left (its member was removed while it
    waited) certainly was not: reported rejected with no reason, so the driver may resend it."""

    async def main() -> None:
        member = Member(3, tmp_path / "m3")
        rejected: list[tuple[list[int], bytes | None]] = []
        lost: list[int] = []
        reports = Reports()
        dead = f"127.0.0.1:{await dead_port(tmp_path)}"
        t = make_transport(
            1,
            {3: "", 4: dead},
            reports,
            on_forwards_rejected=lambda ids, why: rejected.append((list(ids), why)),
            on_forwards_lost=lost.extend,
        )
        async with running(member, t):
            t.set_peers({3: member.addr, 4: dead})
            assert t.forward(4, 7, b"x")
            await eventually(lambda: lost != [], what="the lost report")
            assert lost == [7]
            assert t.forward(3, 8, b"y")
            t.set_peers({4: dead})  # 3 removed before its sender took the forward
            await eventually(lambda: rejected != [], what="the unsent report")
            assert rejected == [([8], None)]
        assert 4 in reports.unreachable

    run(main())


# ------------------------------------------------------------------------------------------------
# Shutdown
# ------------------------------------------------------------------------------------------------


def test_close_is_clean_and_idempotent(tmp_path: Path) -> None:
    def endless_source() -> Iterator[bytes]:
        while True:
            time.sleep(0.001)
            yield b"y" * 4096

    async def main() -> None:
        member = Member(2, tmp_path / "snaps")
        reports = Reports()
        dead = f"127.0.0.1:{await dead_port(tmp_path)}"
        t = make_transport(1, {2: "", 3: dead}, reports, snapshot_source=endless_source)
        async with running(member, t):
            await t.start()  # idempotent
            t.set_peers({2: member.addr, 3: dead})
            t.send([hb(1, 2, n) for n in range(1000)] + [hb(1, 3, n) for n in range(1000)])
            t.send([snapshot_message()])
            assert t.forward(2, 1, b"q")
            await eventually(lambda: member.messages != [])
            await asyncio.sleep(0.1)  # the snapshot is streaming, the dead link backing off
            await asyncio.gather(t.close(), t.close())
            await t.close()
            reported = (list(reports.unreachable), list(reports.snapshot_status))
            assert reports.snapshot_status == []  # no callbacks once closing began
            await asyncio.sleep(0.1)
            assert (reports.unreachable, reports.snapshot_status) == reported
            with pytest.raises(RuntimeError):
                await t.start()
            assert not t.forward(2, 2, b"q")
        assert [n for n in asyncio.all_tasks() if n is not asyncio.current_task()] == []

    run(main())


# ------------------------------------------------------------------------------------------------
# Throughput (on demand: pytest -m bench -s tests/server/test_transport.py)
# ------------------------------------------------------------------------------------------------


@pytest.mark.bench
def test_bench_stream_throughput(tmp_path: Path) -> None:
    total = 200_000
    entries = (Entry(term=1, index=1, data=b"v" * 100),)

    async def main() -> None:
        member = Member(2, tmp_path / "m2")
        t = make_transport(1, {}, Reports(), max_queue_msgs=total)
        async with running(member, t):
            t.set_peers({2: member.addr})
            for label, make in (
                ("heartbeat", lambda n: hb(1, 2, n)),
                ("append(1x100B)", lambda n: AppendEntries(1, 2, 1, n, 1, entries, n)),
            ):
                before = member.count
                start = time.perf_counter()
                for n in range(0, total, 1000):
                    t.send([make(k) for k in range(n, n + 1000)])
                    await asyncio.sleep(0)
                await eventually(lambda: member.count == before + total, 120)  # noqa: B023
                elapsed = time.perf_counter() - start
                print(
                    f"\n{label}: {total} messages in {elapsed:.2f}s = {total / elapsed:,.0f} msg/s"
                    f" ({len(member.batches)} batches so far)"
                )

    run(main(), timeout_s=300)
