"""Workloads: what the clients do, and how the history is checked.

A workload is a class registered in :data:`WORKLOADS`. The runner calls :meth:`Workload.op` from
each worker thread at the requested rate, :meth:`Workload.final` once the faults are healed, and
:meth:`Workload.check` on the finished history. A lock workload can be added the same way.
"""

from __future__ import annotations

import itertools
import random
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from jepsen import elle
from jepsen.client import Client, ClientError, Definite, cmp_mod, cmp_value, op_get, op_put
from jepsen.history import Op, Recorder
from raftkv.testing.history import History
from raftkv.testing.linearizability import check_history

__all__ = ["Append", "Register", "SetWorkload", "Worker", "Workload"]


@dataclass
class Worker:
    """One client thread: a process id (renewed after an info), bound to one node."""

    index: int
    concurrency: int
    node: str
    client: Client
    rng: random.Random
    process: int = -1

    def __post_init__(self) -> None:
        self.process = self.index

    def crashed(self) -> None:
        self.process += self.concurrency


class Workload:
    name = "?"

    def __init__(self, recorder: Recorder, endpoints: dict[str, str], seed: int) -> None:
        self.rec = recorder
        self.endpoints = endpoints
        self.rng = random.Random(seed)
        self._lock = threading.Lock()
        self._counter = itertools.count(1)

    def next_value(self) -> int:
        with self._lock:
            return next(self._counter)

    def setup(self) -> None:
        """Before the clients start (the cluster is up)."""

    def op(self, w: Worker) -> None:
        raise NotImplementedError

    def final(self) -> None:
        """After the nemesis healed everything and the clients stopped."""

    def stop(self) -> None:
        """Stop background threads (watchers)."""

    def check(self, ops: Sequence[Op]) -> dict[str, Any]:
        raise NotImplementedError

    # helper: run one call, record invoke/complete; returns the op
    def _do(
        self,
        w: Worker,
        f: str,
        key: str | None,
        value: Any,
        call: Callable[[], tuple[str, Any]],
        *,
        idempotent: bool = False,
    ) -> Op:
        op = self.rec.invoke(w.process, w.node, f, key, value)
        try:
            status, output = call()
            self.rec.complete(op, status, output)
        except Definite as e:
            self.rec.complete(op, "fail", error=str(e))
        except ClientError as e:
            if idempotent:
                self.rec.complete(op, "fail", error=str(e))
            else:
                self.rec.complete(op, "info", error=str(e))
                w.crashed()
        return op


# --- register -------------------------------------------------------------------------------


class Register(Workload):
    """Per-key read / write / compare-and-set; checked for linearizability per key."""

    name = "register"
    keys_active = 4
    ops_per_window = 300

    def __init__(self, recorder: Recorder, endpoints: dict[str, str], seed: int) -> None:
        super().__init__(recorder, endpoints, seed)
        self._started = itertools.count()

    def op(self, w: Worker) -> None:
        n = next(self._started)
        key = f"jr/{n // self.ops_per_window + w.rng.randrange(self.keys_active)}"
        roll = w.rng.random()
        c = w.client
        if roll < 0.5:

            def read() -> tuple[str, Any]:
                v, _mod, _rev = c.get(key)
                return "ok", None if v is None else int(v)

            self._do(w, "read", key, None, read, idempotent=True)
        elif roll < 0.75:
            v = w.rng.randrange(5)
            self._do(w, "write", key, v, lambda: ("ok", c.put(key, str(v)) and None))
        else:
            exp, new = w.rng.randrange(5), w.rng.randrange(5)

            def cas() -> tuple[str, Any]:
                r = c.txn([cmp_value(key, str(exp))], [op_put(key, str(new))])
                return ("ok" if r.succeeded else "fail"), None

            self._do(w, "cas", key, [exp, new], cas)

    def check(self, ops: Sequence[Op]) -> dict[str, Any]:
        h = History()
        us = 1_000_000
        for op in sorted(
            (o for o in ops if o.f in ("read", "write", "cas")), key=lambda o: o.invoke
        ):
            assert op.key is not None
            if op.f == "cas":
                handle = h.invoke(
                    op.process, "cas", op.key, op.value[1], op.value[0], time=int(op.invoke * us)
                )
            elif op.f == "write":
                handle = h.invoke(op.process, "write", op.key, op.value, time=int(op.invoke * us))
            else:
                handle = h.invoke(op.process, "read", op.key, time=int(op.invoke * us))
            t = int((op.complete if op.complete is not None else op.invoke) * us)
            if op.status == "ok":
                h.ok(handle, t, op.output if op.f == "read" else None)
            elif op.status == "fail":
                h.fail(handle, t)
            else:
                h.info(handle, None)
        h.finish(0)
        import time

        t0 = time.monotonic()
        res = check_history(h.ops())
        elapsed = time.monotonic() - t0
        anomalies: dict[str, list[dict[str, Any]]] = {}
        if not res.ok:
            kind = "unknown (checker budget exhausted)" if res.timed_out else "nonlinearizable"
            anomalies[kind] = [{"key": res.key, "explanation": res.explanation}]
        return {
            "valid": res.ok,
            "unknown": res.timed_out,
            "anomaly_types": sorted(anomalies),
            "anomalies": anomalies,
            "stats": {"ops_checked": res.ops_checked, "checker_seconds": round(elapsed, 3)},
            "summary": res.explanation if res.ok else res.explanation.splitlines()[0],
        }


