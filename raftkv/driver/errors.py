"""The outcomes of a client request that the driver decides, with etcd's texts and gRPC codes.

They are ``KVError``s (``code`` is a grpc.StatusCode name, ``text`` etcd's message), so the
servicers map them with the same table as the state machine's errors. They live with the
driver core because the core decides them; ``raftkv.server.errors`` re-exports them.
"""

from __future__ import annotations

from raftkv.kv.errors import KVError

__all__ = [
    "LeaderChangedError",
    "NoLeaderError",
    "NotLeaderError",
    "RequestTimeoutError",
    "ServerStoppedError",
]


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


class NotLeaderError(KVError):
    """This member does not lead (or its lessor is not primary yet): ask the leader."""

    code = "FAILED_PRECONDITION"
    text = "etcdserver: not leader"
