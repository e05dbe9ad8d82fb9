"""FakeNode: a one-member :class:`~raftkv.server.api.NodeApi` without Raft, for servicer tests.

Proposals are encoded with the real command codec and applied at once by the real
:class:`~raftkv.kv.state_machine.KVStateMachine` over a :class:`~raftkv.kv.backend.MemoryBackend`,
each as the next log index, so the servicers see exactly the responses and ``KVError``s the
real apply path produces. The barrier returns at once (a single member is always up to date).

Leases: the lessor's answers come from the lease table alone (a lease never expires), with
``min_ttl_s`` as the minimum TTL and ids counted up from ``next_lease_id``.

Knobs for failure tests, all plain attributes:

* ``leader``: the known leader's member id; 0 makes proposals and barriers raise
  ``NoLeaderError`` at once (a real node waits for its deadline first) and health NOT_SERVING.
* ``stalled``: proposals, barriers and leader moves never return, whatever their timeout, so a
  test can check that the servicer's own deadline ends the call.
* ``fail_with``: raised by the next proposal or barrier (then cleared).
* ``alarm_list``: extra active alarms, ``(member id, AlarmType value)``; NOSPACE is also
  reported while the backend is over ``quota_bytes``.

Apply listeners (``add_apply_listener``) run right after each proposal is applied. What the
node was asked is recorded in ``proposals``, ``barriers``, ``defragments`` and
``moves``. Use it from one event loop (the MemoryBackend is single-threaded).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from raftkv.kv.backend import MemoryBackend
from raftkv.kv.codec import Command, encode_command
from raftkv.kv.errors import KVError
from raftkv.kv.mvcc import MVCCStore
from raftkv.kv.state_machine import DEFAULT_QUOTA_BYTES, KVStateMachine
from raftkv.kv.types import Request, Response
from raftkv.server.api import Member, NodeStatus
from raftkv.server.errors import BadLeaderTransfereeError, NoLeaderError, NotLeaderError

if TYPE_CHECKING:
    from raftkv.server.api import NodeApi

__all__ = ["FakeNode"]

DEFAULT_MEMBER_ID = 0x8E9E05C52164694D
"""etcd's id for a default single member (--name default on localhost)."""
DEFAULT_CLUSTER_ID = 0xCDF818194E3A8C32
_NOSPACE = 1  # rpc_pb2.AlarmType.NOSPACE (raftkv.testing does not import the protobufs)


@dataclass(frozen=True, slots=True)
class _Entry:
    index: int
    term: int
    kind: int
    data: bytes


