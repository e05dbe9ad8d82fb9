"""The client workload: Jepsen-style processes making puts, compare-and-sets and linearizable
reads, and the history they record.

Each client has at most one op outstanding. A write or cas is proposed on the node the client
picked: ``NotLeader`` (or any ``ProposalDropped``) is a definite failure; otherwise the op
completes when *that* node applies it (``ok``, or ``fail`` for a cas whose compare failed). A
read asks that node for a ReadIndex and completes with the local value once the node has
applied up to the read index. A crash of the node or a timeout makes the outcome unknown
(``info``), and the client carries on as a new process, as in Jepsen.
"""

from __future__ import annotations

from dataclasses import dataclass

from raftkv.errors import NotLeader, ProposalDropped
from raftkv.raft.types import NodeId
from raftkv.sim.chooser import Chooser, pick
from raftkv.sim.kv import KVStore, encode_cas, encode_put
from raftkv.sim.node import SimNode
from raftkv.sim.options import SimOptions
from raftkv.sim.stats import Stats
from raftkv.testing.history import History, Op, OpKind

__all__ = ["Client", "PendingOp", "Workload"]


@dataclass(slots=True)
class PendingOp:
    request_id: int
    client: Client
    handle: int
    kind: OpKind
    key: str
    node: NodeId
    deadline: int
    invoke_time: int
    value: int | None = None
    expected: int | None = None


@dataclass(slots=True)
class Client:
    """A Jepsen-style client: one op outstanding at most; a new process id after an info."""

    id: int
    process: int
    hint: NodeId = 0
    """The leader a NotLeader answer last pointed at."""
    op: PendingOp | None = None


class Workload:
    def __init__(self, opts: SimOptions, chooser: Chooser, stats: Stats) -> None:
        self.opts = opts
        self.chooser = chooser
        self.stats = stats
        self.history = History()
        self.htime = 0
        self.clients = [Client(i, i) for i in range(opts.clients)]
        self.next_process = opts.clients
        self.pending: dict[int, PendingOp] = {}
        self.next_request = 1
        self.next_value = 1
        self.keys = tuple(f"k{i}" for i in range(opts.keys))
        self.known: dict[str, list[int]] = {k: [] for k in self.keys}
        """Recent values seen per key: what a cas expects."""
        self.notes: list[str] = []
        """Completed-op descriptions, for verbose traces (filled only if ``verbose``)."""
        self.verbose = False

    def time(self) -> int:
        """History time: a logical clock that ticks at every invocation and completion."""
        self.htime += 1
        return self.htime

    # -- invoking ---------------------------------------------------------------------------

    def choose(
        self, client: Client, live: list[SimNode], by_id: dict[NodeId, SimNode]
    ) -> tuple[SimNode, OpKind, str]:
        """Which node the client talks to, and what it asks."""
        chooser, opts = self.chooser, self.opts
        hinted = by_id.get(client.hint)
        if hinted is not None and hinted.alive and chooser.chance(opts.leader_hint_prob):
            node = hinted
        else:
            node = pick(chooser, live)
        kind: OpKind
        if chooser.chance(opts.read_frac):
            kind = "read"
        else:
            kind = "cas" if chooser.chance(opts.cas_frac) else "write"
        return node, kind, pick(chooser, self.keys)

    def invoke(self, client: Client, node: SimNode, kind: OpKind, key: str, now: int) -> None:
        if client.op is not None:
            return
        if kind == "cas" and not self.known[key]:
            kind = "write"
        rid = self.next_request
        self.next_request += 1
        history = self.history
        data = b""
        value: int | None = None
        expected: int | None = None
        if kind == "read":
            handle = history.invoke(client.process, "read", key, time=self.time())
        elif kind == "write":
            value = self._new_value()
            handle = history.invoke(client.process, "write", key, value, time=self.time())
            data = encode_put(rid, key, value)
        else:
            value = self._new_value()
            expected = self._pick_expected(key)
            handle = history.invoke(client.process, "cas", key, value, expected, time=self.time())
            data = encode_cas(rid, key, expected, value)
        invoked = self.htime
        try:
            if kind == "read":
                node.raw.read_index(str(rid).encode())
            else:
                node.raw.propose(data)
        except ProposalDropped as exc:  # NotLeader included: definitely not appended
            if isinstance(exc, NotLeader):
                client.hint = exc.leader
            history.fail(handle, self.time())
            self.stats.ops_fail += 1
            self._note(client, f"{kind} {key} {value} on n{node.id}: fail ({exc})")
            return
        deadline = now + self.opts.op_timeout_ticks
        op = PendingOp(rid, client, handle, kind, key, node.id, deadline, invoked, value, expected)
        client.op = op
        self.pending[rid] = op
        self._note(client, f"invoke r{rid} {kind} {key} {value} exp={expected} on n{node.id}")

    def _new_value(self) -> int:
        value = self.next_value
        self.next_value += 1
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

    def _note(self, client: Client, text: str) -> None:
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

    def node_crashed(self, node_id: NodeId) -> None:
        for op in [op for op in self.pending.values() if op.node == node_id]:
            self._info(op, f"n{node_id} crashed")

    def expire(self, now: int) -> None:
        for client in self.clients:
            op = client.op
            if op is not None and op.deadline <= now:
                self._info(op, "timeout")

    def applied(self, node_id: NodeId, request_id: int, success: bool, kv: KVStore) -> None:
        """``node_id`` applied the command of ``request_id``."""
        op = self.pending.get(request_id)
        if op is None or op.node != node_id:
            return
        self._finish(op)
        time = self.time()
        if success:
            self.history.ok(op.handle, time)
            self.stats.ops_ok += 1
            self._learn(op.key, kv.get(op.key))
        else:
            self.history.fail(op.handle, time)
            self.stats.ops_fail += 1
        self._note(op.client, f"r{op.request_id} {'ok' if success else 'fail (compare)'}")

    def read_ready(self, node_id: NodeId, context: bytes, kv: KVStore) -> None:
        """``node_id`` has applied up to the read index of the read ``context``."""
        op = self.pending.get(int(context))
        if op is None or op.node != node_id:
            return
        self._finish(op)
        value = kv.get(op.key)
        self.history.ok(op.handle, self.time(), value)
        self.stats.ops_ok += 1
        self._learn(op.key, value)
        self._note(op.client, f"r{op.request_id} read -> {value} at applied {kv.applied}")

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
