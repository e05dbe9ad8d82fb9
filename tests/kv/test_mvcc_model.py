"""Hypothesis stateful test: the MVCC store against a deliberately naive reference model.

The model keeps a full copy of the key space for every revision (a dict per revision) and
computes every answer by brute force. Both backends (memory and LMDB) are checked.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from raftkv_storage import LmdbBackend

from raftkv.kv import Command, KVStateMachine, MemoryBackend, encode_command
from raftkv.kv.errors import (
    CompactedRevisionError,
    FutureRevisionError,
    KeyNotFoundError,
    KVError,
    LeaseNotFoundError,
)
from raftkv.kv.keys import in_range, validate_request
from raftkv.kv.types import (
    CompactionRequest,
    CompactionResponse,
    Compare,
    CompareResult,
    CompareTarget,
    DeleteRangeRequest,
    DeleteRangeResponse,
    EventType,
    KeyValue,
    PutRequest,
    PutResponse,
    RangeRequest,
    RangeResponse,
    Request,
    RequestOp,
    Response,
    ResponseOp,
    SortOrder,
    SortTarget,
    TxnRequest,
    TxnResponse,
)

KEYS = [b"a", b"ab", b"a\x00", b"b", b"b\x00c", b"c", b"\x00", b"\xff"]
keys = st.sampled_from(KEYS)
ends = st.sampled_from([b"", b"", b"\0", b"b", b"c", b"\xff", b"a\x01"])


class Model:
    def __init__(self) -> None:
        self.states: list[dict[bytes, KeyValue]] = [{}, {}]  # index = revision
        self.compacted = 0
        self.events: list[tuple[int, EventType, KeyValue]] = []

    @property
    def rev(self) -> int:
        return len(self.states) - 1

    def range(self, req: RangeRequest, state: dict[bytes, KeyValue] | None = None,
              view: int | None = None) -> RangeResponse:  # fmt: skip
        view = self.rev if view is None else view
        rev = req.revision
        if rev > view:
            raise FutureRevisionError()
        if rev <= 0:
            rev = view
        if rev < self.compacted:
            raise CompactedRevisionError()
        src = state if (state is not None and req.revision <= 0) else self.states[rev]
        kvs = sorted(
            (kv for k, kv in src.items() if in_range(k, req.key, req.range_end)),
            key=lambda kv: kv.key,
        )
        total = len(kvs)
        if req.count_only:
            return RangeResponse(self.rev, (), False, total)
        kvs = [
            kv
            for kv in kvs
            if (not req.min_mod_revision or kv.mod_revision >= req.min_mod_revision)
            and (not req.max_mod_revision or kv.mod_revision <= req.max_mod_revision)
            and (not req.min_create_revision or kv.create_revision >= req.min_create_revision)
            and (not req.max_create_revision or kv.create_revision <= req.max_create_revision)
        ]
        order, target = req.sort_order, req.sort_target
        filtered = (req.min_mod_revision or req.max_mod_revision or req.min_create_revision
                    or req.max_create_revision)  # fmt: skip
        if req.limit and order == SortOrder.NONE and not filtered:
            # etcd 3.4 fetches only limit + 1 keys (in key order) when the order is NONE, and
            # then sorts those by a non-key target: real etcd answers `get a --from-key
            # --limit=1 --sort-by=VERSION` over a (v3), b (v2), c (v1) with b, not c.
            kvs = kvs[: req.limit + 1]
        if order == SortOrder.NONE and target != SortTarget.KEY:
            order = SortOrder.ASCEND
        if order != SortOrder.NONE:
            field = {
                SortTarget.KEY: lambda kv: kv.key,
                SortTarget.VERSION: lambda kv: kv.version,
                SortTarget.CREATE: lambda kv: kv.create_revision,
                SortTarget.MOD: lambda kv: kv.mod_revision,
                SortTarget.VALUE: lambda kv: kv.value,
            }[target]
            kvs = sorted(kvs, key=field, reverse=order == SortOrder.DESCEND)
        more = bool(req.limit) and len(kvs) > req.limit
        if req.limit:
            kvs = kvs[: req.limit]
        if req.keys_only:
            kvs = [KeyValue(kv.key, kv.create_revision, kv.mod_revision, kv.version, b"",
                            kv.lease) for kv in kvs]  # fmt: skip
        return RangeResponse(self.rev, tuple(kvs), more, total)

    def compare(self, c: Compare) -> bool:
        kvs = [kv for k, kv in self.states[-1].items() if in_range(k, c.key, c.range_end)]
        if not kvs:
            if c.target == CompareTarget.VALUE:
                return False
            kvs = [KeyValue(c.key)]
        for kv in kvs:
            a, b = {
                CompareTarget.VERSION: (kv.version, c.version),
                CompareTarget.CREATE: (kv.create_revision, c.create_revision),
                CompareTarget.MOD: (kv.mod_revision, c.mod_revision),
                CompareTarget.LEASE: (kv.lease, c.lease),
                CompareTarget.VALUE: (kv.value, c.value),
                CompareTarget.OTHER: (0, 0),  # etcd 3.4 compares nothing
            }[c.target]
            ok = {
                CompareResult.EQUAL: a == b,
                CompareResult.NOT_EQUAL: a != b,
                CompareResult.GREATER: a > b,  # type: ignore[operator]
                CompareResult.LESS: a < b,  # type: ignore[operator]
                CompareResult.OTHER: True,  # etcd 3.4's compareKV falls through to true
            }[c.result]
            if not ok:
                return False
        return True

    def apply(self, req: Request) -> Response | KVError:
        try:
            validate_request(req)
            return self._apply(req)
        except KVError as exc:
            return exc

    def _apply(self, req: Request) -> Response:
        if isinstance(req, RangeRequest):
            return self.range(req)
        if isinstance(req, CompactionRequest):
            if req.revision <= self.compacted:
                raise CompactedRevisionError()
            if req.revision > self.rev:
                raise FutureRevisionError()
            self.compacted = req.revision
            return CompactionResponse(self.rev)
        work = dict(self.states[-1])
        main = self.rev + 1
        changes: list[tuple[int, EventType, KeyValue]] = []
        if isinstance(req, TxnRequest):
            plan = self._plan(req)
            self._precheck(req, plan)
            resp: Response = self._txn(req, plan, work, main, changes)
        elif isinstance(req, PutRequest):
            resp = self._put(req, work, main, changes)
        elif isinstance(req, DeleteRangeRequest):
            resp = self._delete(req, work, main, changes)
        else:
            raise TypeError(f"the model has no leases: {req!r}")
        if changes:
            self.states.append(work)
            self.events.extend(changes)
        return self._stamp(resp, self.rev)

    def _stamp(self, r: Response, rev: int) -> Response:
        if isinstance(r, TxnResponse):
            inner = tuple(self._stamp(x, rev) for x in r.responses)
            return TxnResponse(rev, r.succeeded, inner)  # type: ignore[arg-type]
        if isinstance(r, PutResponse):
            return PutResponse(rev, r.prev_kv)
        if isinstance(r, DeleteRangeResponse):
            return DeleteRangeResponse(rev, r.deleted, r.prev_kvs)
        if isinstance(r, RangeResponse):
            return RangeResponse(rev, r.kvs, r.more, r.count)
        return r

    def _plan(self, t: TxnRequest) -> list[bool]:
        ok = all(self.compare(c) for c in t.compare)
        out = [ok]
        for op in t.success if ok else t.failure:
            if isinstance(op, TxnRequest):
                out += self._plan(op)
        return out

    def _precheck(self, t: TxnRequest, plan: list[bool]) -> None:
        """etcd's checkRequests: every put of the taken branches (key, then lease), then every
        range."""
        it = iter(plan)
        ops: list[RequestOp] = []

        def walk(t: TxnRequest) -> None:
            for op in t.success if next(it) else t.failure:
                if isinstance(op, TxnRequest):
                    walk(op)
                else:
                    ops.append(op)

        walk(t)
        for op in ops:
            if isinstance(op, PutRequest):
                if (op.ignore_value or op.ignore_lease) and op.key not in self.states[-1]:
                    raise KeyNotFoundError()
                if op.lease:  # no lease exists: raftkv has none yet
                    raise LeaseNotFoundError()
        for op in ops:
            if isinstance(op, RangeRequest):
                if op.revision > self.rev:
                    raise FutureRevisionError()
                if 0 < op.revision < self.compacted:
                    raise CompactedRevisionError()

    def _txn(self, t: TxnRequest, plan: list[bool], work: dict[bytes, KeyValue], main: int,
             changes: list[tuple[int, EventType, KeyValue]]) -> TxnResponse:  # fmt: skip
        it = iter(plan)

        def run(t: TxnRequest) -> TxnResponse:
            ok = next(it)
            out: list[ResponseOp] = []
            for op in t.success if ok else t.failure:
                if isinstance(op, TxnRequest):
                    out.append(run(op))
                elif isinstance(op, PutRequest):
                    out.append(self._put(op, work, main, changes))
                elif isinstance(op, DeleteRangeRequest):
                    out.append(self._delete(op, work, main, changes))
                else:
                    view = main if changes else self.rev
                    out.append(self.range(op, work, view))
            return TxnResponse(0, ok, tuple(out))

        return run(t)

    def _put(self, req: PutRequest, work: dict[bytes, KeyValue], main: int,
             changes: list[tuple[int, EventType, KeyValue]]) -> PutResponse:  # fmt: skip
        prev = work.get(req.key)
        if req.lease:  # no lease exists; etcd's Put looks it up before the key
            raise LeaseNotFoundError()
        if prev is None and (req.ignore_value or req.ignore_lease):
            raise KeyNotFoundError()
        kv = KeyValue(
            req.key,
            prev.create_revision if prev else main,
            main,
            prev.version + 1 if prev else 1,
            prev.value if (prev and req.ignore_value) else req.value,
            prev.lease if (prev and req.ignore_lease) else req.lease,
        )
        work[req.key] = kv
        changes.append((main, EventType.PUT, kv))
        return PutResponse(main, prev if req.prev_kv else None)

    def _delete(self, req: DeleteRangeRequest, work: dict[bytes, KeyValue], main: int,
                changes: list[tuple[int, EventType, KeyValue]]) -> DeleteRangeResponse:  # fmt: skip
        doomed = sorted(k for k in work if in_range(k, req.key, req.range_end))
        prevs = tuple(work.pop(k) for k in doomed)
        for k in doomed:
            changes.append((main, EventType.DELETE, KeyValue(k, mod_revision=main)))
        return DeleteRangeResponse(main, len(doomed), prevs if req.prev_kv else ())


# -- strategies -----------------------------------------------------------------------------------

puts = st.builds(
    PutRequest,
    keys,
    st.sampled_from([b"", b"x", b"yy", b"\x00z"]),
    st.sampled_from([0, 0, 5, 9]),
    st.booleans(),
    st.booleans().map(lambda b: b and False),
    st.just(False),
)
flag_puts = st.builds(PutRequest, keys, st.just(b""), st.just(0), st.booleans(),
                      st.booleans(), st.booleans())  # fmt: skip
deletes = st.builds(DeleteRangeRequest, keys, ends, st.booleans())
compares = st.builds(
    Compare,
    st.sampled_from(list(CompareResult)),
    st.sampled_from(list(CompareTarget)),
    keys,
    version=st.integers(0, 3),
    create_revision=st.integers(0, 12),
    mod_revision=st.integers(0, 12),
    value=st.sampled_from([b"", b"x", b"yy"]),
    lease=st.sampled_from([0, 5]),
    range_end=ends,
)


def ranges(max_rev: int) -> st.SearchStrategy[RangeRequest]:
    return st.builds(
        RangeRequest,
        keys,
        ends,
        st.sampled_from([0, 0, 1, 2]),
        st.integers(-1, max_rev + 1),
        st.sampled_from(list(SortOrder)),
        st.sampled_from(list(SortTarget)),
        st.just(False),
        st.booleans(),
        st.booleans().map(lambda b: b and False) | st.booleans(),
        st.sampled_from([0, 0, 3]),
        st.sampled_from([0, 0, 6]),
        st.sampled_from([0, 0, 2]),
        st.sampled_from([0, 0, 5]),
    )


leaf_ops: st.SearchStrategy[RequestOp] = st.one_of(puts, deletes, ranges(8))
txns = st.builds(
    TxnRequest,
    st.lists(compares, max_size=2).map(tuple),
    st.lists(
        leaf_ops
        | st.builds(
            TxnRequest,
            st.lists(compares, max_size=1).map(tuple),
            st.lists(leaf_ops, max_size=2).map(tuple),
            st.lists(leaf_ops, max_size=2).map(tuple),
        ),
        max_size=3,
    ).map(tuple),
    st.lists(leaf_ops, max_size=3).map(tuple),
)


class MVCCMachine(RuleBasedStateMachine):
    lmdb = False

    def __init__(self) -> None:
        super().__init__()
        self.model = Model()
        self.dir: Path | None = None
        if self.lmdb:
            self.dir = Path(tempfile.mkdtemp(prefix="mvcc-model-"))
            self.backend: LmdbBackend | MemoryBackend = LmdbBackend(self.dir, quota_bytes=32 << 20)
        else:
            self.backend = MemoryBackend()
        self.sm = KVStateMachine(self.backend)
        self.index = 0

    def teardown(self) -> None:
        if isinstance(self.backend, LmdbBackend):
            self.backend.close()
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)

    def run(self, req: Request) -> None:
        self.index += 1

        class E:
            index, term, kind, data = self.index, 1, 0, encode_command(Command(self.index, req))

        (res,) = self.sm.apply([E()])
        want = self.model.apply(req)
        assert res.result == want, f"{req}\n got {res.result}\n want {want}"

    @rule(req=puts)
    def put(self, req: PutRequest) -> None:
        self.run(req)

    @rule(req=flag_puts)
    def put_flags(self, req: PutRequest) -> None:
        self.run(req)

    @rule(req=deletes)
    def delete(self, req: DeleteRangeRequest) -> None:
        self.run(req)

    @rule(req=txns)
    def txn(self, req: TxnRequest) -> None:
        self.run(req)

    @rule(data=st.data())
    def txn_on_live_values(self, data: st.DataObject) -> None:
        """Compares built from a live key's own fields, so EQUAL/GREATER/LESS edges get hit."""
        live = sorted(self.model.states[-1].values(), key=lambda kv: kv.key)
        if not live:
            return
        kv = data.draw(st.sampled_from(live))
        target = data.draw(st.sampled_from(list(CompareTarget)))
        delta = data.draw(st.sampled_from([-1, 0, 1]))
        cmp = Compare(
            data.draw(st.sampled_from(list(CompareResult))),
            target,
            kv.key,
            version=kv.version + delta,
            create_revision=kv.create_revision + delta,
            mod_revision=kv.mod_revision + delta,
            value=kv.value if delta == 0 else kv.value + b"\x00" if delta > 0 else b"",
            lease=kv.lease + delta,
        )
        self.run(TxnRequest((cmp,), (PutRequest(b"then", b"1"),), (PutRequest(b"else", b"2"),)))

    @rule(data=st.data())
    def compact(self, data: st.DataObject) -> None:
        self.run(CompactionRequest(data.draw(st.integers(0, self.model.rev + 1))))

    @rule(data=st.data())
    def range_(self, data: st.DataObject) -> None:
        req = data.draw(ranges(self.model.rev))
        try:
            want: RangeResponse | KVError = self.model.range(req)
        except KVError as exc:
            want = exc
        try:
            got: RangeResponse | KVError = self.sm.store.range(req)
        except KVError as exc:
            got = exc
        assert got == want, f"{req}\n got {got}\n want {want}"

    @precondition(lambda self: self.lmdb)
    @rule()
    def reopen(self) -> None:
        assert isinstance(self.backend, LmdbBackend) and self.dir is not None
        self.backend.close()
        self.backend = LmdbBackend(self.dir, quota_bytes=32 << 20)
        self.sm = KVStateMachine(self.backend)

    @invariant()
    def same_revisions_and_history(self) -> None:
        store = self.sm.store
        assert store.current_revision() == self.model.rev
        assert store.compacted_revision() == self.model.compacted
        start = self.model.compacted + 1
        got = [
            (e.kv.mod_revision, e.type, e.kv)
            for e in store.events(start, b"\0", b"\0", max_events=10**6).events
        ]
        want = [ev for ev in self.model.events if ev[0] >= start]
        assert got == want
        assert self.sm.applied_index() == self.index


SETTINGS = settings(
    max_examples=40,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


class LmdbMVCCMachine(MVCCMachine):
    lmdb = True


TestMVCCMemory = MVCCMachine.TestCase
TestMVCCMemory.settings = SETTINGS
TestMVCCLmdb = LmdbMVCCMachine.TestCase
TestMVCCLmdb.settings = SETTINGS