# --- list append ------------------------------------------------------------------------------


def _decode_list(s: str | None) -> list[int]:
    return [int(x) for x in s.split()] if s else []


class Append(Workload):
    """List-append transactions over a sliding window of keys, checked by :mod:`jepsen.elle`.

    A transaction first reads every key it touches in one Txn, then commits its appends with a
    second Txn guarded by ``mod_revision == seen`` on all of those keys, so it commits only if
    nothing it read has changed (optimistic concurrency control, as Jepsen's etcd test does).
    """

    name = "append"
    keys_active = 6
    txns_per_window = 250

    def __init__(self, recorder: Recorder, endpoints: dict[str, str], seed: int) -> None:
        super().__init__(recorder, endpoints, seed)
        self._started = itertools.count()

    def _gen(self, w: Worker) -> list[list[Any]]:
        base = next(self._started) // self.txns_per_window
        mops: list[list[Any]] = []
        for _ in range(w.rng.randint(1, 4)):
            k = f"ja/{base + w.rng.randrange(self.keys_active)}"
            if w.rng.random() < 0.5:
                mops.append(["r", k, None])
            else:
                mops.append(["append", k, self.next_value()])
        return mops

    def op(self, w: Worker) -> None:
        mops = self._gen(w)
        keys = sorted({k for _f, k, _v in mops})
        c = w.client
        op = self.rec.invoke(w.process, w.node, "txn", None, mops)
        try:
            snap = c.txn([], [op_get(k) for k in keys])
        except ClientError as e:
            self.rec.complete(op, "fail", error=f"read phase: {e}")
            return
        state: dict[str, list[int]] = {}
        mods: dict[str, int] = {}
        for k, rows in zip(keys, snap.ranges, strict=True):
            state[k] = _decode_list(rows[0][1]) if rows else []
            mods[k] = rows[0][2] if rows else 0
        out: list[list[Any]] = []
        writes: dict[str, list[int]] = {}
        for f, k, v in mops:
            if f == "r":
                out.append([f, k, list(state[k])])
            else:
                state[k].append(v)
                writes[k] = state[k]
                out.append([f, k, v])
        if not writes:
            self.rec.complete(op, "ok", out)
            return
        try:
            r = c.txn(
                [cmp_mod(k, mods[k]) for k in keys],
                [op_put(k, " ".join(map(str, lst))) for k, lst in writes.items()],
            )
        except Definite as e:
            self.rec.complete(op, "fail", error=str(e))
            return
        except ClientError as e:
            self.rec.complete(op, "info", error=str(e))
            w.crashed()
            return
        if r.succeeded:
            self.rec.complete(op, "ok", out)
        else:
            self.rec.complete(op, "fail", error="a key changed since it was read")

    def check(self, ops: Sequence[Op]) -> dict[str, Any]:
        import time

        t0 = time.monotonic()
        res = elle.check(elle.txns_from_ops(ops))
        res["stats"]["checker_seconds"] = round(time.monotonic() - t0, 3)
        return res


# --- set ----------------------------------------------------------------------------------------


class SetWorkload(Workload):
    """Add unique elements (one key each); the final read must hold every acknowledged add."""

    name = "set"

    def op(self, w: Worker) -> None:
        v = self.next_value()
        self._do(
            w, "add", f"js/{v:09d}", v, lambda: ("ok", w.client.put(f"js/{v:09d}", "1") and None)
        )

    def final(self) -> None:
        import time

        for attempt in range(30):
            for name, ep in self.endpoints.items():
                op = self.rec.invoke(10_000 + attempt, name, "read", None, None)
                try:
                    with Client(ep, timeout_s=5.0) as c:
                        rows, _rev = c.range_prefix("js/")
                    self.rec.complete(op, "ok", sorted(int(k[3:]) for k, _v, _m in rows))
                    return
                except ClientError as e:
                    self.rec.complete(op, "fail", error=str(e))
            time.sleep(1.0)

    def check(self, ops: Sequence[Op]) -> dict[str, Any]:
        adds = [o for o in ops if o.f == "add"]
        finals = [o for o in ops if o.f == "read" and o.status == "ok"]
        if not finals:
            return {
                "valid": False,
                "unknown": True,
                "anomaly_types": ["no-final-read"],
                "anomalies": {"no-final-read": [{"explanation": "the final read never succeeded"}]},
                "stats": {"adds": len(adds)},
            }
        seen = set(finals[-1].output)
        ok = {o.value for o in adds if o.status == "ok"}
        attempted = {o.value for o in adds if o.status in ("ok", "info")}
        lost = sorted(ok - seen)
        unexpected = sorted(seen - attempted)
        anomalies: dict[str, list[dict[str, Any]]] = {}
        if lost:
            anomalies["lost"] = [
                {
                    "explanation": f"{len(lost)} acknowledged adds missing from the final read: "
                    f"{lost[:20]}",
                    "elements": lost,
                }
            ]
        if unexpected:
            anomalies["unexpected"] = [
                {
                    "explanation": f"{len(unexpected)} elements read that were never added "
                    f"(or whose add failed): {unexpected[:20]}",
                    "elements": unexpected,
                }
            ]
        return {
            "valid": not anomalies,
            "anomaly_types": sorted(anomalies),
            "anomalies": anomalies,
            "stats": {
                "adds_ok": len(ok),
                "adds_info": sum(o.status == "info" for o in adds),
                "info_recovered": len((attempted - ok) & seen),
                "final_size": len(seen),
            },
        }
