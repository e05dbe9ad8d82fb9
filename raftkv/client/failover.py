"""The client's failover policy: which member a call tries next, and what a failure proves.

Failover rules:

* A call goes to the current endpoint; the channel must be READY before anything is sent (a
  member that cannot be reached within ``connect_timeout_s`` is skipped, nothing was sent).
* Reads (Range, read-only Txn, MemberList, Status) are retried on other members until their
  deadline: repeating a read is harmless.
* Writes are retried only when the error proves they were not applied: the connection could
  not be made, or the member said "no leader" / "not leader" / "leader changed" / "too many
  requests" (rejected before proposing). Any other failure after the request may have gone
  out (a timeout, "request timed out", a broken connection) raises ``OutcomeUnknown``.
* Watches resume on another member from the last delivered revision + 1 (see
  :class:`~raftkv.client.watch.AsyncWatch`).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

import grpc
from grpc import aio

from raftkv.client.errors import ClientError, ClientTimeout, EtcdError, OutcomeUnknown, Unavailable

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "Endpoint",
    "EndpointRing",
    "FailureKind",
    "classify",
    "no_member_answered",
    "raise_unless_retryable",
]

DEFAULT_TIMEOUT_S = 5.0

_DEFINITE_NOT_APPLIED = (
    "etcdserver: no leader",
    "etcdserver: not leader",
    "etcdserver: leader changed",
    "etcdserver: too many requests",
)
_NOT_CONNECTED = (
    "failed to connect to all addresses",
    "connection refused",
    "dns resolution failed",
    "no address available",
    "no connection available",
)


class FailureKind:
    NOT_SENT = "not-sent"  # definitely not applied: safe to retry anything
    DEFINITE = "definite"  # the server's answer: raise it
    UNKNOWN = "unknown"  # may have been applied


def classify(e: grpc.aio.AioRpcError) -> str:
    code = e.code()
    details = (e.details() or "").lower()
    if any(d in details for d in _DEFINITE_NOT_APPLIED):
        return FailureKind.NOT_SENT
    if code == grpc.StatusCode.UNAVAILABLE and any(d in details for d in _NOT_CONNECTED):
        return FailureKind.NOT_SENT
    if code in (
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.INTERNAL,
    ):
        return FailureKind.UNKNOWN
    return FailureKind.DEFINITE


def raise_unless_retryable(e: aio.AioRpcError, target: str, *, safe: bool) -> None:
    """Raise what a failed call on ``target`` proves, unless another member may be tried: a
    definite answer is the server's; a write that may have been applied is ``OutcomeUnknown``."""
    kind = classify(e)
    if kind == FailureKind.DEFINITE:
        raise EtcdError(e.code().name, e.details() or "") from None
    if kind == FailureKind.UNKNOWN and not safe:
        raise OutcomeUnknown(
            f"{target}: {e.code().name}: {e.details()}; the write may or may not have been applied"
        ) from None


def no_member_answered(last: BaseException | None, timeout: float, *, safe: bool) -> ClientError:
    """The error for a call whose deadline passed with no member answering; ``last`` is the last
    failure seen."""
    detail = (
        f": {last.code().name}: {last.details()}"
        if isinstance(last, aio.AioRpcError)
        else (f": {last}" if last else "")
    )
    if safe:
        return ClientTimeout(f"no member answered within {timeout} s{detail}")
    return Unavailable(f"write not applied: no member accepted it within {timeout} s{detail}")


@dataclass
class Endpoint:
    target: str
    tls: bool
    channel: aio.Channel | None = None
    down_until: float = 0.0


class EndpointRing:
    """The client's endpoints, the current one (a random start), and which were down lately."""

    def __init__(self, endpoints: list[Endpoint]) -> None:
        self.endpoints = endpoints
        self.current = random.randrange(len(endpoints))

    def order(self) -> list[Endpoint]:
        """Endpoints to try: the current one first, then the others, healthy ones first."""
        n = len(self.endpoints)
        ring = [self.endpoints[(self.current + i) % n] for i in range(n)]
        now = time.monotonic()
        return sorted(ring, key=lambda ep: ep.down_until > now)

    def mark_down(self, ep: Endpoint) -> None:
        ep.down_until = time.monotonic() + 1.0
        if self.endpoints[self.current] is ep:
            self.current = (self.current + 1) % len(self.endpoints)

    def use(self, ep: Endpoint) -> None:
        ep.down_until = 0.0
        self.current = self.endpoints.index(ep)
