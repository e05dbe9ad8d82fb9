"""What the driver core asks its environment to do: plain, immutable data.

The core never performs I/O. Each event it is given returns a list of these actions, and the
environment (the server's asyncio adapter, or the simulator) carries them out in order. Some
actions are answered by a later event: a ``Persist`` by ``DriverCore.persisted``, an ``Apply`` by
``DriverCore.applied``, a ``Forward`` that could not be sent by ``DriverCore.forwards_rejected``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from raftkv.kv.errors import KVError
from raftkv.kv.types import LeaseAnswer, Response
from raftkv.raft.messages import Message
from raftkv.raft.types import ConfState, Entry, HardState, Role, Snapshot

__all__ = [
    "Action",
    "AppliedTo",
    "Apply",
    "Fail",
    "FlushReadsSoon",
    "Forward",
    "LeaderChanged",
    "Persist",
    "RecordAttributes",
    "Refusal",
    "Resolve",
    "Send",
    "TakeSnapshot",
    "Worker",
]


class Worker(enum.Enum):
    """Where an apply batch runs. Batches still apply one at a time, in the order given: the
    environment makes an APPLY batch wait for the DISK batch handed over before it."""

    DISK = "disk"
    """The Raft log's thread: only small batches of quick entries, when the apply thread is
    idle, so that a persist never waits behind a long apply."""
    APPLY = "apply"
    """The state machine's own thread, for everything else."""


class Refusal(enum.Enum):
    """Why a leader turned a forwarded write down. Nothing was proposed in either case."""

    NOT_LEADER = "not leader"
    """The receiver is not the leader: the sender tries the next leader."""
    LEADER_CHANGED = "leader changed"
    """The leader takes no proposals now (a leadership transfer): the write fails."""


@dataclass(frozen=True, slots=True)
class Send:
    """Send these Raft messages to their destinations (best effort)."""

    messages: tuple[Message, ...]


@dataclass(frozen=True, slots=True)
class Persist:
    """Write atomically and durably: the snapshot (restoring the state machine from the image
    received with it first), the entries (replacing a conflicting suffix), the hard state.
    Answer with ``DriverCore.persisted``; no other Persist is asked for until then."""

    hard_state: HardState | None
    entries: tuple[Entry, ...]
    snapshot: Snapshot | None


@dataclass(frozen=True, slots=True)
class Apply:
    """Apply ``entries`` to the state machine on ``worker``, after every batch asked for
    before. Answer with ``DriverCore.applied(batch, results)``, in the order asked."""

    batch: int
    entries: tuple[Entry, ...]
    worker: Worker


@dataclass(frozen=True, slots=True)
class Resolve:
    """A waiter's request succeeded: ``result`` is the applied command's result (a Response,
    or the KVError the state machine answered), the lessor's answer to a keep-alive or a
    TimeToLive, or None for a read or a non-KV entry."""

    waiter: int
    result: Response | LeaseAnswer | KVError | None


@dataclass(frozen=True, slots=True)
class Fail:
    """A waiter's request failed with ``error`` (leader changed, timed out, no leader, ...)."""

    waiter: int
    error: KVError


@dataclass(frozen=True, slots=True)
class Forward:
    """Send a client's write to the leader ``to`` (fire and forget). If it cannot be sent, say
    so with ``forwards_rejected([forward_id], None)``; if its link breaks after it was sent,
    with ``forwards_lost``."""

    to: int
    forward_id: int
    command: bytes


@dataclass(frozen=True, slots=True)
class TakeSnapshot:
    """Record a snapshot of the log at ``index`` and compact what is older than ``keep``
    entries before it. Runs on the log's thread, behind any Persist asked for before."""

    index: int
    conf_state: ConfState
    keep: int


@dataclass(frozen=True, slots=True)
class RecordAttributes:
    """A member published its name and client URLs through the log (the payload after the
    attributes prefix, as JSON)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class LeaderChanged:
    leader: int
    role: Role


@dataclass(frozen=True, slots=True)
class AppliedTo:
    """The state machine has applied everything up to ``index`` (wake watchers)."""

    index: int


@dataclass(frozen=True, slots=True)
class FlushReadsSoon:
    """Linearizable reads are waiting for a ReadIndex round: call ``DriverCore.issue_reads``
    once the reads that arrive in the same breath have joined them."""


Action = (
    Send
    | Persist
    | Apply
    | Resolve
    | Fail
    | Forward
    | TakeSnapshot
    | RecordAttributes
    | LeaderChanged
    | AppliedTo
    | FlushReadsSoon
)
