"""The list-append checker flags each anomaly class on hand-made histories; good ones pass."""

from __future__ import annotations

from typing import Any

from jepsen.elle import Txn, check


def t(i: int, mops: list[list[Any]], invoke: float, complete: float | None, status: str = "ok"):
    return Txn(i, i, status, mops, invoke, complete)


def kinds(txns) -> list[str]:
    return list(check(txns)["anomaly_types"])


def test_serial_history_is_valid() -> None:
    h = [
        t(0, [["append", "x", 1], ["append", "y", 1]], 0, 1),
        t(1, [["r", "x", [1]], ["append", "x", 2]], 2, 3),
        t(2, [["r", "x", [1, 2]], ["r", "y", [1]]], 4, 5),
        t(3, [["append", "y", 2]], 6, 7, "fail"),
        t(4, [["r", "y", [1]]], 8, 9),
    ]
    res = check(h)
    assert res["valid"], res
    assert res["stats"]["edges"] > 0


def test_concurrent_valid_history() -> None:
    # T1 and T2 overlap in time; either order is fine as long as reads agree.
    h = [
        t(0, [["append", "x", 1]], 0, 5),
        t(1, [["append", "x", 2]], 1, 6),
        t(2, [["r", "x", [2, 1]]], 7, 8),
    ]
    assert check(h)["valid"]


def test_g0_write_cycle() -> None:
    # x says T0 before T1; y says T1 before T0.
    h = [
        t(0, [["append", "x", 1], ["append", "y", 2]], 0, 10),
        t(1, [["append", "x", 2], ["append", "y", 1]], 0, 10),
        t(2, [["r", "x", [1, 2]], ["r", "y", [1, 2]]], 11, 12),
    ]
    res = check(h)
    assert "G0" in res["anomaly_types"]
    witness = res["anomalies"]["G0"][0]
    assert sorted(witness["cycle"]) == [0, 1]
    assert "T0 -ww-> T1" in witness["explanation"]


def test_g1c_circular_information_flow() -> None:
    # T0 reads T1's append to y, T1 reads T0's append to x.
    h = [
        t(0, [["append", "x", 1], ["r", "y", [1]]], 0, 10),
        t(1, [["append", "y", 1], ["r", "x", [1]]], 0, 10),
    ]
    assert "G1c" in kinds(h)


def test_g_single_read_skew() -> None:
    # T2 sees T1's write to y but not T0->T1's earlier write to x (T1 read x after T0).
    h = [
        t(0, [["append", "x", 1]], 0, 1),
        t(1, [["r", "x", [1]], ["append", "y", 1]], 2, 3),
        t(2, [["r", "x", []], ["r", "y", [1]]], 0, 10),
        t(3, [["r", "x", [1]]], 11, 12),
    ]
    assert "G-single" in kinds(h)


def test_g2_item_write_skew() -> None:
    # Each reads the other's key empty, then appends to its own key: two rw edges.
    h = [
        t(0, [["r", "x", []], ["append", "y", 1]], 0, 10),
        t(1, [["r", "y", []], ["append", "x", 1]], 0, 10),
        t(2, [["r", "x", [1]], ["r", "y", [1]]], 11, 12),
    ]
    res = check(h)
    assert "G2-item" in res["anomaly_types"]
    assert res["anomalies"]["G2-item"][0]["edges"].count("rw") == 2


def test_g1a_aborted_read() -> None:
    h = [
        t(0, [["append", "x", 1]], 0, 1, "fail"),
        t(1, [["r", "x", [1]]], 2, 3),
    ]
    assert "G1a" in kinds(h)


def test_g1b_intermediate_read() -> None:
    h = [
        t(0, [["append", "x", 1], ["append", "x", 2]], 0, 10),
        t(1, [["r", "x", [1]]], 0, 10),
    ]
    assert "G1b" in kinds(h)


