"""What the etcd API servicers need from a node, as a Protocol.

The servicers (kv, maintenance, cluster, health) translate protobuf <-> ``raftkv.kv.types``
and errors -> gRPC status; everything about consensus stays behind this interface, which
:class:`raftkv.server.driver.NodeDriver` implements. Keeping it narrow lets the servicers be
tested against a fake node.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from raftkv.kv.mvcc import MVCCStore
from raftkv.kv.types import Request, Response


@dataclass(frozen=True, slots=True)
class Member:
    id: int
    name: str
    peer_urls: tuple[str, ...]
    client_urls: tuple[str, ...]
    is_learner: bool = False


@dataclass(frozen=True, slots=True)
class NodeStatus:
    member_id: int
    cluster_id: int
    leader: int
    """Member id of the leader this node knows, 0 if none."""
    raft_term: int
    raft_index: int
    raft_applied_index: int
    commit_index: int
    is_learner: bool
    db_size_bytes: int
    db_size_in_use_bytes: int
    revision: int


class NodeApi(Protocol):
    @property
    def member_id(self) -> int: ...

    @property
    def cluster_id(self) -> int: ...

    @property
    def raft_term(self) -> int: ...

    @property
    def store(self) -> MVCCStore:
        """The local MVCC store; reads through it are serializable (possibly stale)."""
        ...

    async def propose(self, request: Request, *, timeout_s: float) -> Response:
        """Replicate a write (Put, DeleteRange, Txn, Compaction) and return its applied result.

        On a follower the request is forwarded to the leader. Raises a ``raftkv.kv.errors``
        KVError for etcd-level failures (its message is etcd's text), ``NoLeaderError`` when no
        leader is known, ``RequestTimeoutError`` when the outcome is unknown at the deadline,
        ``LeaderChangedError`` when the entry was definitely superseded.
        """
        ...

    async def linearizable_barrier(self, *, timeout_s: float) -> None:
        """Return once a ReadIndex confirmed by a quorum has been applied locally; a read of
        ``store`` after this is linearizable. Concurrent callers share one ReadIndex round."""
        ...

    # -- leases: grants and revokes are proposals; these reach the leader's lessor ------------

    @property
    def min_lease_ttl_s(self) -> int:
        """The shortest TTL a lease is granted (etcd: 1.5 election timeouts, rounded up)."""
        ...

    def new_lease_id(self) -> int:
        """An id for a grant that names none, unique across the cluster."""
        ...

    async def lease_keep_alive(self, lease_id: int, *, timeout_s: float) -> int:
        """Renew a lease on this member's lessor: its granted TTL, or 0 if it is unknown or
        expired. Raises ``NotLeaderError`` unless this member leads with a primary lessor,
        ``LeaderChangedError`` if it lost the leadership before the renewal was confirmed."""
        ...

    async def lease_time_to_live(self, lease_id: int, *, timeout_s: float) -> int:
        """Seconds the lease has left on this member's lessor, or -1 if it does not exist;
        raises as ``lease_keep_alive``."""
        ...

    def status(self) -> NodeStatus: ...

    def members(self) -> Sequence[Member]: ...

    def add_apply_listener(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call ``listener`` on the event loop after every batch of applied entries (the store's
        revision may have moved); returns a function that unsubscribes it. For watches."""
        ...

    async def move_leader(self, target_member_id: int, *, timeout_s: float) -> None:
        """Transfer leadership (must be called on the leader, like etcd's MoveLeader)."""
        ...

    def snapshot_stream(self) -> AsyncIterator[bytes]:
        """A consistent snapshot of the state machine, in chunks, without blocking writes."""
        ...

    async def defragment(self) -> None: ...
