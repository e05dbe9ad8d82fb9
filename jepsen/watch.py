"""The watch workload: writers put unique values under ``jw/``; watchers stream every event.

Each watcher follows the whole prefix from the revision the workload started at, reconnecting
(from its last revision + 1, as etcd's clientv3 does) when its stream breaks or stalls. Watcher
``i`` is pinned to node ``i`` (modulo the cluster size): each node's watch path is exercised on
its own, including across its restarts and partitions, instead of every watcher drifting to the
same healthy node. The checker wants every watcher to see the same ordered sequence of
revisions, with no gap, no duplicate, and exactly the committed writes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import grpc

from jepsen.anomalies import Anomalies
from jepsen.client import Client, ClientError
from jepsen.history import Op
from jepsen.workloads import Worker, Workload
from raftkv.pb.etcdserverpb import rpc_pb2 as pb

__all__ = ["WatchWorkload", "check_watch"]

PREFIX = "jw/"
_STALL_S = 3.0


class _Watcher:
    def __init__(self, wid: int, endpoint: str, start_rev: int, progress: Any) -> None:
        self.wid = wid
        self.endpoint = endpoint
        self.next_rev = start_rev
        self.events: list[list[Any]] = []  # [revision, key, value, type]
        self.compactions: list[int] = []
        self.reconnects = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._last_event = time.monotonic()
        self._call: Any = None
        self._progress = progress  # callable -> latest acknowledged write revision
        self.thread = threading.Thread(target=self._run, name=f"watcher-{wid}", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self._stop.set()
        call = self._call
        if call is not None:
            call.cancel()
        self.thread.join(timeout=5)

    @property
    def last_rev(self) -> int:
        return self.next_rev - 1

    def _requests(self, done: threading.Event) -> Iterator[pb.WatchRequest]:
        yield pb.WatchRequest(
            create_request=pb.WatchCreateRequest(
                key=PREFIX.encode(),
                range_end=(PREFIX[:-1] + chr(ord(PREFIX[-1]) + 1)).encode(),
                start_revision=self.next_rev,
            )
        )
        done.wait()

    def _run(self) -> None:
        ep = self.endpoint
        while not self._stop.is_set():
            done = threading.Event()
            client = Client(ep)
            try:
                call = client.watch(self._requests(done))
                self._call = call
                self._last_event = time.monotonic()
                guard = threading.Thread(target=self._guard, args=(call, done), daemon=True)
                guard.start()
                for resp in call:  # type: ignore[attr-defined]
                    if resp.compact_revision:
                        self.compactions.append(resp.compact_revision)
                        self.next_rev = max(self.next_rev, resp.compact_revision)
                        break
                    if resp.canceled:
                        self.errors.append(f"canceled: {resp.cancel_reason}")
                        break
                    for ev in resp.events:
                        kv = ev.kv
                        self.events.append(
                            [
                                kv.mod_revision,
                                kv.key.decode(),
                                kv.value.decode(),
                                "delete" if ev.type == 1 else "put",
                            ]
                        )
                        self.next_rev = max(self.next_rev, kv.mod_revision + 1)
                    self._last_event = time.monotonic()
            except grpc.RpcError as e:
                if not self._stop.is_set():
                    code = getattr(e, "code", None)
                    self.errors.append(f"{ep}: {code() if callable(code) else e}")
            finally:
                done.set()
                client.close()
            if not self._stop.is_set():
                self.reconnects += 1
                time.sleep(0.2)

    def _guard(self, call: Any, done: threading.Event) -> None:
        """Cancel a stream that is stalled while acknowledged writes are beyond it."""
        while not done.wait(0.5):
            if self._stop.is_set():
                return
            behind = self._progress() > self.last_rev
            if behind and time.monotonic() - self._last_event > _STALL_S:
                call.cancel()
                return


class WatchWorkload(Workload):
    name = "watch"
    watchers = 0
    """Watcher streams (0: one per node)."""
    keys = 8

    def __init__(self, recorder: Any, endpoints: dict[str, str], seed: int) -> None:
        super().__init__(recorder, endpoints, seed)
        self._watchers: list[_Watcher] = []
        self._acked_rev = 0
        self.start_rev = 0
        self.final_rev = 0

    def _progress(self) -> int:
        return self._acked_rev

    def setup(self) -> None:
        eps = list(self.endpoints.values())
        with Client(eps[0], timeout_s=5.0) as c:
            rev = c.put("jw-start", "1")
        self.start_rev = rev + 1
        for i in range(self.watchers or len(eps)):
            w = _Watcher(i, eps[i % len(eps)], self.start_rev, self._progress)
            self._watchers.append(w)
            w.start()

    def op(self, w: Worker) -> None:
        v = self.next_value()
        key = f"{PREFIX}{v % self.keys}"

        def put() -> tuple[str, Any]:
            rev = w.client.put(key, str(v))
            with self._lock:
                self._acked_rev = max(self._acked_rev, rev)
            return "ok", rev

        self._do(w, "put", key, v, put)

    def final(self) -> None:
        eps = list(self.endpoints.values())
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not self.final_rev:
            for ep in eps:
                try:
                    with Client(ep, timeout_s=5.0) as c:
                        _v, _m, self.final_rev = c.get(PREFIX)
                    break
                except ClientError:
                    continue
            else:
                time.sleep(1)
        with self._lock:
            self._acked_rev = max(self._acked_rev, self.final_rev)
        while time.monotonic() < deadline:
            if all(w.last_rev >= self.final_rev for w in self._watchers):
                break
            time.sleep(0.2)
        self.stop()
        names = list(self.endpoints)
        for w in self._watchers:
            node = names[w.wid % len(names)]
            op = self.rec.invoke(20_000 + w.wid, f"watcher{w.wid}@{node}", "watch", None, None)
            self.rec.complete(
                op,
                "ok",
                {
                    "events": w.events,
                    "compactions": w.compactions,
                    "reconnects": w.reconnects,
                    "start_rev": self.start_rev,
                    "final_rev": self.final_rev,
                    "errors": w.errors[-5:],
                },
            )

    def stop(self) -> None:
        for w in self._watchers:
            w.stop()

    def check(self, ops: Sequence[Op]) -> dict[str, Any]:
        return check_watch(ops)


def check_watch(ops: Sequence[Op]) -> dict[str, Any]:
    """Check watcher streams (``f == "watch"`` ops) against the puts (``f == "put"``)."""
    found = Anomalies()
    puts = [o for o in ops if o.f == "put"]
    attempted = {(o.key, str(o.value)) for o in puts if o.status in ("ok", "info")}
    committed = {o.output: (o.key, str(o.value)) for o in puts if o.status == "ok"}
    streams = [o for o in ops if o.f == "watch" and o.status == "ok"]
    by_rev: dict[int, tuple[str, str, str]] = {}
    for s in streams:
        _check_stream(s.node, s.output, attempted, committed, by_rev, found)
    if not streams:
        found.report("no-watchers", "no watcher stream was recorded")
    return found.verdict(
        {
            "puts_ok": len(committed),
            "watchers": len(streams),
            "events": sum(len(s.output["events"]) for s in streams),
            "reconnects": sum(s.output["reconnects"] for s in streams),
        }
    )


def _check_stream(
    name: str,
    out: dict[str, Any],
    attempted: set[tuple[str | None, str]],
    committed: dict[int, tuple[str | None, str]],
    by_rev: dict[int, tuple[str, str, str]],
    found: Anomalies,
) -> None:
    """One watcher's stream: order, gaps, duplicates, phantoms, divergence, completeness."""
    compactions = sorted(out["compactions"])
    prev = out["start_rev"] - 1
    seen_revs: set[int] = set()
    for rev, key, value, _typ in out["events"]:
        _check_order(name, rev, key, value, prev, seen_revs, compactions, found)
        seen_revs.add(rev)
        prev = max(prev, rev)
        if (key, value) not in attempted:
            found.report("phantom", f"{name} saw {key}={value} at revision {rev}, never written")
        if rev in committed and committed[rev] != (key, value):
            k2, v2 = committed[rev]
            found.report(
                "wrong-event",
                f"{name} saw {key}={value} at revision {rev}, but the put "
                f"acknowledged at revision {rev} was {k2}={v2}",
            )
        other = by_rev.setdefault(rev, (key, value, name))
        if other[:2] != (key, value):
            found.report(
                "divergent",
                f"at revision {rev} {other[2]} saw {other[0]}={other[1]} but {name} saw "
                f"{key}={value}",
            )
    final = out["final_rev"]
    if prev < final:
        found.report("incomplete", f"{name} stopped at revision {prev}, the cluster is at {final}")
    for rev, (key, value) in sorted(committed.items()):
        if rev not in seen_revs and rev <= prev and not any(c > rev for c in compactions):
            found.report(
                "lost", f"{name} never saw the acknowledged put {key}={value} at revision {rev}"
            )


def _check_order(
    name: str,
    rev: int,
    key: str,
    value: str,
    prev: int,
    seen_revs: set[int],
    compactions: list[int],
    found: Anomalies,
) -> None:
    if rev in seen_revs:
        found.report("duplicate", f"{name} saw revision {rev} ({key}={value}) twice")
    elif rev < prev:
        found.report("out-of-order", f"{name} saw revision {rev} after revision {prev}")
    elif rev > prev + 1 and not any(prev < c <= rev for c in compactions):
        missing = list(range(prev + 1, rev))
        found.report(
            "gap",
            f"{name} jumped from revision {prev} to {rev}: missed {missing[:10]}"
            + (f" (+{len(missing) - 10} more)" if len(missing) > 10 else ""),
        )
