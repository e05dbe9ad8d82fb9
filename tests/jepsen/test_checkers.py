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


def test_register_reports_every_bad_key() -> None:
    h = []
    for key in ("a", "b", "c"):
        h += [
            op("write", key, 1, 0, 1, process=0),
            op("write", key, 2, 2, 3, process=0),
            op("read", key, None, 4, 5, output=1, process=1),
        ]
    h.append(op("read", "d", None, 0, 1, output=None, process=2))
    res = register_check(h)
    assert not res["valid"]
    assert res["anomaly_totals"] == {"nonlinearizable": 3}
    assert [a["key"] for a in res["anomalies"]["nonlinearizable"]] == ["a", "b", "c"]
    assert res["stats"]["bad_keys"] == 3
    assert "a, b, c" in res["summary"]


def test_register_values_are_unique_per_key() -> None:
    # Values drawn from a small range let a lost write hide behind a later write of the same
    # value; every value written (put or CAS) is fresh.
    import random

    from jepsen.workloads import Worker

    class Fake:
        def __init__(self) -> None:
            self.values: list[tuple[str, str]] = []

        def get(self, key: str, **_kw: Any) -> tuple[None, int, int]:
            return None, 0, 1

        def put(self, key: str, value: str) -> int:
            self.values.append((key, value))
            return 1

        def txn(self, compares: Any, success: Any) -> Any:
            for o in success:
                self.values.append((o.request_put.key.decode(), o.request_put.value.decode()))

            class R:
                succeeded = False

            return R()

    reg = Register(Recorder(), {}, 1)
    fake = Fake()
    w = Worker(0, 1, "n1", fake, random.Random(5))  # type: ignore[arg-type]
    for _ in range(500):
        reg.op(w)
    assert len(fake.values) > 200
    assert len(set(fake.values)) == len(fake.values)
    cas = [o for o in reg.rec.ops if o.f == "cas"]
    written = {o.value for o in reg.rec.ops if o.f == "write"} | {o.value[1] for o in cas}
    assert any(o.value[0] in written for o in cas)  # CAS expects values that were written


def test_register_lost_write_of_a_unique_value() -> None:
    # The write of 7 is acknowledged, then the key reads 5 again: with unique values no later
    # write of 5 can explain it.
    h = [
        op("write", "k", 5, 0, 1, process=0),
        op("write", "k", 7, 2, 3, process=1),
        op("write", "k", 9, 4, 5, status="info", process=2),
        op("read", "k", None, 6, 7, output=5, process=3),
    ]
    assert not register_check(h)["valid"]


def test_anomaly_totals_are_never_truncated() -> None:
    h = [op("put", "jw/1", 10, 0, 1, output=5)]
    evs = [[5, "jw/1", "10", "put"]] + [[100 + i, "jw/x", str(i), "put"] for i in range(25)]
    w = op(
        "watch",
        None,
        None,
        4,
        5,
        output={
            "events": evs,
            "compactions": [],
            "reconnects": 0,
            "start_rev": 5,
            "final_rev": 5,
            "errors": [],
        },
    )
    res = check_watch([*h, w])
    assert res["anomaly_totals"]["phantom"] == 25
    assert len(res["anomalies"]["phantom"]) == 10
