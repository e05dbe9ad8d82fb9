"""Unit tests for the simulator's pieces: chooser, options, network, disk, client requests,
state agreement."""

from __future__ import annotations

import pytest

from raftkv.errors import InternalError
from raftkv.kv.backend import MemoryBackend
from raftkv.kv.codec import Command, encode_command
from raftkv.kv.state_machine import KVStateMachine
from raftkv.kv.types import TxnResponse
from raftkv.raft.messages import Heartbeat
from raftkv.raft.types import ConfState, Entry, HardState
from raftkv.sim.chooser import SeededChooser
from raftkv.sim.clients import read_value, write_request
from raftkv.sim.disk import AppendOp, CompactOp, CreateSnapshotOp, HardStateOp, SimDisk
from raftkv.sim.network import ForwardPacket, SimNetwork, SwizzleClog, make_partition
from raftkv.sim.node import SimulationError
from raftkv.sim.options import PARTITION_MODES, SimOptions
from raftkv.sim.state import StateAgreement


def hb(src: int, dst: int, term: int = 1) -> Heartbeat:
    return Heartbeat(src, dst, term, 0)


# -- chooser ----------------------------------------------------------------------------------


def test_seeded_chooser_replays() -> None:
    a, b = SeededChooser(7), SeededChooser(7)
    draws_a = [a.below(10) for _ in range(50)] + [a.between(3, 5) for _ in range(20)]
    draws_b = [b.below(10) for _ in range(50)] + [b.between(3, 5) for _ in range(20)]
    assert draws_a == draws_b
    assert all(3 <= x <= 5 for x in draws_a[50:])
    assert a.fork().random() == b.fork().random()


def test_chance_edges_draw_nothing() -> None:
    c = SeededChooser(1)
    state = c.rng.getstate()
    assert not c.chance(0.0)
    assert c.rng.getstate() == state
    assert c.chance(1.0)


def test_shuffle_is_a_permutation() -> None:
    c = SeededChooser(3)
    items = list(range(20))
    c.shuffle(items)
    assert sorted(items) == list(range(20))
    assert items != list(range(20))


# -- options ----------------------------------------------------------------------------------


def test_swarm_is_a_function_of_the_seed() -> None:
    assert SimOptions.swarm(12) == SimOptions.swarm(12)
    worlds = {SimOptions.swarm(s) for s in range(40)}
    assert len(worlds) == 40
    nodes = {o.nodes for o in worlds}
    assert nodes == {3, 5}


def test_swarm_ranges() -> None:
    for seed in range(200):
        o = SimOptions.swarm(seed)
        assert 0.0 <= o.drop_prob <= 0.2
        assert 0.0 <= o.dup_prob <= 0.1
        assert 1 <= o.delay_min_ticks <= o.delay_max_ticks
        assert 1 <= o.max_inflight_msgs <= 256
        assert 1 <= o.heartbeat_ticks <= 3 and o.election_ticks == 10
        assert 3 <= o.clients <= 6 and 1 <= o.keys <= 4
        assert set(o.partition_modes) <= set(PARTITION_MODES) and o.partition_modes
        assert 1 <= o.max_down <= o.nodes
    assert any(SimOptions.swarm(s).max_size_per_msg_bytes < 100 for s in range(50))
    assert any(SimOptions.swarm(s).snapshot_threshold <= 50 for s in range(50))


def test_describe_lists_every_option() -> None:
    text = SimOptions.swarm(5).describe()
    assert "seed=5" in text and "drop_prob=" in text and "snapshot_threshold=" in text


def test_quiet_has_no_faults() -> None:
    q = SimOptions.swarm(9).quiet()
    assert not q.faulty
    assert q.pause_prob == 0 and q.tick_skip_prob == 0 and q.tick_double_prob == 0


# -- network ----------------------------------------------------------------------------------


def test_network_delivers_after_the_delay() -> None:
    net = SimNetwork(SeededChooser(0), delay_min=2, delay_max=2)
    net.send(hb(1, 2))
    net.now = 1
    assert net.pop_due() == []
    net.now = 2
    assert net.pop_due() == [hb(1, 2)]
    assert len(net) == 0


def test_network_drops_and_duplicates() -> None:
    net = SimNetwork(SeededChooser(0), drop_prob=1.0)
    net.send(hb(1, 2))
    assert len(net) == 0 and net.dropped == 1
    net = SimNetwork(SeededChooser(0), dup_prob=1.0)
    net.send(hb(1, 2))
    assert len(net) == 2 and net.duplicated == 1


