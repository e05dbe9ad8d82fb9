"""Watch guarantees on real 3-member clusters under SIGKILLs, restarts and compaction.

Every write goes to one prefix, so the watched history must be exactly the revisions
first..last with no gap (reliable), none twice (unique), increasing (ordered), each txn's
two events in one response (atomic), a resumed watch continuing at last + 1 (resumable), and a
progress notification at R coming only after every event <= R (bookmarkable). Checked for
raftkv.client watches and for the real ``etcdctl watch``.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from raftkv.client import Client, OutcomeUnknown, Txn, Unavailable, WatchCompacted, put

pytestmark = pytest.mark.integration


@pytest.fixture
def low_cluster(make_cluster: Callable[..., Any]) -> Any:
    """A fresh 3-member cluster this module's tests kill and restart. Its ports are below the
    ephemeral range (the launcher's rule), so a port a killed member frees cannot be taken by an
    outgoing connection before the member restarts on it."""
    return make_cluster()


class Recorder(threading.Thread):
    """Consumes a client watch, recording (response index, revision, key) and progress marks."""

    def __init__(self, w: Any) -> None:
        super().__init__(daemon=True)
        self.w = w
        self.responses: list[list[tuple[int, bytes]]] = []
        self.progress: list[tuple[int, int]] = []  # (revision, events seen before it)
        self.error: BaseException | None = None
        self.last = 0

    def run(self) -> None:
        try:
            for resp in self.w:
                if resp.is_progress_notify:
                    self.progress.append((resp.revision, self.last))
                    continue
                self.responses.append([(e.kv.mod_revision, e.kv.key) for e in resp.events])
                self.last = resp.events[-1].kv.mod_revision
        except BaseException as e:
            self.error = e

    def revisions(self) -> list[int]:
        return [rev for r in self.responses for rev, _ in r]


def check_history(rec: Recorder, first: int, last: int, txn_revs: set[int]) -> None:
    evs = [(rev, key) for r in rec.responses for rev, key in r]
    assert len(evs) == len(set(evs)), "unique"
    revs = sorted({rev for rev, _ in evs})
    assert [rev for rev, _ in evs] == sorted(rev for rev, _ in evs), "ordered"
    assert revs == list(range(first, last + 1)), (
        f"reliable: missing {sorted(set(range(first, last + 1)) - set(revs))[:10]}"
    )
    for r in rec.responses:  # atomic: a txn's two events are in one response
        for rev in {rev for rev, _ in r} & txn_revs:
            assert sum(1 for x, _ in r if x == rev) == 2, f"revision {rev} split"
    for rev, seen in rec.progress:  # bookmarkable
        assert seen <= rev


def write_loop(c: Client, stop: threading.Event, acked: list[int], txn_revs: set[int]) -> None:
    i = 0
    while not stop.is_set():
        i += 1
        try:
            if i % 5 == 0:
                r = c.txn(Txn().then(put(f"w/a{i}", "x"), put(f"w/b{i}", "y")))
                txn_revs.add(r.header.revision)
                acked.append(r.header.revision)
            else:
                acked.append(c.put(f"w/{i % 50}", str(i)).header.revision)
        except (OutcomeUnknown, Unavailable):
            time.sleep(0.05)


def test_client_watch_guarantees_under_kills_restarts_and_compaction(low_cluster: Any) -> None:
    cl = low_cluster
    eps = [n.endpoint for n in cl.nodes.values()]
    with Client(eps, timeout_s=5, connect_timeout_s=0.3) as c, Client(eps, timeout_s=5) as wc:
        base = c.put("w/start", "0").header.revision
        w1 = wc.watch("w/", prefix=True, start_revision=base, progress_notify=True)
        w2 = wc.watch("w/", prefix=True, start_revision=base, prev_kv=True)
        recs = [Recorder(w1), Recorder(w2)]
        for r in recs:
            r.start()
        stop = threading.Event()
        acked: list[int] = []
        txn_revs: set[int] = set()
        writer = threading.Thread(target=write_loop, args=(c, stop, acked, txn_revs), daemon=True)
        writer.start()
        t0 = time.monotonic()
        try:
            time.sleep(1.0)
            for _ in range(2):  # SIGKILL the leader, then bring it back
                leader = cl.wait_leader()
                cl.kill(leader)
                time.sleep(1.5)
                cl.start(leader)
                cl.wait_leader(timeout=30)
                time.sleep(0.5)
                w1.request_progress()
            # kill whichever member serves the first watch (forces a resume)
            ep = w1.aio.endpoint
            victim = next(n for n, node in cl.nodes.items() if node.endpoint == ep)
            cl.kill(victim)
            time.sleep(1.5)
            cl.start(victim)
            mid = c.get("w/start").header.revision
            c.compact(mid - 5)
            time.sleep(1.0)
        finally:
            stop.set()
            writer.join(20)
        last = c.get("w/start").header.revision
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(r.last < last and not r.error for r in recs):
            time.sleep(0.1)
        elapsed = time.monotonic() - t0
        for r in recs:
            assert r.error is None, r.error
            check_history(r, base, last, txn_revs)
        assert set(acked) <= set(recs[0].revisions())
        assert w1.resumes >= 1
        print(f"\n{last - base} revisions in {elapsed:.1f} s; resumes {w1.resumes}, {w2.resumes}")
        # a watch from before the compaction point is refused clearly
        with pytest.raises(WatchCompacted):
            for _ in wc.watch("w/", prefix=True, start_revision=base):
                pass
        w1.cancel()
        w2.cancel()


def test_etcdctl_watch_guarantees_under_leader_kill(low_cluster: Any) -> None:
    cl = low_cluster
    eps = [n.endpoint for n in cl.nodes.values()]
    env = dict(os.environ, ETCDCTL_API="3")
    with Client(eps, timeout_s=5, connect_timeout_s=0.3) as c:
        base = c.put("w/start", "0").header.revision
        proc = subprocess.Popen(
            [g_etcdctl(), f"--endpoints={','.join(eps)}", "watch", "--prefix", "w/",
             "--rev", str(base), "-w", "json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
        )  # fmt: skip
        stop = threading.Event()
        acked: list[int] = []
        txn_revs: set[int] = set()
        writer = threading.Thread(target=write_loop, args=(c, stop, acked, txn_revs), daemon=True)
        writer.start()
        try:
            time.sleep(1.0)
            leader = cl.wait_leader()
            cl.kill(leader)
            time.sleep(2.0)
            cl.start(leader)
            cl.wait_leader(timeout=30)
            time.sleep(1.0)
        finally:
            stop.set()
            writer.join(20)
        last = c.get("w/start").header.revision
        lines: list[bytes] = []
        assert proc.stdout is not None
        reader = threading.Thread(
            target=lambda: lines.extend(iter(proc.stdout.readline, b"")),  # type: ignore[union-attr]
            daemon=True,
        )
        reader.start()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not any(
            f'"mod_revision":{last},' in x for x in map(str, lines)
        ):
            time.sleep(0.2)
        proc.terminate()
        proc.wait(10)
        reader.join(5)
        err = proc.stderr.read() if proc.stderr else b""
        for f in (proc.stdout, proc.stderr):
            if f is not None:
                f.close()
    rec = Recorder(None)
    for raw in lines:
        line = raw.decode()
        if not line.startswith("{"):
            continue
        d = json.loads(line)
        evs = d.get("Events") or []
        if evs:
            rec.responses.append([(e["kv"]["mod_revision"], e["kv"]["key"].encode()) for e in evs])
    assert rec.responses, err.decode()
    check_history(rec, base, last, txn_revs)
    assert set(acked) <= set(rec.revisions())


def g_etcdctl() -> str:
    import shutil

    return shutil.which("etcdctl") or "/usr/bin/etcdctl"
