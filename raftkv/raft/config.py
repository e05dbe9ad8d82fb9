"""RaftConfig: every knob of the core, in ticks and bytes, validated at construction."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from raftkv.errors import ConfigError
from raftkv.raft.types import Index, NodeId

DEFAULT_LOGGER_NAME = "raftkv.raft"
"""The logger the core writes to when ``RaftConfig.logger`` is None."""


@dataclass(frozen=True, slots=True)
class RaftConfig:
    node_id: NodeId
    election_ticks: int = 10
    """A follower that hears nothing for a random time in [election_ticks, 2*election_ticks)
    campaigns. A leader steps down if no quorum was active within election_ticks."""
    heartbeat_ticks: int = 1
    max_size_per_msg_bytes: int = 1024 * 1024
    """Upper bound on the entries of one append; at least one entry is always sent."""
    max_inflight_msgs: int = 256
    """Appends in flight to one follower in the replicate state (pipelining window)."""
    max_inflight_bytes: int = 0
    """Bytes in flight to one follower; 0 means unlimited."""
    max_committed_size_per_ready_bytes: int = 4 * 1024 * 1024
    max_uncommitted_entries_bytes: int = 0
    """Payload bytes a leader may hold appended but not yet committed (etcd's
    MaxUncommittedEntriesSize); a proposal that would go over is dropped. It bounds the tail a
    leader builds while its followers cannot keep up, which every follower must then fetch
    before anything commits. A proposal is always accepted when nothing is uncommitted.
    0 means unlimited."""
    applied: Index = 0
    """The state machine's durable applied index at start; entries up to it are not re-applied."""
    pre_vote: bool = True
    check_quorum: bool = True
    logger: logging.Logger | None = field(default=None, compare=False)
    """Where the core reports role changes, at INFO as etcd does; None means the logger named
    ``DEFAULT_LOGGER_NAME``. Passed in rather than taken per module (as etcd-raft's
    ``Config.Logger`` and raft-rs's ``RawNode::new(.., logger)``), so that whoever runs the
    core decides where its lines go: a server can tag them with the member, the simulator or a
    test can capture one node's. Nothing in the core configures logging."""

    def __post_init__(self) -> None:
        if self.node_id <= 0:
            raise ConfigError(f"node_id must be positive, got {self.node_id}")
        if self.heartbeat_ticks <= 0:
            raise ConfigError("heartbeat_ticks must be positive")
        if self.election_ticks <= self.heartbeat_ticks:
            raise ConfigError("election_ticks must be greater than heartbeat_ticks")
        if self.max_inflight_msgs <= 0:
            raise ConfigError("max_inflight_msgs must be positive")
        if self.max_size_per_msg_bytes <= 0:
            raise ConfigError("max_size_per_msg_bytes must be positive")
        if self.max_inflight_bytes < 0:
            raise ConfigError("max_inflight_bytes must not be negative")
        if self.max_uncommitted_entries_bytes < 0:
            raise ConfigError("max_uncommitted_entries_bytes must not be negative")
        if self.applied < 0:
            raise ConfigError("applied must not be negative")
