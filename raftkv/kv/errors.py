"""etcd's KV errors, with etcd's exact message texts.

They subclass :class:`raftkv.errors.RaftKVError` and carry a gRPC-style ``code`` name so the
server's status table can map them without string matching.
"""

from __future__ import annotations

from raftkv.errors import RaftKVError

__all__ = [
    "CompactedRevisionError",
    "DuplicateKeyError",
    "EmptyKeyError",
    "FutureRevisionError",
    "InvalidSortOptionError",
    "KVError",
    "KeyNotFoundError",
    "KeyTooLargeError",
    "LeaseExistsError",
    "LeaseNotFoundError",
    "LeaseProvidedError",
    "LeaseTTLTooLargeError",
    "NoSpaceError",
    "StaleLeaseRevokeError",
    "TooManyOpsError",
    "ValueProvidedError",
]


class KVError(RaftKVError):
    """A request failed with one of etcd's documented errors; the message is etcd's text."""

    code = "INVALID_ARGUMENT"
    text = "etcdserver: unknown error"

    def __init__(self, text: str | None = None) -> None:
        super().__init__(text or self.text)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and str(other) == str(self)

    def __hash__(self) -> int:
        return hash((type(self), str(self)))


class CompactedRevisionError(KVError):
    code = "OUT_OF_RANGE"
    text = "mvcc: required revision has been compacted"


class FutureRevisionError(KVError):
    code = "OUT_OF_RANGE"
    text = "mvcc: required revision is a future revision"


class NoSpaceError(KVError):
    code = "RESOURCE_EXHAUSTED"
    text = "mvcc: database space exceeded"


class EmptyKeyError(KVError):
    text = "etcdserver: key is not provided"


class KeyNotFoundError(KVError):
    text = "etcdserver: key not found"


class ValueProvidedError(KVError):
    text = "etcdserver: value is provided"


class LeaseProvidedError(KVError):
    text = "etcdserver: lease is provided"


class TooManyOpsError(KVError):
    text = "etcdserver: too many operations in txn request"


class DuplicateKeyError(KVError):
    text = "etcdserver: duplicate key given in txn request"


class InvalidSortOptionError(KVError):
    text = "etcdserver: invalid sort option"


class KeyTooLargeError(KVError):
    """LMDB bounds key length; etcd has no such limit (it would say "request is too large")."""

    text = "etcdserver: request is too large"


class LeaseNotFoundError(KVError):
    code = "NOT_FOUND"
    text = "etcdserver: requested lease not found"


class LeaseExistsError(KVError):
    code = "FAILED_PRECONDITION"
    text = "etcdserver: lease already exists"


class LeaseTTLTooLargeError(KVError):
    code = "OUT_OF_RANGE"
    text = "etcdserver: too large lease TTL"


class StaleLeaseRevokeError(KVError):
    """An expiry revoke applied in an entry of another term than the leader's that decided it:
    it has no effect (no client waits for it; the text is for logs)."""

    code = "UNAVAILABLE"
    text = "etcdserver: lease revoke of an earlier leader ignored"
