"""Ready: everything the core asks the driver to do, as data; and Status, a read-only view."""

from __future__ import annotations

from dataclasses import dataclass

from raftkv.raft.messages import Message
from raftkv.raft.types import (
    ConfState,
    Entry,
    HardState,
    Index,
    NodeId,
    ReadState,
    Role,
    Snapshot,
    SoftState,
    Term,
)


@dataclass(frozen=True, slots=True)
class Ready:
    """One batch of work. The driver handles the fields in this order, then calls ``advance``.

    1. ``messages``: may be sent at once, even before anything below is persisted. They are the
       leader's appends, heartbeats and similar messages whose safety does not depend on local
       durability (the leader counts itself only after its own persistence; see ``advance``).
    2. Persist, atomically: ``snapshot`` (if not None), then ``entries`` (which may overwrite a
       conflicting suffix), then ``hard_state`` (if not None). If ``must_sync`` is set the write
       must be durable (fsync) before step 3.
    3. ``persisted_messages``: send only after step 2 is durable. They are votes and
       acknowledgements that promise the recipient something about our stable storage.
    4. Apply ``snapshot`` (if not None) to the state machine, then ``committed_entries`` in
       order. Entries were committed by a quorum, so they are durable on a majority.
    5. ``read_states``: each may be served once the state machine has applied its index.
    6. Call ``RawNode.advance(ready)``.

    ``soft_state`` is set when the leader or role changed; it needs no persistence.
    """

    soft_state: SoftState | None
    hard_state: HardState | None
    entries: tuple[Entry, ...]
    snapshot: Snapshot | None
    committed_entries: tuple[Entry, ...]
    messages: tuple[Message, ...]
    persisted_messages: tuple[Message, ...]
    read_states: tuple[ReadState, ...]
    must_sync: bool


@dataclass(frozen=True, slots=True)
class ProgressStatus:
    match: Index
    next: Index
    state: str
    recent_active: bool
    is_learner: bool


@dataclass(frozen=True, slots=True)
class Status:
    id: NodeId
    term: Term
    vote: NodeId
    commit: Index
    applied: Index
    last_index: Index
    leader: NodeId
    role: Role
    conf_state: ConfState
    lead_transferee: NodeId
    progress: tuple[tuple[NodeId, ProgressStatus], ...]
