"""The client workload: Jepsen-style processes sending etcd requests to any member, and the
history they record.

Each client has at most one request outstanding, sent to a member of its choice, which takes it
the way the server does (a follower forwards writes to the leader). Writes are etcd Puts and
DeleteRanges (a delete writes "absent"), compare-and-sets are Txns (compare the value, or that
the key does not exist, then put), linearizable reads are Ranges behind a ReadIndex round, and
serializable reads are Ranges answered from the member's own state at once. The member's answer
decides the op: ok; fail when it certainly did not apply (leader changed, no leader, a compare
that failed); info when the outcome is unknown (request timed out, the member crashed). A client
carries on as a new process after an info, as in Jepsen.

Serializable reads may be stale, so they stay out of the linearizability check; they must still
return a value some client wrote.
"""

from __future__ import annotations

from dataclasses import dataclass

from raftkv.driver import Fail, Resolve
from raftkv.driver.errors import LeaderChangedError, NoLeaderError
from raftkv.kv.codec import Command, encode_command
from raftkv.kv.mvcc import MVCCStore
from raftkv.kv.types import (
    Compare,
    CompareResult,
    CompareTarget,
    DeleteRangeRequest,
    DeleteRangeResponse,
    PutRequest,
    PutResponse,
    RangeRequest,
    Request,
    TxnRequest,
    TxnResponse,
)
from raftkv.raft.types import NodeId
from raftkv.sim.chooser import Chooser, pick
from raftkv.sim.node import SimNode, SimulationError
from raftkv.sim.options import SimOptions
from raftkv.sim.stats import Stats
from raftkv.testing.history import History, Op, OpKind

__all__ = ["PendingOp", "SimClient", "Workload"]

_DELETE_FRAC = 0.15
"""Of the writes, the share sent as DeleteRange."""
_SERIALIZABLE_FRAC = 0.25
"""Of the reads, the share sent as serializable."""


@dataclass(slots=True)
class PendingOp:
    request_id: int
    client: SimClient
    handle: int
    kind: OpKind
    key: str
    node: NodeId
    incarnation: int
    deadline: int
    invoke_time: int
    value: int | None = None
    expected: int | None = None


@dataclass(slots=True)
class SimClient:
    """A Jepsen-style client: one op outstanding at most; a new process id after an info."""

    id: int
    process: int
    op: PendingOp | None = None


def read_value(store: MVCCStore, key: str) -> int | None:
    kvs = store.range(RangeRequest(key=key.encode())).kvs
    return int(kvs[0].value) if kvs else None


def write_request(key: str, value: int | None, expected: int | None, cas: bool) -> Request:
    """The etcd request for a write (``value`` None: delete) or a compare-and-set."""
    k = key.encode()
    if not cas:
        if value is None:
            return DeleteRangeRequest(key=k)
        return PutRequest(key=k, value=str(value).encode())
    if expected is None:  # the key must not exist
        compare = Compare(CompareResult.EQUAL, CompareTarget.VERSION, k, version=0)
    else:
        compare = Compare(CompareResult.EQUAL, CompareTarget.VALUE, k, value=str(expected).encode())
    return TxnRequest(compare=(compare,), success=(PutRequest(key=k, value=str(value).encode()),))


