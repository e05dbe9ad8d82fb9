"""etcd's server-level errors (api/v3rpc/rpctypes), with etcd's texts and gRPC codes.

Like ``raftkv.kv.errors`` they carry ``code`` (a grpc.StatusCode name) and ``text``, so one
table in the servicers maps every error without string matching.
"""

from __future__ import annotations

from raftkv.driver.errors import (
    LeaderChangedError,
    NoLeaderError,
    NotLeaderError,
    RequestTimeoutError,
    ServerStoppedError,
)
from raftkv.kv.errors import KVError

__all__ = [
    "BadLeaderTransfereeError",
    "LeaderChangedError",
    "MemberNotFoundError",
    "NoLeaderError",
    "NotCapableError",
    "NotLeaderError",
    "RequestTimeoutError",
    "RequestTooLargeError",
    "ServerStoppedError",
    "TooManyRequestsError",
]


class TooManyRequestsError(KVError):
    code = "RESOURCE_EXHAUSTED"
    text = "etcdserver: too many requests"


class RequestTooLargeError(KVError):
    text = "etcdserver: request is too large"


class BadLeaderTransfereeError(KVError):
    code = "FAILED_PRECONDITION"
    text = "etcdserver: bad leader transferee"


class MemberNotFoundError(KVError):
    code = "NOT_FOUND"
    text = "etcdserver: member not found"


class NotCapableError(KVError):
    code = "FAILED_PRECONDITION"
    text = "etcdserver: not capable"
