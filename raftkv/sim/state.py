"""StateAgreement: every member's state machine must agree with every other's.

After applying the same index, two members must be at the same MVCC revision (checked after
every applied batch, cheaply), and members that converged must give the same ``HashKV`` (etcd's
check for diverged members). A state machine that drifts (a write applied twice, a batch applied
out of order, a snapshot image from the wrong place) shows here even when no client read it.
"""

from __future__ import annotations

import zlib

from raftkv.kv.state_machine import KVStateMachine
from raftkv.raft.types import NodeId
from raftkv.sim.node import SimulationError

__all__ = ["StateAgreement"]


class StateAgreement:
    def __init__(self) -> None:
        self._revision_at: dict[int, tuple[int, NodeId]] = {}
        """applied index -> (MVCC revision there, the member that first reported it)"""

    def applied(self, node_id: NodeId, sm: KVStateMachine) -> None:
        index = sm.applied_index()
        revision = sm.store.current_revision()
        seen = self._revision_at.setdefault(index, (revision, node_id))
        if seen[0] != revision:
            raise SimulationError(
                f"state machines diverged: n{node_id} is at revision {revision} after applying"
                f" index {index}, n{seen[1]} was at revision {seen[0]}"
            )

    @staticmethod
    def hash_kv(sm: KVStateMachine) -> str:
        """HashKV, and the lease table (HashKV covers the keys only, as etcd's does)."""
        result = sm.store.hash_kv()
        leases = zlib.crc32(repr(sm.leases()).encode())
        return f"rev{sm.store.current_revision()}:{result.hash:08x}:leases{leases:08x}"