class Workload:
    def __init__(self, opts: SimOptions, chooser: Chooser, stats: Stats) -> None:
        self.opts = opts
        self.chooser = chooser
        self.stats = stats
        self.history = History()
        self.htime = 0
        self.clients = [SimClient(i, i) for i in range(opts.clients)]
        self.next_process = opts.clients
        self.pending: dict[int, PendingOp] = {}
        self.next_request = 1
        self.next_value = 1
        self.keys = tuple(f"k{i}" for i in range(opts.keys))
        self.known: dict[str, list[int]] = {k: [] for k in self.keys}
        """Recent values seen per key: what a cas expects."""
        self.written: dict[str, set[int]] = {k: set() for k in self.keys}
        """Every value a client asked to write, per key: what a read may return."""
        self.notes: list[str] = []
        """Completed-op descriptions, for verbose traces (filled only if ``verbose``)."""
        self.verbose = False

    def time(self) -> int:
        """History time: a logical clock that ticks at every invocation and completion."""
        self.htime += 1
        return self.htime

    # -- invoking ---------------------------------------------------------------------------

    def choose(self, live: list[SimNode]) -> tuple[SimNode, OpKind, str]:
        """Which member the client talks to, and what it asks."""
        chooser, opts = self.chooser, self.opts
        node = pick(chooser, live)
        if chooser.chance(opts.leader_hint_prob):  # ask the member where the leader is
            hinted = [n for n in live if n.id == node.core.leader]
            node = hinted[0] if hinted else node
        kind: OpKind
        if chooser.chance(opts.read_frac):
            kind = "read"
        else:
            kind = "cas" if chooser.chance(opts.cas_frac) else "write"
        return node, kind, pick(chooser, self.keys)

    def invoke(self, client: SimClient, node: SimNode, kind: OpKind, key: str, now: int) -> None:
        if client.op is not None:
            return
        if kind == "read" and self.chooser.chance(_SERIALIZABLE_FRAC):
            self._serializable_read(node, key)
            return
        if kind == "cas" and not self.known[key]:
            kind = "write"
        rid = self.next_request
        self.next_request += 1
        value: int | None = None
        expected: int | None = None
        if kind == "read":
            handle = self.history.invoke(client.process, "read", key, time=self.time())
        else:
            if kind == "cas" or not self.chooser.chance(_DELETE_FRAC):
                value = self._new_value(key)
            if kind == "cas":
                expected = self._pick_expected(key)
            handle = self.history.invoke(
                client.process, kind, key, value, expected, time=self.time()
            )
        deadline = now + self.opts.op_timeout_ticks
        op = PendingOp(
            rid, client, handle, kind, key, node.id, node.incarnation, deadline, self.htime
        )
        op.value, op.expected = value, expected
        client.op = op
        self.pending[rid] = op
        self._note(client, f"invoke r{rid} {kind} {key} {value} exp={expected} on n{node.id}")
        if kind == "read":
            node.request(node.core.read(rid))
        else:
            request = write_request(key, value, expected, kind == "cas")
            node.request(node.core.propose(rid, encode_command(Command(rid, request))))

    def _serializable_read(self, node: SimNode, key: str) -> None:
        value = read_value(node.sm.store, key)
        if value is not None and value not in self.written[key]:
            raise SimulationError(
                f"n{node.id}: serializable read of {key} returned {value}, which no client wrote"
            )
        self.stats.ops_ok += 1

    def _new_value(self, key: str) -> int:
        value = self.next_value
        self.next_value += 1
        self.written[key].add(value)
        return value

    def _pick_expected(self, key: str) -> int | None:
        values = self.known[key]
        if self.chooser.chance(0.7):
            return values[-1]
        return pick(self.chooser, values)

    def _learn(self, key: str, value: int | None) -> None:
        if value is None:
            return
        values = self.known[key]
        if not values or values[-1] != value:
            values.append(value)
            if len(values) > 8:
                del values[0]

    def _note(self, client: SimClient, text: str) -> None:
        if self.verbose:
            self.notes.append(f"client {client.id} p{client.process} h{self.htime}: {text}")

    # -- completing -------------------------------------------------------------------------

    def _finish(self, op: PendingOp) -> None:
        del self.pending[op.request_id]
        op.client.op = None

    def _info(self, op: PendingOp, why: str) -> None:
        self._finish(op)
        self.history.info(op.handle, self.time())
        self.stats.ops_info += 1
        client = op.client
        self._note(client, f"r{op.request_id} info ({why})")
        client.process = self.next_process
        self.next_process += 1

    def _fail(self, op: PendingOp, why: str) -> None:
        self._finish(op)
        self.history.fail(op.handle, self.time())
        self.stats.ops_fail += 1
        self._note(op.client, f"r{op.request_id} fail ({why})")

    def node_crashed(self, node_id: NodeId) -> None:
        for op in [op for op in self.pending.values() if op.node == node_id]:
            self._info(op, f"n{node_id} crashed")

    def expire(self, now: int, nodes: dict[NodeId, SimNode]) -> None:
        """Tell the member of every op past its deadline; it says how the op ended."""
        for client in self.clients:
            op = client.op
            if op is None or op.deadline > now:
                continue
            node = nodes[op.node]
            if node.alive and node.incarnation == op.incarnation:
                node.request(node.core.expire(op.request_id))
            if client.op is op:  # the member no longer knew it
                self._info(op, "timeout")

    def outcome(self, node: SimNode, outcome: Resolve | Fail) -> None:
        """The member's answer to a request."""
        op = self.pending.get(outcome.waiter)
        if op is None or op.node != node.id:
            return
        if isinstance(outcome, Fail):
            if isinstance(outcome.error, LeaderChangedError | NoLeaderError):
                self._fail(op, outcome.error.text)
            else:
                self._info(op, outcome.error.text)
            return
        result = outcome.result
        if op.kind == "read":
            self._read_ok(node, op)
        elif result is None or (isinstance(result, TxnResponse) and not result.succeeded):
            self._fail(op, "compare failed" if result is not None else "not applied")
        elif not isinstance(result, PutResponse | DeleteRangeResponse | TxnResponse):
            self._fail(op, f"refused: {result}")
        else:
            self._finish(op)
            self.history.ok(op.handle, self.time())
            self.stats.ops_ok += 1
            self._learn(op.key, op.value)
            self._note(op.client, f"r{op.request_id} ok")

    def _read_ok(self, node: SimNode, op: PendingOp) -> None:
        self._finish(op)
        value = read_value(node.sm.store, op.key)
        self.history.ok(op.handle, self.time(), value)
        self.stats.ops_ok += 1
        self._learn(op.key, value)
        self._note(op.client, f"r{op.request_id} read -> {value} at n{node.id}")

    # -- the history ------------------------------------------------------------------------

    def ops_so_far(self) -> list[Op]:
        """The history up to now with every pending op as info."""
        ops = self.history.ops()
        for op in self.pending.values():
            ops.append(
                Op(
                    process=op.client.process,
                    kind=op.kind,
                    key=op.key,
                    value=op.value,
                    expected=op.expected,
                    output=None,
                    status="info",
                    invoke_time=op.invoke_time,
                    complete_time=None,
                )
            )
        ops.sort(key=lambda op: op.invoke_time)
        return ops

    def final_ops(self) -> list[Op]:
        self.history.finish(self.time())
        return self.history.ops()
