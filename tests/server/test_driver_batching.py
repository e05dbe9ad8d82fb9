"""NodeDriver batches the hops that gRPC would otherwise make one per request, forwards writes
as etcd does (fire and forget), and its Ready loop never waits on the state machine.

gRPC hands the servicer each request in its own event-loop iteration, so "batch what arrives in
the same iteration" batches nothing. The driver instead keeps a bounded number of ReadIndex
rounds in flight; whatever arrives meanwhile shares the next one. A forwarded write gets no
answer from the leader: the follower finds it among the entries of its own log. These tests
drive a real NodeDriver (LMDB log and state machine) as a follower, behind a fake transport.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

import pytest
from raftkv_storage.backend import LmdbBackend
from raftkv_storage.log import LmdbRaftLog

from raftkv.driver import ATTRIBUTES_MAGIC
from raftkv.kv.backend import MemoryBackend
from raftkv.kv.codec import Command, encode_command
from raftkv.kv.state_machine import KVStateMachine
from raftkv.kv.types import DeleteRangeRequest, PutRequest, RangeRequest
from raftkv.raft.messages import (
    AppendEntries,
    AppendResponse,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    Message,
    ReadIndexRequest,
)
from raftkv.raft.types import ConfState, Entry, Snapshot, SnapshotMeta
from raftkv.server.api import Member
from raftkv.server.driver import DriverConfig, NodeDriver, bootstrap_log
from raftkv.server.errors import LeaderChangedError, RequestTimeoutError
from raftkv.server.peer.handler import PeerHandler, Refusal
from raftkv.server.peer.snapshot_receiver import ReceivedSnapshots, snapshot_path

ME, LEADER, OTHER = 1, 2, 3


class HeldTransport:
    """Records what the driver sends and forwards; nothing ever answers a forward."""

    def __init__(self) -> None:
        self.sent: list[Message] = []
        self.forwards: list[tuple[int, int, bytes]] = []
        """(to, forward id, command)"""

    def send(self, messages: Sequence[Message]) -> None:
        self.sent.extend(messages)

    def forward(self, to: int, forward_id: int, command: bytes) -> bool:
        self.forwards.append((to, forward_id, command))
        return True

    def client_forwards(self) -> list[tuple[int, int, bytes]]:
        """Forwards of client writes (the member's attributes are forwarded too)."""
        return [f for f in self.forwards if not f[2].startswith(ATTRIBUTES_MAGIC)]

    def read_rounds(self) -> int:
        return sum(isinstance(m, ReadIndexRequest) for m in self.sent)


def run(coro: Coroutine[Any, Any, None]) -> None:
    async def bounded() -> None:
        async with asyncio.timeout(20):
            await coro

    asyncio.run(bounded())


async def follower(
    tmp_path: Path, received_snapshots: ReceivedSnapshots | None = None
) -> tuple[NodeDriver, HeldTransport]:
    raft_log = LmdbRaftLog(tmp_path / "raft")
    bootstrap_log(raft_log, [ME, LEADER, OTHER])
    members = [
        Member(id=m, name=f"m{m}", peer_urls=(), client_urls=()) for m in (ME, LEADER, OTHER)
    ]
    driver = NodeDriver(
        DriverConfig(member_id=ME, cluster_id=0xC1, tick_interval_ms=1000),
        raft_log,
        KVStateMachine(LmdbBackend(tmp_path / "kv")),
        members,
        db_path=tmp_path / "kv",
        received_snapshots=received_snapshots,
    )
    transport = HeldTransport()
    driver.attach_transport(transport)
    await driver.start()
    driver.deliver([Heartbeat(src=LEADER, dst=ME, term=2, commit=1)])
    for _ in range(200):
        if driver.leader == LEADER:
            break
        await asyncio.sleep(0.005)
    assert driver.leader == LEADER
    return driver, transport


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def _forwarded_put(
    driver: NodeDriver, transport: HeldTransport, key: bytes, timeout_s: float = 5
) -> tuple[asyncio.Future[Any], int, bytes]:
    """Start a put on the follower; returns (its call, forward id, command) once forwarded."""
    before = len(transport.client_forwards())
    call = asyncio.ensure_future(
        driver.propose(PutRequest(key=key, value=b"v"), timeout_s=timeout_s)
    )
    await _wait_until(lambda: len(transport.client_forwards()) > before)
    to, forward_id, command = transport.client_forwards()[-1]
    assert to == LEADER
    return call, forward_id, command


def _waiting_client_forwards(driver: NodeDriver) -> list[bytes]:
    """Commands of client writes the driver still waits to see in its log (by either index)."""
    commands = driver._core._forwarder.commands()
    return [c for c in commands if not c.startswith(ATTRIBUTES_MAGIC)]


def _append(driver: NodeDriver, src: int, term: int, data: bytes, commit: int) -> int:
    """Deliver an append of one entry after the follower's last; returns its index."""
    raft_log = driver._log
    last = raft_log.last_index()
    entry = Entry(term=term, index=last + 1, data=data)
    driver.deliver([AppendEntries(src, ME, term, last, raft_log.term(last), (entry,), commit)])
    return entry.index


def test_a_forwarded_write_is_answered_from_the_followers_own_log(tmp_path: Path) -> None:
    """The leader never answers an accepted forward: the follower finds the command among the
    entries it is sent, and answers the client with its own apply's result."""

    async def body() -> None:
        driver, transport = await follower(tmp_path)
        call, _, command = await _forwarded_put(driver, transport, b"k")
        await settle()
        assert not call.done()
        index = _append(driver, LEADER, 2, command, commit=0)
        await _wait_until(lambda: driver._log.last_index() == index)
        assert not call.done()  # in the log, not committed yet
        driver.deliver([Heartbeat(src=LEADER, dst=ME, term=2, commit=index)])
        response = await asyncio.wait_for(call, 5)
        assert response.revision == driver.store.current_revision() > 1
        assert _waiting_client_forwards(driver) == []
        await driver.stop(transfer_leadership=False)

    run(body())


def test_a_forwarded_write_replaced_in_the_log_fails_with_leader_changed(tmp_path: Path) -> None:
    """The leader appended the write, lost its leadership, and the next leader put another entry
    at that index: the write will never apply, and the client is told so (not left to time out)."""

    async def body() -> None:
        driver, transport = await follower(tmp_path)
        call, _, command = await _forwarded_put(driver, transport, b"k")
        index = _append(driver, LEADER, 2, command, commit=0)
        await _wait_until(lambda: driver._log.last_index() == index)
        raft_log = driver._log
        replacement = Entry(term=3, index=index, data=b"")
        driver.deliver(
            [
                AppendEntries(
                    OTHER, ME, 3, index - 1, raft_log.term(index - 1), (replacement,), index
                )
            ]
        )
        with pytest.raises(LeaderChangedError):
            await asyncio.wait_for(call, 5)
        await driver.stop(transfer_leadership=False)

    run(body())


@pytest.mark.parametrize("refusal", [Refusal.NOT_LEADER, None])
def test_a_forward_certainly_not_proposed_is_sent_again(
    tmp_path: Path, refusal: Refusal | None
) -> None:
    """Refused by a member that is not the leader, or never sent: nothing was proposed, so the
    write goes again (to the leader of the moment) and succeeds."""

    async def body() -> None:
        driver, transport = await follower(tmp_path)
        call, forward_id, command = await _forwarded_put(driver, transport, b"k")
        driver.forwards_rejected([forward_id], refusal)
        await _wait_until(lambda: len(transport.client_forwards()) == 2)
        to, again_id, again = transport.client_forwards()[-1]
        assert (to, again) == (LEADER, command) and again_id != forward_id
        index = _append(driver, LEADER, 2, command, commit=0)
        await _wait_until(lambda: driver._log.last_index() == index)
        driver.deliver([Heartbeat(src=LEADER, dst=ME, term=2, commit=index)])
        await asyncio.wait_for(call, 5)
        await driver.stop(transfer_leadership=False)

    run(body())


def test_a_forward_refused_during_a_transfer_or_lost_with_its_link_fails_at_once(
    tmp_path: Path,
) -> None:
    """A leader handing over its leadership takes no proposals: etcd's "leader changed". A link
    that broke after the send leaves the outcome unknown: "request timed out", without waiting
    for the deadline, and the write is not sent again (it may have been proposed)."""

    async def body() -> None:
        driver, transport = await follower(tmp_path)
        call, forward_id, _ = await _forwarded_put(driver, transport, b"a")
        driver.forwards_rejected([forward_id], Refusal.LEADER_CHANGED)
        with pytest.raises(LeaderChangedError):
            await asyncio.wait_for(call, 1)
        call, forward_id, _ = await _forwarded_put(driver, transport, b"b")
        sent = len(transport.client_forwards())
        driver.forwards_lost([forward_id])
        with pytest.raises(RequestTimeoutError):
            await asyncio.wait_for(call, 1)
        await settle()
        assert len(transport.client_forwards()) == sent
        assert _waiting_client_forwards(driver) == []
        await driver.stop(transfer_leadership=False)

    run(body())


def test_a_received_snapshot_is_restored_from_the_file_its_meta_names(tmp_path: Path) -> None:
    """The transport hands over an InstallSnapshot with no data and leaves the image in the file
    named by the snapshot's index and term; the driver (the transport's PeerHandler) finds it
    by the snapshot's meta, restores it, and deletes it."""

    async def body() -> None:
        image_sm = KVStateMachine(MemoryBackend())
        put = encode_command(Command(1, PutRequest(key=b"from", value=b"leader")))
        image_sm.apply([Entry(term=2, index=50, data=put)])
        snap_dir = tmp_path / "snap"
        snap_dir.mkdir()
        image = snapshot_path(snap_dir, 50, 2)
        image.write_bytes(b"".join(image_sm.snapshot_chunks()))
        driver, _ = await follower(tmp_path, ReceivedSnapshots(snap_dir))
        handler: PeerHandler = driver
        meta = SnapshotMeta(index=50, term=2, conf_state=ConfState(voters=(ME, LEADER, OTHER)))
        handler.deliver([InstallSnapshot(LEADER, ME, 2, Snapshot(meta, b""))])
        await _wait_until(lambda: driver._log.snapshot().meta.index == 50)
        assert driver._sm.applied_index() == 50
        kv = driver._sm.store.get(b"from")
        assert kv is not None and kv.value == b"leader"
        assert not image.exists()
        await driver.stop(transfer_leadership=False)

    run(body())


def test_a_forward_never_seen_in_the_log_times_out_and_is_forgotten(tmp_path: Path) -> None:
    async def body() -> None:
        driver, transport = await follower(tmp_path)
        call, _, _ = await _forwarded_put(driver, transport, b"k", timeout_s=0.3)
        with pytest.raises(RequestTimeoutError):
            await asyncio.wait_for(call, 5)
        assert _waiting_client_forwards(driver) == []
        await driver.stop(transfer_leadership=False)

    run(body())


def test_forwards_reaching_a_member_that_is_not_the_leader_are_turned_down(
    tmp_path: Path,
) -> None:
    async def body() -> None:
        driver, _ = await follower(tmp_path)
        last = driver._log.last_index()
        assert driver.handle_forwards([b"x", b"y"]) is Refusal.NOT_LEADER
        await settle()
        assert driver._log.last_index() == last  # nothing proposed
        await driver.stop(transfer_leadership=False)

    run(body())


def test_concurrent_linearizable_reads_share_read_index_rounds(tmp_path: Path) -> None:
    async def body() -> None:
        driver, transport = await follower(tmp_path)

        async def read() -> None:
            await driver.linearizable_barrier(timeout_s=0.3)

        calls = []
        for _ in range(40):
            calls.append(asyncio.ensure_future(read()))
            await settle()
        # No leader answers: at most the cap of rounds went out, not one per read.
        assert transport.read_rounds() == driver._core.config.max_read_rounds_in_flight
        results = await asyncio.gather(*calls, return_exceptions=True)
        assert all(isinstance(r, RequestTimeoutError) for r in results), results
        await driver.stop(transfer_leadership=False)

    run(body())


def test_a_long_apply_does_not_hold_up_the_ready_loop(tmp_path: Path) -> None:
    """Deleting a big prefix applies for seconds. Heartbeats must still be answered meanwhile, or
    the leader loses its quorum and steps down (it did, before applies left the Ready loop)."""

    async def body() -> None:
        driver, transport = await follower(tmp_path)
        raft_log = driver._log
        last = raft_log.last_index()
        entry = Entry(term=2, index=last + 1)
        applying, release = threading.Event(), threading.Event()
        apply = driver._sm.apply

        def slow_apply(entries: Sequence[Any]) -> Any:
            if any(e.index == entry.index for e in entries):
                applying.set()
                release.wait(10)
            return apply(entries)

        driver._sm.apply = slow_apply  # type: ignore[method-assign]
        try:
            driver.deliver(
                [AppendEntries(LEADER, ME, 2, last, raft_log.term(last), (entry,), entry.index)]
            )
            for _ in range(400):
                if applying.is_set():
                    break
                await asyncio.sleep(0.005)
            assert applying.is_set()

            def answered() -> int:
                return sum(isinstance(m, HeartbeatResponse) for m in transport.sent)

            before = answered()
            driver.deliver([Heartbeat(src=LEADER, dst=ME, term=2, commit=entry.index)])
            for _ in range(100):
                if answered() > before:
                    break
                await asyncio.sleep(0.01)
            assert answered() > before
            assert driver.status().raft_applied_index < entry.index  # still applying
        finally:
            release.set()
        for _ in range(200):
            if driver.status().raft_applied_index >= entry.index:
                break
            await asyncio.sleep(0.01)
        assert driver.status().raft_applied_index >= entry.index
        await driver.stop(transfer_leadership=False)

    run(body())


def test_a_commit_only_ready_is_not_written_on_its_own(tmp_path: Path) -> None:
    """Entries and votes are fsynced before anything depends on them; a commit index alone is
    not (a leader repeats it and applying is idempotent), so it costs no LMDB commit and fsync.
    A graceful stop still writes the newest one."""

    async def body() -> None:
        driver, transport = await follower(tmp_path)
        raft_log = driver._log
        assert isinstance(raft_log, LmdbRaftLog)
        saves: list[tuple[Any, int]] = []
        save = raft_log.save

        def counting_save(hard_state: Any, entries: Sequence[Entry], *args: Any, **kw: Any) -> None:
            saves.append((hard_state, len(entries)))
            save(hard_state, entries, *args, **kw)

        raft_log.save = counting_save  # type: ignore[method-assign]
        last = raft_log.last_index()
        entry = Entry(term=2, index=last + 1)
        driver.deliver([AppendEntries(LEADER, ME, 2, last, raft_log.term(last), (entry,), 1)])
        for _ in range(400):
            if raft_log.last_index() == entry.index and transport.sent:
                break
            await asyncio.sleep(0.005)
        assert raft_log.last_index() == entry.index
        assert [n for _, n in saves] == [1]

        driver.deliver([Heartbeat(src=LEADER, dst=ME, term=2, commit=entry.index)])
        for _ in range(400):
            if driver.status().raft_applied_index >= entry.index:
                break
            await asyncio.sleep(0.005)
        assert driver.status().raft_applied_index >= entry.index
        await settle()
        assert [n for _, n in saves] == [1], "the commit-only Ready was written"
        assert raft_log.hard_state.commit < entry.index

        await driver.stop(transfer_leadership=False)
        assert raft_log.hard_state.commit == entry.index
        assert raft_log.hard_state.term == 2

    run(body())


def _command(index: int, request: Any) -> Entry:
    return Entry(term=2, index=index, data=encode_command(Command(index, request)))


def _hold_apply_of(driver: NodeDriver, index: int) -> tuple[threading.Event, threading.Event]:
    """Make the batch holding entry ``index`` block in the state machine until released.
    Returns (applying, release)."""
    applying, release = threading.Event(), threading.Event()
    apply = driver._sm.apply

    def slow_apply(entries: Sequence[Any]) -> Any:
        if any(e.index == index for e in entries):
            applying.set()
            release.wait(10)
        return apply(entries)

    driver._sm.apply = slow_apply  # type: ignore[method-assign]
    return applying, release


def _acked(transport: HeldTransport, since: int, index: int) -> bool:
    """Whether an AppendResponse for ``index`` or later went out after ``transport.sent[since]``."""
    return any(isinstance(m, AppendResponse) and m.index >= index for m in transport.sent[since:])


async def _wait_until(done: Callable[[], bool], tries: int = 200) -> None:
    for _ in range(tries):
        if done():
            return
        await asyncio.sleep(0.01)


def test_small_put_batches_apply_on_the_disk_thread_and_the_rest_in_order_on_the_apply_thread(
    tmp_path: Path,
) -> None:
    """Fewer threads trade the GIL when small put batches ride on the disk thread; anything
    that may run long stays on the apply thread, and order is kept across the two."""

    async def body() -> None:
        driver, _transport = await follower(tmp_path)
        raft_log = driver._log
        ran: list[tuple[int, str]] = []
        apply = driver._sm.apply
        gate = threading.Event()

        def recording_apply(entries: Sequence[Any]) -> Any:
            if any(e.index == heavy.index for e in entries):
                gate.wait(10)  # the delete runs long; the puts behind it must wait
            ran.extend((e.index, threading.current_thread().name) for e in entries)
            return apply(entries)

        driver._sm.apply = recording_apply  # type: ignore[method-assign]
        last = raft_log.last_index()
        put = _command(last + 1, PutRequest(b"a", b"1"))
        heavy = _command(last + 2, DeleteRangeRequest(b"a", b"z"))
        after = _command(last + 3, PutRequest(b"b", b"2"))

        async def commit(entry: Entry) -> None:
            prev = entry.index - 1
            msg = AppendEntries(LEADER, ME, 2, prev, raft_log.term(prev), (entry,), entry.index)
            driver.deliver([msg])
            for _ in range(400):
                if raft_log.last_index() >= entry.index:
                    return
                await asyncio.sleep(0.005)
            raise AssertionError(f"entry {entry.index} was not persisted")

        await commit(put)
        for _ in range(400):
            if any(i == put.index for i, _ in ran):
                break
            await asyncio.sleep(0.005)
        await commit(heavy)
        await commit(after)  # persisted while the delete is still applying
        await settle()
        assert [i for i, _ in ran if i >= put.index] == [put.index]
        gate.set()
        for _ in range(400):
            if driver.status().raft_applied_index >= after.index:
                break
            await asyncio.sleep(0.005)
        mine = [(i, name) for i, name in ran if i >= put.index]
        assert mine == [
            (put.index, "raftkv-disk"),
            (heavy.index, "raftkv-apply"),
            (after.index, "raftkv-apply"),  # the apply thread was busy: it goes behind
        ]
        assert driver.store.range(RangeRequest(b"a", b"z")).kvs[0].key == b"b"
        await driver.stop(transfer_leadership=False)

    run(body())


def test_a_long_delete_does_not_hold_up_persisting_and_acking_new_entries(tmp_path: Path) -> None:
    """The Ready loop waits for each persist; were the delete applying on the disk thread, the
    next entry's persist, its ack, and every later Ready (heartbeat answers included) would wait
    for it, and the leader would lose its quorum."""

    async def body() -> None:
        driver, transport = await follower(tmp_path)
        raft_log = driver._log
        last = raft_log.last_index()
        heavy = _command(last + 1, DeleteRangeRequest(b"", b"\0"))
        applying, release = _hold_apply_of(driver, heavy.index)
        try:
            term = raft_log.term(last)
            driver.deliver([AppendEntries(LEADER, ME, 2, last, term, (heavy,), heavy.index)])
            await _wait_until(applying.is_set)
            assert applying.is_set()
            nxt = _command(heavy.index + 1, PutRequest(b"k", b"v"))
            since = len(transport.sent)
            driver.deliver([AppendEntries(LEADER, ME, 2, heavy.index, 2, (nxt,), heavy.index)])
            await _wait_until(lambda: _acked(transport, since, nxt.index))
            assert raft_log.last_index() == nxt.index
            assert _acked(transport, since, nxt.index)
            assert driver.status().raft_applied_index < heavy.index  # still deleting
        finally:
            release.set()
        await driver.stop(transfer_leadership=False)

    run(body())


def test_a_persist_does_not_wait_for_applying_entries_that_were_already_stable(
    tmp_path: Path,
) -> None:
    """A Ready that brings a new entry and commits an older one: the older one is durable
    already, so applying it (on the disk thread, being a small put) must not delay persisting
    and acknowledging the new one."""

    async def body() -> None:
        driver, transport = await follower(tmp_path)
        raft_log = driver._log
        last = raft_log.last_index()
        older = _command(last + 1, PutRequest(b"a", b"1"))
        newer = _command(last + 2, PutRequest(b"b", b"2"))
        applying, release = _hold_apply_of(driver, older.index)
        try:
            term = raft_log.term(last)
            driver.deliver([AppendEntries(LEADER, ME, 2, last, term, (older,), last)])
            await _wait_until(lambda: raft_log.last_index() == older.index)
            assert raft_log.last_index() == older.index and not applying.is_set()
            since = len(transport.sent)
            # One message: the newer entry, and a commit index that covers the older one.
            driver.deliver([AppendEntries(LEADER, ME, 2, older.index, 2, (newer,), older.index)])
            await _wait_until(lambda: _acked(transport, since, newer.index))
            assert applying.is_set(), "the older entry is being applied"
            assert raft_log.last_index() == newer.index
            assert _acked(transport, since, newer.index), (
                "the newer entry's ack waited for the older one's apply"
            )
        finally:
            release.set()
        await driver.stop(transfer_leadership=False)

    run(body())


def test_request_ids_differ_across_members_and_restarts() -> None:
    """A follower recognises its forwarded writes in the log by their bytes: the same request
    from two members, or from one member before and after a restart, must not encode alike."""
    from raftkv.server.driver import request_ids

    a, b = request_ids(1, 1000.0), request_ids(2, 1000.0)
    restarted = request_ids(1, 1000.5)
    first = [next(a) for _ in range(3)]
    assert first == sorted(set(first))
    assert not set(first) & {next(b) for _ in range(3)}
    assert not set(first) & {next(restarted) for _ in range(3)}
