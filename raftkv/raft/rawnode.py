"""RawNode: the public, single-threaded facade of the Raft core.

Inputs: ``tick``, ``step`` (a peer's message), ``propose``, ``read_index``, ``campaign``,
``transfer_leadership``, ``report_unreachable``, ``report_snapshot``, ``apply_conf_change``.
Outputs: ``has_ready`` / ``ready`` / ``advance`` (see :class:`raftkv.raft.ready.Ready` for the
driver's obligations) and ``status``.

Proposals on a follower are *not* forwarded: ``propose`` raises :class:`raftkv.errors.NotLeader`
with a leader hint, a definite failure. Forwarding is the server's business (it re-sends the
client request to the leader over gRPC), which keeps a dropped forward from turning a definite
outcome into an unknown one inside the core.
"""

from __future__ import annotations

from collections.abc import Sequence

from raftkv.errors import InternalError
from raftkv.raft.config import RaftConfig
from raftkv.raft.messages import Message
from raftkv.raft.raft import Raft, Rng
from raftkv.raft.ready import Ready, Status
from raftkv.raft.storage import LogStorage
from raftkv.raft.types import ConfChange, ConfState, Index, NodeId, Role


class RawNode:
    def __init__(self, config: RaftConfig, storage: LogStorage, rng: Rng) -> None:
        self._raft = Raft(config, storage, rng)
        self._outstanding: Ready | None = None

    # -- inputs ---------------------------------------------------------------------------------

    def tick(self) -> None:
        self._raft.tick()

    def campaign(self) -> None:
        """Start an election now (pre-vote first, if enabled)."""
        self._raft.hup(transfer=False)

    def step(self, msg: Message) -> None:
        """Feed a message received from a peer. Messages for another node are ignored."""
        self._raft.step(msg)

    def propose(self, data: bytes) -> Index:
        """Append ``data`` as a new entry; returns its index. Raises NotLeader/ProposalDropped."""
        return self._raft.propose((data,))

    def propose_many(self, batch: Sequence[bytes]) -> Index:
        """Append several entries at once; returns the index of the first."""
        return self._raft.propose(batch)

    def propose_conf_change(self, change: ConfChange) -> Index:
        return self._raft.propose_conf_change(change)

    def apply_conf_change(self, change: ConfChange) -> ConfState:
        """Call when a CONF_CHANGE entry is applied; returns the new membership."""
        return self._raft.apply_conf_change(change)

    def read_index(self, context: bytes) -> None:
        """Request a linearizable read. A ReadState with the same ``context`` arrives in a later
        Ready once leadership is confirmed by a quorum. Raises NotLeader if no leader is known.
        ``context`` must be unique among outstanding reads."""
        self._raft.read_index(context)

    def transfer_leadership(self, target: NodeId) -> None:
        self._raft.transfer_leadership(target)

    def report_unreachable(self, node: NodeId) -> None:
        self._raft.report_unreachable(node)

    def report_snapshot(self, node: NodeId, ok: bool) -> None:
        self._raft.report_snapshot(node, ok)

    # -- outputs --------------------------------------------------------------------------------

    def has_ready(self) -> bool:
        return self._outstanding is None and self._raft.has_ready()

    def ready(self) -> Ready:
        """The next batch of work. Call ``advance`` with it before asking for another."""
        if self._outstanding is not None:
            raise InternalError("ready() called again before advance()")
        rd = self._raft.ready()
        self._outstanding = rd
        return rd

    def advance(self, rd: Ready) -> None:
        """Acknowledge that every obligation of ``rd`` has been met."""
        if rd is not self._outstanding:
            raise InternalError("advance() must be given the Ready last returned by ready()")
        self._outstanding = None
        self._raft.advance(rd)

    @property
    def term(self) -> int:
        """The current term: the term a proposal made now is appended in."""
        return self._raft.term

    @property
    def role(self) -> Role:
        """The current role, before any Ready reports it (the lessor must not act on a stale
        one)."""
        return self._raft.role

    def status(self) -> Status:
        return self._raft.status()
