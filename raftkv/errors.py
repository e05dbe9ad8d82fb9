"""The single exception hierarchy of raftkv.

Exceptions are named for what the caller must do. ``InternalError`` always means a bug.
"""

from __future__ import annotations


class RaftKVError(Exception):
    """Root of every raftkv exception."""


class ConfigError(RaftKVError, ValueError):
    """A configuration value is invalid; fix the configuration and start again."""


class StorageError(RaftKVError):
    """Log storage could not serve a request."""


class CompactedError(StorageError):
    """The requested index lies before the first index: it was compacted into a snapshot."""


class UnavailableError(StorageError):
    """The requested index lies past the last index."""


class SnapshotTemporarilyUnavailable(StorageError):
    """No snapshot can be produced right now; the core retries later."""


class CorruptionError(StorageError):
    """Stored data failed a checksum or format check. Stop; never serve it."""


class ProposalDropped(RaftKVError):
    """The proposal was definitely not appended (for example during a leadership transfer)."""


class NotLeader(ProposalDropped):
    """This node is not the leader; the proposal was definitely not appended.

    ``leader`` is the node this node believes is leader, or 0 when it knows none.
    """

    def __init__(self, leader: int) -> None:
        super().__init__(f"not leader (leader hint: {leader or 'none'})")
        self.leader = leader


class OutcomeUnknown(RaftKVError):
    """The operation may or may not have taken effect (Jepsen's ``info``)."""


class InternalError(RaftKVError):
    """An invariant broke. This is a bug in raftkv."""


def invariant(condition: bool, message: str) -> None:
    """An always-on assertion: unlike ``assert`` it survives ``python -O``."""
    if not condition:
        raise InternalError(message)
