"""The client's errors. A write whose fate is unknown raises ``raftkv.errors.OutcomeUnknown``."""

from __future__ import annotations

from raftkv.errors import OutcomeUnknown, RaftKVError

__all__ = [
    "ClientError",
    "ClientTimeout",
    "EtcdError",
    "OutcomeUnknown",
    "Unavailable",
    "WatchCanceled",
    "WatchCompacted",
]


class ClientError(RaftKVError):
    """Root of the client library's own errors."""


class EtcdError(ClientError):
    """The server answered with a definite error (bad input, compacted revision, ...)."""

    def __init__(self, code: str, details: str) -> None:
        super().__init__(f"{code}: {details}")
        self.code = code
        self.details = details


class Unavailable(ClientError):
    """No member could serve the call before its deadline; a write was definitely not applied."""


class ClientTimeout(Unavailable, TimeoutError):
    """A read did not complete before its deadline (reads are safe to repeat)."""


class WatchCompacted(ClientError):
    """The revision a watch needs was compacted away; start over from a fresh read."""

    def __init__(self, compact_revision: int, requested_revision: int) -> None:
        super().__init__(
            f"required revision {requested_revision} has been compacted "
            f"(oldest available: {compact_revision})"
        )
        self.compact_revision = compact_revision
        self.requested_revision = requested_revision


class WatchCanceled(ClientError):
    """The server canceled the watch for a reason other than compaction."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason or "watch canceled by the server")
        self.reason = reason