class FakeNode:
    def __init__(
        self,
        *,
        member_id: int = DEFAULT_MEMBER_ID,
        cluster_id: int = DEFAULT_CLUSTER_ID,
        name: str = "default",
        peer_urls: Sequence[str] = ("http://localhost:2380",),
        client_urls: Sequence[str] = ("http://localhost:2379",),
        other_members: Sequence[Member] = (),
        raft_term: int = 2,
        quota_bytes: int = DEFAULT_QUOTA_BYTES,
        snapshot_chunk_bytes: int = 1 << 20,
    ) -> None:
        self.backend = MemoryBackend()
        self.state_machine = KVStateMachine(self.backend, quota_bytes=quota_bytes)
        self.quota_bytes = quota_bytes
        self.snapshot_chunk_bytes = snapshot_chunk_bytes
        self._member_id = member_id
        self._cluster_id = cluster_id
        self._members = [
            Member(member_id, name, tuple(peer_urls), tuple(client_urls)),
            *other_members,
        ]
        self.term = raft_term
        self.index = 1  # etcd's first entry: the leader's empty entry of its term
        self.leader = member_id
        self.stalled = False
        self.fail_with: BaseException | None = None
        self.alarm_list: list[tuple[int, int]] = []
        self.proposals: list[Request] = []
        self.barriers = 0
        self.defragments = 0
        self.moves: list[int] = []
        self.min_ttl_s = 2
        self.next_lease_id = 0x694D77AA9E380000
        self._never = asyncio.Event()
        self._listeners: list[Callable[[], None]] = []

    # -- NodeApi --------------------------------------------------------------------------------

    @property
    def member_id(self) -> int:
        return self._member_id

    @property
    def cluster_id(self) -> int:
        return self._cluster_id

    @property
    def raft_term(self) -> int:
        return self.term

    @property
    def store(self) -> MVCCStore:
        return self.state_machine.store

    async def _enter(self) -> None:
        if self.stalled:
            await self._never.wait()
        if self.fail_with is not None:
            exc, self.fail_with = self.fail_with, None
            raise exc
        if not self.leader:
            raise NoLeaderError()

    async def propose(self, request: Request, *, timeout_s: float) -> Response:
        await self._enter()
        self.proposals.append(request)
        self.index += 1
        data = encode_command(Command(self.index, request))
        results = self.state_machine.apply([_Entry(self.index, self.term, 0, data)])
        for listener in list(self._listeners):
            listener()
        result = results[0].result
        if isinstance(result, KVError):
            raise result
        return result

    async def linearizable_barrier(self, *, timeout_s: float) -> None:
        await self._enter()
        self.barriers += 1

    # -- leases: no clocks here; a lease lives until it is revoked ---------------------------

    @property
    def min_lease_ttl_s(self) -> int:
        return self.min_ttl_s

    def new_lease_id(self) -> int:
        self.next_lease_id += 1
        return self.next_lease_id

    async def lease_keep_alive(self, lease_id: int, *, timeout_s: float) -> int:
        await self._enter()
        if self.leader != self._member_id:
            raise NotLeaderError()
        return self._lease_ttl(lease_id) or 0

    async def lease_time_to_live(self, lease_id: int, *, timeout_s: float) -> int:
        await self._enter()
        if self.leader != self._member_id:
            raise NotLeaderError()
        ttl = self._lease_ttl(lease_id)
        return -1 if ttl is None else ttl

    def _lease_ttl(self, lease_id: int) -> int | None:
        return dict(self.state_machine.leases()).get(lease_id)

    def status(self) -> NodeStatus:
        size = self.backend.size_bytes()
        return NodeStatus(
            member_id=self._member_id,
            cluster_id=self._cluster_id,
            leader=self.leader,
            raft_term=self.term,
            raft_index=self.index,
            raft_applied_index=self.index,
            commit_index=self.index,
            is_learner=False,
            db_size_bytes=size,
            db_size_in_use_bytes=size,
            revision=self.store.current_revision(),
        )

    def members(self) -> Sequence[Member]:
        return tuple(self._members)

    def add_apply_listener(self, listener: Callable[[], None]) -> Callable[[], None]:
        self._listeners.append(listener)

        def remove() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return remove

    async def move_leader(self, target_member_id: int, *, timeout_s: float) -> None:
        if self.stalled:
            await self._never.wait()
        if self.leader != self._member_id:
            raise NotLeaderError()
        if target_member_id not in {m.id for m in self._members if not m.is_learner}:
            raise BadLeaderTransfereeError()
        self.moves.append(target_member_id)
        self.leader = target_member_id

    async def snapshot_stream(self) -> AsyncIterator[bytes]:
        for chunk in self.state_machine.snapshot_chunks(self.snapshot_chunk_bytes):
            yield chunk

    async def defragment(self) -> None:
        self.defragments += 1

    # -- optional: alarms (raftkv.server.maintenance_service.AlarmSource) -----------------------

    def alarms(self) -> Sequence[tuple[int, int]]:
        active = list(self.alarm_list)
        if self.backend.size_bytes() > self.quota_bytes:
            active.append((self._member_id, _NOSPACE))
        return active


if TYPE_CHECKING:

    def _is_a_node(node: FakeNode) -> NodeApi:  # mypy proves FakeNode implements NodeApi
        return node
