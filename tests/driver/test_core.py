"""The driver core on its own: no LMDB, no threads, no asyncio. Each piece is driven with plain
events and its actions are checked; ``Member`` below carries actions out the way the server's
adapter does (persist into a MemoryStorage, apply into the real state machine), one at a time,
so a test can hold any of them back."""

from __future__ import annotations

import random
from collections import deque
from typing import Any

import pytest

from raftkv.driver import (
    Action,
    AppliedTo,
    Apply,
    CoreConfig,
    DriverCore,
    Fail,
    FlushReadsSoon,
    Forward,
    Persist,
    Refusal,
    Resolve,
    TakeSnapshot,
    Worker,
)
from raftkv.driver.apply import ApplyPipeline
from raftkv.driver.errors import LeaderChangedError, NoLeaderError, RequestTimeoutError
from raftkv.driver.proposals import Forwarder, ProposalWaiters
from raftkv.kv.backend import MemoryBackend
from raftkv.kv.codec import Command, encode_command
from raftkv.kv.state_machine import ApplyResult, KVStateMachine
from raftkv.kv.types import DeleteRangeRequest, PutRequest, PutResponse, RangeRequest
from raftkv.raft.config import RaftConfig
from raftkv.raft.rawnode import RawNode
from raftkv.raft.storage import MemoryStorage
from raftkv.raft.types import ConfState, Entry, Role


def put(index: int, key: bytes = b"k", term: int = 1) -> Entry:
    return Entry(term=term, index=index, data=encode_command(Command(index, PutRequest(key, b"v"))))


# -- ProposalWaiters --------------------------------------------------------------------------


def test_a_proposal_applied_in_its_term_resolves_with_its_result() -> None:
    waiters, out = ProposalWaiters(), list[Action]()
    waiters.wait(7, index=3, term=2)
    result = PutResponse(revision=5)
    waiters.on_applied([put(3, term=2)], {3: result}, out)
    assert out == [Resolve(7, result)]
    assert len(waiters) == 0


def test_a_proposal_replaced_by_another_term_fails_with_leader_changed() -> None:
    waiters, out = ProposalWaiters(), list[Action]()
    waiters.wait(7, index=3, term=2)
    waiters.on_applied([put(3, term=3)], {3: PutResponse(revision=5)}, out)
    assert len(out) == 1 and isinstance(out[0], Fail)
    assert isinstance(out[0].error, LeaderChangedError)


def test_a_command_already_applied_through_a_snapshot_image_is_an_unknown_outcome() -> None:
    """The state machine skipped it (it had applied it already): it applied, but its result is
    not known, so the answer is "request timed out", never "leader changed"."""
    waiters, out = ProposalWaiters(), list[Action]()
    waiters.wait(7, index=3, term=2)
    waiters.on_applied([put(3, term=2)], {}, out)
    assert len(out) == 1 and isinstance(out[0], Fail)
    assert isinstance(out[0].error, RequestTimeoutError)


def test_a_non_kv_entry_applied_in_its_term_resolves_with_none() -> None:
    waiters, out = ProposalWaiters(), list[Action]()
    waiters.wait(7, index=3, term=2)
    waiters.on_applied([Entry(term=2, index=3, data=b"MA{}")], {}, out)
    assert out == [Resolve(7, None)]


def test_two_waiters_at_one_index_each_get_their_own_outcome() -> None:
    waiters, out = ProposalWaiters(), list[Action]()
    waiters.wait(1, index=4, term=2)  # proposed as leader in term 2
    waiters.wait(2, index=4, term=3)  # a forwarded write found there in term 3
    result = PutResponse(revision=9)
    waiters.on_applied([put(4, term=3)], {4: result}, out)
    assert out[1] == Resolve(2, result)
    assert isinstance(out[0], Fail) and isinstance(out[0].error, LeaderChangedError)
    assert waiters.drop(1) is False


# -- Forwarder --------------------------------------------------------------------------------


def test_a_forwarded_write_is_found_in_the_log_by_its_command() -> None:
    fwd, out = Forwarder(), list[Action]()
    fwd.forward(5, b"cmd", leader=2, out=out)
    assert [type(a).__name__ for a in out] == ["Forward"]
    found = fwd.find([Entry(term=3, index=8, data=b"other"), Entry(term=3, index=9, data=b"cmd")])
    assert [(w, e.index, e.term) for w, e in found] == [(5, 9, 3)]
    assert len(fwd) == 0


