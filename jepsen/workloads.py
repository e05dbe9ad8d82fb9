"""Workloads: what the clients do, and how the history is checked.

A workload is a class registered in :data:`WORKLOADS`. The runner calls :meth:`Workload.op` from
each worker thread at the requested rate, :meth:`Workload.final` once the faults are healed, and
:meth:`Workload.check` on the finished history. A lock workload can be added the same way.
"""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from jepsen import elle
from jepsen.anomalies import Anomalies
from jepsen.client import Client, ClientError, Definite, cmp_mod, cmp_value, op_get, op_put
from jepsen.history import Op, Recorder
from raftkv.testing.history import History
from raftkv.testing.linearizability import check_key

__all__ = ["Append", "Register", "SetWorkload", "Worker", "Workload", "check_register"]


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
    workers_per_node = 2
    """Client threads per node when ``--concurrency`` is not given."""
    read_timeout_s: float | None = None
    """A shorter deadline for reads (None: the op timeout): a read that waits long on a node
    that lost its quorum is a wasted client; failing it fast keeps clients on live nodes."""

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
    """Per-key read / write / compare-and-set; checked for linearizability per key.

    Every value written to a key is unique (drawn from one counter), so a read names the write
    it observes: a lost write can not hide behind a later write of the same value. A CAS
    expects one of the last values written to its key, so that some of them succeed.
    """

    name = "register"
    keys_active = 4
    ops_per_window = 300
    workers_per_node = 8
    read_timeout_s = 1.0

    def __init__(self, recorder: Recorder, endpoints: dict[str, str], seed: int) -> None:
        super().__init__(recorder, endpoints, seed)
        self._started = itertools.count()
        self._recent: dict[str, list[int]] = {}

    def _written(self, key: str, value: int) -> None:
        with self._lock:
            lst = self._recent.setdefault(key, [])
            lst.append(value)
            del lst[:-4]

    def _expected(self, w: Worker, key: str) -> int:
        with self._lock:
            lst = list(self._recent.get(key, ()))
        return w.rng.choice(lst) if lst else 0

    def op(self, w: Worker) -> None:
        n = next(self._started)
        key = f"jr/{n // self.ops_per_window + w.rng.randrange(self.keys_active)}"
        roll = w.rng.random()
        c = w.client
        if roll < 0.5:

            def read() -> tuple[str, Any]:
                v, _mod, _rev = c.get(key, timeout_s=self.read_timeout_s)
                return "ok", None if v is None else int(v)

            self._do(w, "read", key, None, read, idempotent=True)
        elif roll < 0.75:
            v = self.next_value()
            self._written(key, v)
            self._do(w, "write", key, v, lambda: ("ok", c.put(key, str(v)) and None))
        else:
            exp, new = self._expected(w, key), self.next_value()
            self._written(key, new)

            def cas() -> tuple[str, Any]:
                r = c.txn([cmp_value(key, str(exp))], [op_put(key, str(new))])
                return ("ok" if r.succeeded else "fail"), None

            self._do(w, "cas", key, [exp, new], cas)

    def check(self, ops: Sequence[Op]) -> dict[str, Any]:
        return check_register(ops)


def _register_history(ops: Sequence[Op]) -> dict[str, list[Any]]:
    """The history of each key, in the linearizability checker's terms."""
    h = History()
    us = 1_000_000
    for op in sorted((o for o in ops if o.f in ("read", "write", "cas")), key=lambda o: o.invoke):
        assert op.key is not None
        t0 = int(op.invoke * us)
        if op.f == "cas":
            handle = h.invoke(op.process, "cas", op.key, op.value[1], op.value[0], time=t0)
        elif op.f == "write":
            handle = h.invoke(op.process, "write", op.key, op.value, time=t0)
        else:
            handle = h.invoke(op.process, "read", op.key, time=t0)
        t = int((op.complete if op.complete is not None else op.invoke) * us)
        if op.status == "ok":
            h.ok(handle, t, op.output if op.f == "read" else None)
        elif op.status == "fail":
            h.fail(handle, t)
        else:
            h.info(handle, None)
    h.finish(0)
    by_key: dict[str, list[Any]] = {}
    for hop in h.ops():
        by_key.setdefault(hop.key, []).append(hop)
    return by_key