def test_network_reorders_with_delay_ranges() -> None:
    net = SimNetwork(SeededChooser(4), delay_min=1, delay_max=10)
    for term in range(1, 30):
        net.send(hb(1, 2, term))
    delivered = []
    for now in range(1, 12):
        net.now = now
        delivered += [m.term for m in net.pop_due() if isinstance(m, Heartbeat)]
    assert sorted(delivered) == list(range(1, 30))
    assert delivered != list(range(1, 30))


def test_partition_cuts_links_at_send_and_at_delivery() -> None:
    net = SimNetwork(SeededChooser(0))
    net.send(hb(1, 2))
    net.partition(frozenset({(1, 2)}))
    net.send(hb(1, 2))
    net.send(hb(2, 1))
    net.now = 1
    assert net.pop_due() == [hb(2, 1)]
    net.heal()
    net.send(hb(1, 2))
    net.now = 2
    assert net.pop_due() == [hb(1, 2)]


def test_on_drop_reports_partition_cuts() -> None:
    net = SimNetwork(SeededChooser(0))
    seen = []
    net.on_drop = lambda msg, cut: seen.append((msg.dst, cut))
    net.partition(frozenset({(1, 3)}))
    net.send(hb(1, 3))
    assert seen == [(3, True)]


def test_explicit_delivery() -> None:
    net = SimNetwork(SeededChooser(0), delay_min=1, delay_max=5)
    for dst in (2, 3, 4):
        net.send(hb(1, dst))
    inflight = net.in_flight()
    assert len(inflight) == 3
    assert net.take(1) == inflight[1]
    net.duplicate(0)
    assert len(net) == 3
    net.drop(0)
    assert len(net) == 2


@pytest.mark.parametrize("mode", [m for m in PARTITION_MODES if m != "swizzle"])
def test_partition_modes(mode: str) -> None:
    nodes = (1, 2, 3, 4, 5)
    for seed in range(20):
        links = make_partition(mode, nodes, SeededChooser(seed), leader=3)
        assert links
        assert all(a != b and a in nodes and b in nodes for a, b in links)
        if mode != "oneway":
            assert all((b, a) in links for a, b in links)
        if mode == "leader":
            assert all(3 in link for link in links)


# -- disk -------------------------------------------------------------------------------------


def disk_with(n: int) -> SimDisk:
    disk = SimDisk(ConfState(voters=(1, 2, 3)))
    for i in range(1, n + 1):
        disk.write(
            (AppendOp([Entry(1, i, data=b"x")]), HardStateOp(HardState(1, 1, i))), sync=False
        )
    return disk


def test_disk_sync_makes_writes_durable() -> None:
    disk = disk_with(3)
    assert disk.storage.last_index() == 3 and disk.durable.last_index() == 0
    disk.sync()
    assert disk.durable.last_index() == 3
    assert disk.durable.hard_state == HardState(1, 1, 3)
    assert disk.synced


def test_disk_crash_keeps_a_transaction_prefix() -> None:
    kept_counts = set()
    for seed in range(30):
        disk = disk_with(5)
        kept = disk.crash(SeededChooser(seed))
        kept_counts.add(kept)
        # Whole transactions survive: entries and hard state stay consistent.
        assert disk.durable.last_index() == kept
        assert disk.durable.hard_state.commit == kept
        assert disk.storage.last_index() == kept
        assert disk.synced
    assert 0 in kept_counts and 5 in kept_counts


def test_disk_crash_keeps_whole_saves_in_order() -> None:
    """DurableLog.save on SimDisk: a crash keeps a prefix of the unsynced saves, each whole."""
    kept_counts = set()
    for seed in range(30):
        disk = SimDisk(ConfState(voters=(1, 2, 3)))
        disk.save(HardState(1, 1, 0), [Entry(1, 1, data=b"x")], None, sync=True)
        for i in range(2, 7):
            disk.save(HardState(1, 1, i), [Entry(1, i, data=b"x")], None, sync=False)
        assert disk.last_index() == 6 and disk.durable.last_index() == 1
        kept = disk.crash(SeededChooser(seed))
        kept_counts.add(kept)
        assert disk.last_index() == 1 + kept
        hs = disk.initial_state()[0]
        assert hs.commit == (disk.last_index() if kept else 0)
    assert 0 in kept_counts and 5 in kept_counts


