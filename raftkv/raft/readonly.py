"""ReadIndex bookkeeping on the leader (etcd's ReadOnlySafe).

A read request records the commit index at arrival, then waits until a quorum of voters has
answered a heartbeat that carries its context: only then is this node known to have still been
leader when the request arrived, so reading at that index is linearizable. Acknowledging a
later request also confirms every earlier one, so requests are released in arrival order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from raftkv.raft.types import Index, NodeId


@dataclass(slots=True)
class ReadRequest:
    index: Index
    origin: NodeId
    context: bytes
    acks: set[NodeId] = field(default_factory=set)


class ReadOnly:
    def __init__(self) -> None:
        self._pending: dict[bytes, ReadRequest] = {}
        self._queue: list[bytes] = []

    def add_request(self, index: Index, origin: NodeId, context: bytes) -> bool:
        """Returns False if a request with this context is already pending."""
        if context in self._pending:
            return False
        self._pending[context] = ReadRequest(index, origin, context)
        self._queue.append(context)
        return True

    def recv_ack(self, node: NodeId, context: bytes) -> set[NodeId] | None:
        request = self._pending.get(context)
        if request is None:
            return None
        request.acks.add(node)
        return request.acks

    def advance(self, context: bytes) -> list[ReadRequest]:
        """Release the request with ``context`` and every request queued before it."""
        if context not in self._pending:
            return []
        position = self._queue.index(context)
        released = [self._pending.pop(ctx) for ctx in self._queue[: position + 1]]
        del self._queue[: position + 1]
        return released

    def last_pending_context(self) -> bytes:
        return self._queue[-1] if self._queue else b""

    def __len__(self) -> int:
        return len(self._queue)