@pytest.mark.parametrize("refusal", [Refusal.NOT_LEADER, None])
def test_a_forward_certainly_not_proposed_is_sent_again(refusal: Refusal | None) -> None:
    fwd, out = Forwarder(), list[Action]()
    fwd.forward(5, b"cmd", leader=2, out=out)
    forward = out[0]
    assert isinstance(forward, Forward)
    forward_id = forward.forward_id
    assert fwd.rejected([forward_id], refusal, out) == [(5, b"cmd")]


def test_a_forward_refused_during_a_transfer_fails_and_a_lost_one_is_unknown() -> None:
    fwd, out = Forwarder(), list[Action]()
    fwd.forward(5, b"a", leader=2, out=out)
    fwd.forward(6, b"b", leader=2, out=out)
    first, second = (a.forward_id for a in out if isinstance(a, Forward))
    out.clear()
    assert fwd.rejected([first], Refusal.LEADER_CHANGED, out) == []
    fwd.lost([second], out)
    errors = [type(a.error) for a in out if isinstance(a, Fail)]
    assert errors == [LeaderChangedError, RequestTimeoutError]
    assert fwd.find([Entry(term=1, index=1, data=b"b")]) == []  # never resent, never matched


# -- ApplyPipeline ----------------------------------------------------------------------------


def test_small_put_batches_go_to_the_disk_thread_only_while_the_apply_thread_is_idle() -> None:
    pipeline = ApplyPipeline(light_max_entries=4)
    heavy = Entry(term=1, index=2, data=encode_command(Command(2, DeleteRangeRequest(b"a"))))
    first = pipeline.hand_over([put(1)])
    second = pipeline.hand_over([heavy])
    third = pipeline.hand_over([put(3)])  # light, but must not overtake the heavy batch
    assert [first.worker, second.worker, third.worker] == [Worker.DISK, Worker.APPLY, Worker.APPLY]
    pipeline.finished(first.batch)
    pipeline.finished(second.batch)
    pipeline.finished(third.batch)
    assert pipeline.hand_over([put(4)]).worker is Worker.DISK
    big = [put(i) for i in range(5, 10)]
    assert pipeline.hand_over(big).worker is Worker.APPLY


def test_batches_must_finish_in_the_order_they_were_handed_over() -> None:
    pipeline = ApplyPipeline(light_max_entries=4)
    first = pipeline.hand_over([put(1)])
    second = pipeline.hand_over([put(2)])
    with pytest.raises(RuntimeError, match="before batch"):
        pipeline.finished(second.batch)
    del first


# -- DriverCore, with a member that carries the actions out on request -----------------------


class Member:
    """One member: a DriverCore over a MemoryStorage and the real state machine. Persists and
    applies wait in queues until the test runs them."""

    def __init__(self, voters: tuple[int, ...] = (1,), **config: Any) -> None:
        self.storage = MemoryStorage(ConfState(voters=voters))
        self.sm = KVStateMachine(MemoryBackend())
        raw = RawNode(RaftConfig(node_id=1), self.storage, random.Random(1))
        self.core = DriverCore(CoreConfig(member_id=1, **config), raw, self.storage, applied=0)
        self.persists: deque[Persist] = deque()
        self.applies: deque[Apply] = deque()
        self.outcomes: dict[int, Action] = {}
        self.snapshots: list[TakeSnapshot] = []

    def take(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Persist):
                self.persists.append(action)
            elif isinstance(action, Apply):
                self.applies.append(action)
            elif isinstance(action, Resolve | Fail):
                self.outcomes[action.waiter] = action
            elif isinstance(action, TakeSnapshot):
                self.snapshots.append(action)
            elif isinstance(action, FlushReadsSoon):
                self.core.issue_reads()

    def pump(self) -> None:
        self.take(self.core.pump())

    def persist_one(self) -> None:
        job = self.persists.popleft()
        self.storage.save(job.hard_state, job.entries, job.snapshot, sync=True)
        self.take(self.core.persisted())
        self.pump()

    def apply_one(self) -> list[ApplyResult]:
        job = self.applies.popleft()
        results = self.sm.apply(job.entries)
        self.take(self.core.applied_batch(job.batch, results))
        self.pump()
        return results

    def settle(self) -> None:
        self.pump()
        while self.persists or self.applies:
            while self.persists:
                self.persist_one()
            while self.applies:
                self.apply_one()

    def elect(self) -> None:
        self.core.node.campaign()
        self.settle()
        assert self.core.role is Role.LEADER


