"""The watch workload: writers put unique values under ``jw/``; watchers stream every event.

Each watcher follows the whole prefix from the revision the workload started at, reconnecting
(to the next node, from its last revision + 1, as etcd's clientv3 does) when its stream breaks or
stalls. The checker wants every watcher to see the same ordered sequence of revisions, with no
gap, no duplicate, and exactly the committed writes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import grpc

from jepsen.client import Client, ClientError
from jepsen.history import Op
from jepsen.workloads import Worker, Workload
from raftkv.pb.etcdserverpb import rpc_pb2 as pb

__all__ = ["WatchWorkload", "check_watch"]

PREFIX = "jw/"
_STALL_S = 3.0


class _Watcher:
    def __init__(self, wid: int, endpoints: list[str], start_rev: int, progress: Any) -> None:
        self.wid = wid
        self.endpoints = endpoints
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
        i = self.wid
        while not self._stop.is_set():
            ep = self.endpoints[i % len(self.endpoints)]
            i += 1
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
    watchers = 3
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
        for i in range(self.watchers):
            w = _Watcher(i, eps, self.start_rev, self._progress)
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
        for w in self._watchers:
            op = self.rec.invoke(20_000 + w.wid, f"watcher{w.wid}", "watch", None, None)
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
    anomalies: dict[str, list[dict[str, Any]]] = {}

    def report(kind: str, text: str) -> None:
        lst = anomalies.setdefault(kind, [])
        if len(lst) < 10:
            lst.append({"explanation": text})

    puts = [o for o in ops if o.f == "put"]
    attempted = {(o.key, str(o.value)) for o in puts if o.status in ("ok", "info")}
    committed = {o.output: (o.key, str(o.value)) for o in puts if o.status == "ok"}
    streams = [o for o in ops if o.f == "watch" and o.status == "ok"]
    by_rev: dict[int, tuple[str, str, str, int]] = {}
    total = 0
    for s in streams:
        name = s.node
        out = s.output
        evs = out["events"]
        total += len(evs)
        compactions = sorted(out["compactions"])
        prev = out["start_rev"] - 1
        seen_revs: set[int] = set()
        for rev, key, value, _typ in evs:
            if rev in seen_revs:
                report("duplicate", f"{name} saw revision {rev} ({key}={value}) twice")
            elif rev < prev:
                report("out-of-order", f"{name} saw revision {rev} after revision {prev}")
            elif rev > prev + 1 and not any(prev < c <= rev for c in compactions):
                missing = list(range(prev + 1, rev))
                report(
                    "gap",
                    f"{name} jumped from revision {prev} to {rev}: missed {missing[:10]}"
                    + (f" (+{len(missing) - 10} more)" if len(missing) > 10 else ""),
                )
            seen_revs.add(rev)
            prev = max(prev, rev)
            if (key, value) not in attempted:
                report("phantom", f"{name} saw {key}={value} at revision {rev}, never written")
            if rev in committed and committed[rev] != (key, value):
                k2, v2 = committed[rev]
                report(
                    "wrong-event",
                    f"{name} saw {key}={value} at revision {rev}, but the put "
                    f"acknowledged at revision {rev} was {k2}={v2}",
                )
            other = by_rev.get(rev)
            if other is None:
                by_rev[rev] = (key, value, name, rev)
            elif other[:2] != (key, value):
                report(
                    "divergent",
                    f"at revision {rev} {other[2]} saw {other[0]}={other[1]} but "
                    f"{name} saw {key}={value}",
                )
        final = out["final_rev"]
        if prev < final:
            report("incomplete", f"{name} stopped at revision {prev}, the cluster is at {final}")
        for rev, (key, value) in sorted(committed.items()):
            if rev not in seen_revs and rev <= prev and not any(c > rev for c in compactions):
                report(
                    "lost", f"{name} never saw the acknowledged put {key}={value} at revision {rev}"
                )
    if not streams:
        report("no-watchers", "no watcher stream was recorded")
    return {
        "valid": not anomalies,
        "anomaly_types": sorted(anomalies),
        "anomalies": anomalies,
        "stats": {
            "puts_ok": len(committed),
            "watchers": len(streams),
            "events": total,
            "reconnects": sum(s.output["reconnects"] for s in streams),
        },
    }
