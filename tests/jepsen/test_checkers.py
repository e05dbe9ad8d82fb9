"""Register, set and watch checkers on hand-made histories built from jepsen.history.Op."""

from __future__ import annotations

from typing import Any

from jepsen.history import Op, Recorder
from jepsen.watch import check_watch
from jepsen.workloads import Register, SetWorkload

_n = 0


def op(
    f: str,
    key: str | None,
    value: Any,
    invoke: float,
    complete: float,
    status="ok",
    output: Any = None,
    process: int = 0,
) -> Op:
    global _n
    _n += 1
    return Op(_n, process, "n1", f, key, value, invoke, complete, status, output)


def register_check(ops: list[Op]) -> dict[str, Any]:
    return Register(Recorder(), {}, 1).check(ops)


def test_register_valid() -> None:
    h = [
        op("write", "k", 1, 0, 1, process=0),
        op("read", "k", None, 2, 3, output=1, process=1),
        op("cas", "k", [1, 2], 4, 5, process=0),
        op("read", "k", None, 6, 7, output=2, process=1),
        op("cas", "k", [1, 3], 8, 9, status="fail", process=0),
    ]
    res = register_check(h)
    assert res["valid"], res


def test_register_stale_read() -> None:
    h = [
        op("write", "k", 1, 0, 1, process=0),
        op("write", "k", 2, 2, 3, process=0),
        op("read", "k", None, 4, 5, output=1, process=1),
    ]
    res = register_check(h)
    assert not res["valid"]
    assert res["anomaly_types"] == ["nonlinearizable"]
    assert res["anomalies"]["nonlinearizable"][0]["key"] == "k"


def test_register_lost_write() -> None:
    h = [
        op("write", "k", 1, 0, 1, process=0),
        op("write", "k", 2, 2, 3, process=1),  # acknowledged...
        op("read", "k", None, 4, 5, output=1, process=2),  # ...but gone
        op("read", "k", None, 6, 7, output=1, process=2),
    ]
    assert not register_check(h)["valid"]


def test_register_info_write_may_apply_late() -> None:
    h = [
        op("write", "k", 1, 0, 1, process=0),
        op("write", "k", 2, 2, 3, status="info", process=1),
        op("read", "k", None, 4, 5, output=1, process=2),
        op("read", "k", None, 6, 7, output=2, process=2),
    ]
    assert register_check(h)["valid"]


def set_check(ops: list[Op]) -> dict[str, Any]:
    return SetWorkload(Recorder(), {}, 1).check(ops)


def test_set_lost_and_unexpected() -> None:
    h = [
        op("add", "js/1", 1, 0, 1),
        op("add", "js/2", 2, 0, 1),
        op("add", "js/3", 3, 0, 1, status="info"),
        op("add", "js/4", 4, 0, 1, status="fail"),
        op("read", None, None, 5, 6, output=[1, 4]),
    ]
    res = set_check(h)
    assert res["anomaly_types"] == ["lost", "unexpected"]
    assert res["anomalies"]["lost"][0]["elements"] == [2]
    assert res["anomalies"]["unexpected"][0]["elements"] == [4]


def test_set_valid_with_info() -> None:
    h = [
        op("add", "js/1", 1, 0, 1),
        op("add", "js/2", 2, 0, 1, status="info"),
        op("read", None, None, 5, 6, output=[1, 2]),
    ]
    assert set_check(h)["valid"]


def _watch_ops(streams: list[list[list[Any]]], compactions=()) -> list[Op]:
    puts = [
        op("put", "jw/1", 10, 0, 1, output=5),
        op("put", "jw/2", 11, 1, 2, output=6),
        op("put", "jw/1", 12, 2, 3, output=7),
    ]
    out = list(puts)
    for i, evs in enumerate(streams):
        o = op(
            "watch",
            None,
            None,
            4,
            5,
            output={
                "events": evs,
                "compactions": list(compactions),
                "reconnects": 0,
                "start_rev": 5,
                "final_rev": 7,
                "errors": [],
            },
        )
        o.node = f"watcher{i}"
        out.append(o)
    return out


GOOD = [[5, "jw/1", "10", "put"], [6, "jw/2", "11", "put"], [7, "jw/1", "12", "put"]]


def test_watch_valid() -> None:
    res = check_watch(_watch_ops([GOOD, list(GOOD)]))
    assert res["valid"], res


def test_watch_duplicate_event() -> None:
    dup = [GOOD[0], GOOD[1], GOOD[1], GOOD[2]]
    assert "duplicate" in check_watch(_watch_ops([GOOD, dup]))["anomaly_types"]


def test_watch_gap() -> None:
    gap = [GOOD[0], GOOD[2]]
    res = check_watch(_watch_ops([GOOD, gap]))
    assert "gap" in res["anomaly_types"]
    assert "lost" in res["anomaly_types"]


def test_watch_gap_after_compaction_is_allowed() -> None:
    res = check_watch(_watch_ops([[GOOD[0], GOOD[2]]], compactions=[7]))
    assert res["valid"], res


def test_watch_divergent_and_phantom() -> None:
    other = [GOOD[0], [6, "jw/2", "99", "put"], GOOD[2]]
    found = check_watch(_watch_ops([GOOD, other]))["anomaly_types"]
    assert {"divergent", "phantom", "wrong-event"} <= set(found)


def test_watch_out_of_order_and_incomplete() -> None:
    bad = [GOOD[1], GOOD[0]]
    found = check_watch(_watch_ops([bad]))["anomaly_types"]
    assert "out-of-order" in found
    assert "incomplete" in found