def test_a_write_is_answered_when_it_applies_not_when_it_is_persisted() -> None:
    member = Member()
    member.elect()
    command = encode_command(Command(1, PutRequest(b"k", b"v")))
    member.take(member.core.propose(10, command))
    member.pump()
    member.persist_one()  # durable (and committed: one voter), not applied yet
    assert 10 not in member.outcomes
    member.settle()
    outcome = member.outcomes[10]
    assert isinstance(outcome, Resolve) and isinstance(outcome.result, PutResponse)


def test_a_read_waits_for_its_index_to_apply() -> None:
    member = Member(light_apply_max_entries=0)
    member.elect()
    command = encode_command(Command(1, PutRequest(b"k", b"v")))
    member.take(member.core.propose(10, command))
    member.pump()
    member.persist_one()
    member.take(member.core.read(11))
    member.pump()
    while member.persists:
        member.persist_one()
    assert 11 not in member.outcomes  # the write before it has not applied yet
    member.settle()
    assert member.outcomes[11] == Resolve(11, None)
    assert member.sm.store.range(RangeRequest(b"k")).kvs[0].value == b"v"


def test_the_ready_loop_waits_when_too_many_applies_are_unfinished() -> None:
    member = Member(max_applies_in_flight=1, light_apply_max_entries=0)
    member.elect()
    for waiter in range(3):
        command = encode_command(Command(waiter + 1, PutRequest(b"k", b"v")))
        member.take(member.core.propose(waiter, command))
        member.pump()
        while member.persists:
            member.persist_one()
    assert len(member.applies) == 2  # the cap (1) is passed: no further Ready is taken
    assert member.core.pump() == []
    member.settle()
    assert all(isinstance(member.outcomes[w], Resolve) for w in range(3))


def test_a_commit_only_hard_state_is_not_written_alone_but_at_the_stop() -> None:
    member = Member()
    member.elect()
    command = encode_command(Command(1, PutRequest(b"k", b"v")))
    member.take(member.core.propose(10, command))
    member.settle()
    last = member.storage.last_index()
    assert member.core.node.status().commit == last
    assert member.storage.hard_state.commit < last  # the commit-only hard state waited
    persists = [a for a in member.core.stop() if isinstance(a, Persist)]
    assert len(persists) == 1 and persists[0].hard_state is not None
    assert persists[0].hard_state.commit == last


def test_a_deadline_fails_a_waiting_write_with_the_right_error() -> None:
    member = Member(voters=(1, 2, 3))  # no leader: the write waits for one
    member.take(member.core.propose(10, b"cmd"))
    expired = member.core.expire(10)
    assert len(expired) == 1 and isinstance(expired[0], Fail)
    assert isinstance(expired[0].error, NoLeaderError)
    assert member.core.expire(10) == []  # forgotten


def test_snapshots_never_pass_what_was_handed_to_the_state_machine() -> None:
    member = Member(snapshot_count=2, snapshot_catchup_entries=0, light_apply_max_entries=0)
    member.elect()
    for waiter in range(4):
        command = encode_command(Command(waiter + 1, PutRequest(b"k", b"v")))
        member.take(member.core.propose(waiter, command))
        member.settle()
    assert member.snapshots
    assert all(s.index <= member.core.applied for s in member.snapshots)


def test_applied_to_is_reported_after_every_batch() -> None:
    member = Member()
    member.elect()
    member.take(member.core.propose(1, encode_command(Command(1, PutRequest(b"k", b"v")))))
    member.pump()
    member.persist_one()
    job = member.applies.popleft()
    actions = member.core.applied_batch(job.batch, member.sm.apply(job.entries))
    assert AppliedTo(job.entries[-1].index) in actions
