"""What the peer transport needs from its member: one :class:`PeerHandler` for both sides.

This is the transport's only view of the node, as etcd's ``rafthttp.Raft`` interface is: the
sending side (:class:`raftkv.server.peer.sender.GrpcTransport`) reports link failures, snapshot
results and the fate of forwarded writes to it and reads the state-machine image from it; the
receiving side (:class:`raftkv.server.peer.service.PeerService`) hands it Raft messages and
forwarded writes. Nothing in this package imports the node: the member passes itself in. Why
a leader refuses a forward (``Refusal``) is the driver core's word, used here as it is.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol

from raftkv.driver.actions import Refusal
from raftkv.raft.messages import Message

__all__ = ["PeerHandler", "Refusal"]


class PeerHandler(Protocol):
    """The member behind a transport. Every method runs on the event loop, except
    :meth:`snapshot_chunks`, whose iterator is created and consumed in one worker thread."""

    def deliver(self, messages: Sequence[Message]) -> None:
        """Raft messages received from peers, in the order each link carried them."""

    def handle_forwards(self, commands: list[bytes]) -> Refusal | None:
        """Propose a follower's forwarded writes, in order; None when they were appended."""

    def report_unreachable(self, member_id: int) -> None:
        """The link to ``member_id`` is down, or dropped messages to it: probe it."""

    def report_snapshot(self, member_id: int, ok: bool) -> None:
        """The outcome of sending a snapshot to ``member_id``."""

    def forwards_rejected(self, forward_ids: Sequence[int], refusal: Refusal | None) -> None:
        """Forwarded writes that were certainly not proposed: ``refusal`` is the receiver's
        answer, or None when they never left this member (or the answer was not understood)."""

    def forwards_lost(self, forward_ids: Sequence[int]) -> None:
        """Forwarded writes sent on a link that broke before the receiver acknowledged them:
        they may or may not have been proposed."""

    def snapshot_chunks(self) -> Iterator[bytes]:
        """A consistent image of the state machine, in chunks, to stream to a follower."""