def test_disk_save_with_a_gap_changes_nothing() -> None:
    disk = disk_with(2)
    with pytest.raises(InternalError):
        disk.save(HardState(2, 2, 4), [Entry(2, 4, data=b"x")], None, sync=False)
    assert disk.last_index() == 2 and disk.storage.hard_state == HardState(1, 1, 2)
    disk.sync()
    assert disk.durable.last_index() == 2


def test_disk_crash_after_sync_loses_nothing() -> None:
    disk = disk_with(4)
    disk.sync()
    disk.crash(SeededChooser(0))
    assert disk.storage.last_index() == 4


def test_disk_snapshot_and_compact() -> None:
    disk = disk_with(10)
    conf = ConfState(voters=(1, 2, 3))
    disk.write((CreateSnapshotOp(8, conf, b"k0=1"), CompactOp(6)), sync=True)
    assert disk.durable.snapshot().meta.index == 8
    assert disk.durable.first_index() == 7
    disk.crash(SeededChooser(0))
    assert disk.storage.snapshot().data == b"k0=1"


# -- kv ---------------------------------------------------------------------------------------


def _apply(sm: KVStateMachine, index: int, request: object) -> object:
    entry = Entry(term=1, index=index, data=encode_command(Command(index, request)))  # type: ignore[arg-type]
    (result,) = sm.apply([entry])
    return result.result


def test_client_requests_are_etcd_puts_deletes_and_compare_and_sets() -> None:
    sm = KVStateMachine(MemoryBackend())
    _apply(sm, 1, write_request("a", 1, None, cas=False))
    assert read_value(sm.store, "a") == 1
    failed = _apply(sm, 2, write_request("a", 3, 2, cas=True))
    assert isinstance(failed, TxnResponse) and not failed.succeeded
    done = _apply(sm, 3, write_request("a", 3, 1, cas=True))
    assert isinstance(done, TxnResponse) and done.succeeded
    assert read_value(sm.store, "a") == 3
    absent = _apply(sm, 4, write_request("b", 4, None, cas=True))  # b must not exist: it doesn't
    assert isinstance(absent, TxnResponse) and absent.succeeded
    again = _apply(sm, 5, write_request("b", 5, None, cas=True))
    assert isinstance(again, TxnResponse) and not again.succeeded
    _apply(sm, 6, write_request("a", None, None, cas=False))  # a write of "absent" deletes
    assert read_value(sm.store, "a") is None


def test_state_agreement_catches_members_at_different_revisions() -> None:
    agreement = StateAgreement()
    a, b = KVStateMachine(MemoryBackend()), KVStateMachine(MemoryBackend())
    _apply(a, 1, write_request("k", 1, None, cas=False))
    _apply(b, 1, write_request("k", 1, None, cas=False))
    agreement.applied(1, a)
    agreement.applied(2, b)
    assert StateAgreement.hash_kv(a) == StateAgreement.hash_kv(b)
    c = KVStateMachine(MemoryBackend())
    c.apply([Entry(term=1, index=1)])  # a no-op at index 1: revision stays 1
    with pytest.raises(SimulationError, match="diverged"):
        agreement.applied(3, c)


def test_network_never_duplicates_a_forward() -> None:
    net = SimNetwork(SeededChooser(1), dup_prob=1.0)
    net.send(ForwardPacket(1, 2, 0, 7, b"cmd"))
    net.send(hb(1, 2))
    net.now = 1
    due = net.pop_due()
    assert sum(isinstance(p, ForwardPacket) for p in due) == 1
    assert sum(isinstance(p, Heartbeat) for p in due) == 2


def test_swizzle_clogs_one_by_one_then_heals() -> None:
    nodes = (1, 2, 3, 4, 5)
    for seed in range(10):
        swizzle = SwizzleClog(nodes, SeededChooser(seed), now=0, hold_ticks=5)
        sizes = []
        for now in range(200):
            links = swizzle.advance(now)
            if links is not None:
                sizes.append(len(swizzle.clogged))
                assert all(a in swizzle.clogged or b in swizzle.clogged for a, b in links)
        assert swizzle.done and swizzle.clogged == []
        peak = max(sizes)
        assert sizes[: sizes.index(peak) + 1] == list(range(1, peak + 1))