def check_register(ops: Sequence[Op]) -> dict[str, Any]:
    """Linearizability of every key; every key that is not linearizable is reported."""
    t0 = time.monotonic()
    found = Anomalies()
    checked = 0
    bad: list[str] = []
    undecided: list[str] = []
    by_key = _register_history(ops)
    for key in sorted(by_key):
        res = check_key(key, by_key[key])
        checked += res.ops_checked
        if res.timed_out:
            undecided.append(key)
            found.report("unknown (checker budget exhausted)", res.explanation, key=key)
        elif not res.ok:
            bad.append(key)
            found.report("nonlinearizable", res.explanation, key=key)
    if bad:
        summary = f"not linearizable: {len(bad)} of {len(by_key)} keys: {', '.join(bad[:20])}"
    elif undecided:
        summary = f"unknown: {len(undecided)} keys exceeded the search budget"
    else:
        summary = f"linearizable: {checked} ops over {len(by_key)} keys"
    stats = {
        "ops_checked": checked,
        "keys": len(by_key),
        "bad_keys": len(bad),
        "checker_seconds": round(time.monotonic() - t0, 3),
    }
    return found.verdict(stats, unknown=bool(undecided) and not bad, summary=summary)


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

    final_batch = 64
    """Keys per transaction of the final read (etcd refuses more than 128 ops in one Txn)."""

    def __init__(self, recorder: Recorder, endpoints: dict[str, str], seed: int) -> None:
        super().__init__(recorder, endpoints, seed)
        self._started = itertools.count()
        self._keys: set[str] = set()

    def _gen(self, w: Worker) -> list[list[Any]]:
        base = next(self._started) // self.txns_per_window
        mops: list[list[Any]] = []
        for _ in range(w.rng.randint(1, 4)):
            k = f"ja/{base + w.rng.randrange(self.keys_active)}"
            with self._lock:
                self._keys.add(k)
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

    def final(self) -> None:
        """Read every key ever touched, after healing: each batch is one read-only txn, so the
        checker sees it as an ordinary transaction that began after every other one ended."""
        keys = sorted(self._keys, key=lambda k: int(k[3:]))
        for i in range(0, len(keys), self.final_batch):
            _final_read(self.rec, self.endpoints, keys[i : i + self.final_batch], 10_000 + i)

    def check(self, ops: Sequence[Op]) -> dict[str, Any]:
        t0 = time.monotonic()
        res = elle.check(elle.txns_from_ops(ops))
        res["stats"]["checker_seconds"] = round(time.monotonic() - t0, 3)
        return res


def _final_read(rec: Recorder, endpoints: dict[str, str], keys: list[str], process: int) -> None:
    """One read-only txn of ``keys``, tried on every node in turn until one answers."""
    mops: list[list[Any]] = [["r", k, None] for k in keys]
    for attempt in range(30):
        for name, ep in endpoints.items():
            op = rec.invoke(process + attempt * 1000, name, "txn", None, mops)
            try:
                with Client(ep, timeout_s=5.0) as c:
                    snap = c.txn([], [op_get(k) for k in keys])
            except ClientError as e:
                rec.complete(op, "fail", error=f"final read: {e}")
                continue
            out = [
                ["r", k, _decode_list(rows[0][1]) if rows else []]
                for k, rows in zip(keys, snap.ranges, strict=True)
            ]
            rec.complete(op, "ok", out)
            return
        time.sleep(1.0)


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
        found = Anomalies()
        if lost:
            text = f"{len(lost)} acknowledged adds missing from the final read: {lost[:20]}"
            found.add("lost", [{"explanation": text, "elements": lost}], len(lost))
        if unexpected:
            text = (
                f"{len(unexpected)} elements read that were never added "
                f"(or whose add failed): {unexpected[:20]}"
            )
            found.add(
                "unexpected", [{"explanation": text, "elements": unexpected}], len(unexpected)
            )
        return found.verdict(
            {
                "adds_ok": len(ok),
                "adds_info": sum(o.status == "info" for o in adds),
                "info_recovered": len((attempted - ok) & seen),
                "final_size": len(seen),
                "lost": len(lost),
                "unexpected": len(unexpected),
            }
        )
