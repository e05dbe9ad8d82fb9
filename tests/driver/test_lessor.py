"""The lessor's rules (raftkv/driver/lessor.py), one at a time, without Raft."""

from __future__ import annotations

from raftkv.driver.actions import Fail, Resolve
from raftkv.driver.errors import LeaderChangedError
from raftkv.driver.lessor import LeaseIds, Lessor
from raftkv.kv.types import LeaseKeepAliveResult, LeaseRemaining


def lessor(rate: int = 100) -> Lessor:
    return Lessor(ticks_per_second=10, extend_ticks=10, revokes_per_tick=rate)


def test_only_a_primary_lessor_expires_and_promotion_gives_the_full_ttl_again() -> None:
    ls = lessor()
    ls.load([(1, 2)], now=0)
    assert ls.expired(1000) == [], "a follower keeps no clocks"
    ls.promote(term=3, now=100)
    assert ls.expired(129) == []  # 100 + 2 s + the 10-tick extension
    assert ls.expired(130) == [1]
    ls.demote()
    assert ls.expired(10_000) == []


def test_revokes_are_rate_limited_proposed_once_and_postponed_when_refused() -> None:
    ls = lessor(rate=2)
    ls.load([(i, 1) for i in range(5)], now=0)
    ls.promote(term=1, now=0)
    assert ls.expired(20) == [0, 1]
    assert ls.expired(20) == [2, 3]
    ls.postpone(3)  # the Raft core refused its proposal
    assert ls.expired(21) == [3, 4]
    assert ls.expired(1000) == [], "a revoke in the primary's log is never proposed again"
    ls.revoked(0)
    assert 0 not in ls.leases()


def test_a_keep_alive_renews_from_its_arrival_only_if_still_primary_in_its_term() -> None:
    ls = lessor()
    ls.load([(1, 2)], now=0)
    ls.promote(term=4, now=0)
    ls.query(7, 1, renew=True, term=4, now=25)
    assert ls.answer(7, term=4, now=28) == Resolve(7, LeaseKeepAliveResult(1, 2))
    assert ls.expired(44) == [] and ls.expired(45) == [1]  # 25 + 20
    ls.query(8, 1, renew=True, term=4, now=46)
    assert ls.answer(8, term=4, now=46) == Resolve(8, LeaseKeepAliveResult(1, 0)), "revoking"
    ls.query(9, 1, renew=True, term=4, now=46)
    assert ls.answer(9, term=5, now=47) == Fail(9, LeaderChangedError())


def test_time_to_live_and_unknown_leases() -> None:
    ls = lessor()
    ls.promote(term=1, now=0)
    ls.granted(3, 60, now=5)
    ls.query(1, 3, renew=False, term=1, now=10)
    assert ls.answer(1, term=1, now=10) == Resolve(1, LeaseRemaining(3, 59))
    ls.query(2, 99, renew=False, term=1, now=10)
    assert ls.answer(2, term=1, now=10) == Resolve(2, LeaseRemaining(99, -1))
    ls.query(3, 99, renew=True, term=1, now=10)
    assert ls.answer(3, term=1, now=10) == Resolve(3, LeaseKeepAliveResult(99, 0))


def test_lease_ids_are_positive_and_differ_across_members() -> None:
    a, b = LeaseIds(0x8E9E05C52164694D, 1_700_000_000_000), LeaseIds(0x1234, 1_700_000_000_000)
    ids = {a.next() for _ in range(1000)} | {b.next() for _ in range(1000)}
    assert len(ids) == 2000 and all(0 < i < 2**63 for i in ids)
