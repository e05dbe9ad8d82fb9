"""RaftLog, Progress/Inflights and quorum arithmetic, including property tests."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from raftkv.errors import CompactedError, InternalError, UnavailableError
from raftkv.raft.log import RaftLog
from raftkv.raft.progress import (
    Inflights,
    Progress,
    ProgressState,
    VoteResult,
    committed_index,
    vote_result,
)
from raftkv.raft.storage import MemoryStorage
from raftkv.raft.types import ConfState, Entry, HardState, Snapshot, SnapshotMeta


def log_with(terms, commit=0):
    storage = MemoryStorage(ConfState(voters=(1,)))
    storage.append([Entry(t, i + 1) for i, t in enumerate(terms)])
    storage.set_hard_state(HardState(term=max(terms, default=0), commit=commit))
    return RaftLog(storage), storage


def test_unstable_entries_shadow_stale_storage_until_persisted():
    log, storage = log_with([1, 1, 1])
    log.append([Entry(2, 2)])
    assert log.last_index() == 2 and log.term(2) == 2
    assert log.unstable_entries() == (Entry(2, 2),)
    storage.append(log.unstable_entries())
    log.stable_to(2, 2)
    assert log.unstable_entries() == () and log.last_index() == 2


def test_stable_to_ignores_replaced_entries():
    log, _ = log_with([1])
    log.append([Entry(1, 2)])
    log.append([Entry(2, 2)])  # replaced before the first write finished
    log.stable_to(2, 1)
    assert log.unstable_entries() == (Entry(2, 2),)


def test_append_refuses_to_overwrite_committed():
    log, _ = log_with([1, 1], commit=2)
    with pytest.raises(InternalError):
        log.append([Entry(2, 2)])


def test_term_outside_the_log_raises():
    log, storage = log_with([1, 1, 2, 2])
    storage.create_snapshot(2, ConfState(voters=(1,)), b"")
    storage.compact(2)
    log = RaftLog(storage)
    assert log.term(2) == 1
    with pytest.raises(CompactedError):
        log.term(1)
    with pytest.raises(UnavailableError):
        log.term(5)


def test_find_conflict_by_term_skips_whole_terms():
    log, _ = log_with([1, 1, 3, 3, 3, 5])
    assert log.find_conflict_by_term(6, 4) == (5, 3)
    assert log.find_conflict_by_term(6, 2) == (2, 1)
    assert log.find_conflict_by_term(6, 0) == (0, 0)


def test_restore_snapshot_replaces_log():
    log, _ = log_with([1, 1], commit=1)
    snap = Snapshot(SnapshotMeta(10, 4, ConfState(voters=(1,))), b"s")
    log.restore(snap)
    assert (log.first_index(), log.last_index(), log.committed) == (11, 10, 10)
    assert log.term(10) == 4
    assert log.next_committed_entries(None) == ()


def test_slice_respects_max_size_across_storage_and_unstable():
    log, _ = log_with([1, 1])
    log.append([Entry(1, 3, data=b"x" * 100)])
    assert len(log.slice(1, 4, max_size=1)) == 1
    assert len(log.slice(1, 4, max_size=None)) == 3


def test_inflights_bound_count_and_bytes():
    inflights = Inflights(max_count=3, max_bytes=100)
    inflights.add(1, 10)
    inflights.add(2, 95)
    assert inflights.full()
    inflights.free_le(1)
    assert not inflights.full() and len(inflights) == 1


def test_progress_decrements_on_rejection_and_ignores_stale_rejections():
    pr = Progress(10, Inflights(8, 0), is_learner=False)
    assert pr.maybe_decr_to(9, 4)
    assert pr.next == 5
    assert not pr.maybe_decr_to(9, 4)  # stale: we no longer probe at 9
    pr.maybe_update(6)
    pr.become_replicate()
    assert pr.state is ProgressState.REPLICATE and pr.next == 7
    assert not pr.maybe_decr_to(5, 0)


def alternative_committed(voters, match):
    # The largest index held by a majority, by brute force.
    best = 0
    for candidate in {match.get(v, 0) for v in voters}:
        if sum(1 for v in voters if match.get(v, 0) >= candidate) * 2 > len(voters):
            best = max(best, candidate)
    return best


@given(st.dictionaries(st.integers(1, 7), st.integers(0, 20), min_size=1))
def test_committed_index_matches_brute_force(match):
    voters = tuple(sorted(match))
    assert committed_index(voters, match) == alternative_committed(voters, match)


@given(
    st.integers(1, 7).flatmap(
        lambda n: st.tuples(
            st.just(tuple(range(1, n + 1))),
            st.dictionaries(st.integers(1, n), st.booleans()),
        )
    )
)
def test_vote_result_is_decided_only_by_a_majority(args):
    voters, votes = args
    granted = sum(votes.get(v) is True for v in voters)
    rejected = sum(votes.get(v) is False for v in voters)
    result = vote_result(voters, votes)
    if granted * 2 > len(voters):
        assert result is VoteResult.WON
    elif (len(voters) - rejected) * 2 <= len(voters):
        assert result is VoteResult.LOST
    else:
        assert result is VoteResult.PENDING