def test_stale_read_is_a_realtime_violation() -> None:
    # T1 starts after T0 committed its append, yet does not see it: serializable, not strict.
    h = [
        t(0, [["append", "x", 1]], 0, 1),
        t(1, [["r", "x", []]], 2, 3),
        t(2, [["r", "x", [1]]], 4, 5),
    ]
    res = check(h)
    assert res["anomaly_types"] == ["G-single-realtime"], res
    assert "rt" in res["anomalies"]["G-single-realtime"][0]["edges"]


def test_incompatible_orders_and_duplicates() -> None:
    h = [
        t(0, [["append", "x", 1]], 0, 1),
        t(1, [["append", "x", 2]], 0, 1),
        t(2, [["r", "x", [1, 2]]], 2, 3),
        t(3, [["r", "x", [2, 1]]], 2, 3),
        t(4, [["r", "x", [1, 1]]], 2, 3),
    ]
    found = kinds(h)
    assert "incompatible-order" in found
    assert "duplicate-elements" in found


def test_info_txn_may_have_committed() -> None:
    h = [
        t(0, [["append", "x", 1]], 0, None, "info"),
        t(1, [["r", "x", [1]]], 2, 3),
    ]
    assert check(h)["valid"]


def test_larger_random_serial_history_is_valid_and_fast() -> None:
    import random
    import time

    rng = random.Random(7)
    state: dict[str, list[int]] = {}
    txns = []
    for i in range(3000):
        mops: list[list[Any]] = []
        for _ in range(rng.randint(1, 4)):
            k = f"k{rng.randrange(8)}"
            if rng.random() < 0.5:
                mops.append(["r", k, list(state.get(k, []))])
            else:
                state.setdefault(k, []).append(i * 10 + len(mops))
                mops.append(["append", k, i * 10 + len(mops)])
        txns.append(t(i, mops, 2 * i, 2 * i + 1))
    t0 = time.monotonic()
    res = check(txns)
    assert res["valid"], res["anomaly_types"]
    assert time.monotonic() - t0 < 10


def test_a_key_only_ever_read_empty_is_checked_not_a_crash() -> None:
    # A partition can leave a key whose appends all failed, or whose reads all came first:
    # every read of it is empty, so it has no longest read to order it by.
    h = [
        t(0, [["r", "z", []]], 0, 1),
        t(1, [["append", "z", 1]], 2, 3, "fail"),
        t(2, [["r", "z", []], ["append", "x", 1]], 4, 5),
        t(3, [["r", "x", [1]], ["r", "z", []]], 6, 7),
    ]
    res = check(h)
    assert res["valid"], res


def test_partial_transaction_is_a_lost_append() -> None:
    # T0 is acknowledged but applied only its append to x; nothing ever reads 1 in y, so there
    # is no edge to a cycle: the final read (T2) must show it missing.
    h = [
        t(0, [["append", "x", 1], ["append", "y", 1]], 0, 1),
        t(1, [["r", "y", []], ["append", "y", 2]], 2, 3),
        t(2, [["r", "x", [1]], ["r", "y", [2]]], 10, 11),
    ]
    res = check(h)
    assert "lost-append" in res["anomaly_types"], res
    assert res["anomaly_totals"]["lost-append"] == 2  # T1's read and the final read miss it
    text = res["anomalies"]["lost-append"][0]["explanation"]
    assert "T0 appended 1 to y" in text


def test_unacknowledged_appends_may_be_missing() -> None:
    h = [
        t(0, [["append", "x", 1]], 0, None, "info"),
        t(1, [["append", "x", 2]], 0, 1, "fail"),
        t(2, [["r", "x", []]], 10, 11),
    ]
    assert check(h)["valid"]


def test_an_append_concurrent_with_a_read_may_be_missing() -> None:
    h = [
        t(0, [["append", "x", 1]], 0, 5),
        t(1, [["r", "x", []]], 4, 6),
        t(2, [["r", "x", [1]]], 10, 11),
    ]
    assert check(h)["valid"]


def test_a_repeated_append_is_a_harness_bug_not_an_anomaly() -> None:
    import pytest

    h = [t(0, [["append", "x", 1]], 0, 1), t(1, [["append", "x", 1]], 2, 3)]
    with pytest.raises(ValueError, match="twice"):
        check(h)
