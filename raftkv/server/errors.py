"""etcd's server-level errors (api/v3rpc/rpctypes), with etcd's texts and gRPC codes.

Like ``raftkv.kv.errors`` they carry ``code`` (a grpc.StatusCode name) and ``text``, so one
table in the servicers maps every error without string matching.
"""

from __future__ import annotations

from raftkv.kv.errors import KVError


class NoLeaderError(KVError):
    code = "UNAVAILABLE"
    text = "etcdserver: no leader"


class LeaderChangedError(KVError):
    """The proposal was definitely superseded by another entry: it will never apply."""

    code = "UNAVAILABLE"
    text = "etcdserver: leader changed"


class RequestTimeoutError(KVError):
    """The deadline passed; the write may or may not have been applied."""

    code = "UNAVAILABLE"
    text = "etcdserver: request timed out"


class ServerStoppedError(KVError):
    code = "UNAVAILABLE"
    text = "etcdserver: server stopped"


class TooManyRequestsError(KVError):
    code = "RESOURCE_EXHAUSTED"
    text = "etcdserver: too many requests"


class RequestTooLargeError(KVError):
    text = "etcdserver: request is too large"


class NotLeaderError(KVError):
    code = "FAILED_PRECONDITION"
    text = "etcdserver: not leader"


class BadLeaderTransfereeError(KVError):
    code = "FAILED_PRECONDITION"
    text = "etcdserver: bad leader transferee"


class MemberNotFoundError(KVError):
    code = "NOT_FOUND"
    text = "etcdserver: member not found"


class NotCapableError(KVError):
    code = "FAILED_PRECONDITION"
    text = "etcdserver: not capable"
