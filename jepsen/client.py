"""A small synchronous etcd v3 client over the generated protos (black box: sockets only).

Errors are sorted the way a history needs them: :class:`Definite` means the request surely did
not take effect, :class:`Indefinite` means it may or may not have taken effect. Which outcomes
are definite, and why, is :func:`classify` (and jepsen/README.md, "Definite and indefinite").
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import grpc

from raftkv.pb.etcdserverpb import rpc_pb2 as pb
from raftkv.pb.etcdserverpb import rpc_pb2_grpc as pbg

__all__ = ["Client", "Definite", "Indefinite", "TxnResult"]

# Codes that prove the server rejected the request before applying it.
_DEFINITE = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.OUT_OF_RANGE,
    grpc.StatusCode.UNIMPLEMENTED,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}


class ClientError(Exception):
    """A failed request."""


class Definite(ClientError):
    """The request certainly had no effect."""


class Indefinite(ClientError):
    """The request may or may not have taken effect (timeout, connection lost)."""


# gRPC's text when the channel has no connection and could not make one: the call failed in the
# client's load-balancing pick, before a subchannel (a socket) was chosen, so not one byte of it
# was sent. (A call that was sent and then lost its connection says "Socket closed",
# "Connection reset by peer" or similar instead: unknown.)
NEVER_SENT = "failed to connect to all addresses"

# etcd's texts (details of UNAVAILABLE) that prove a request will never apply:
#   "etcdserver: leader changed": the entry at the proposal's index has another term, or the
#       proposal was dropped during a leadership transfer: it was superseded (raftkv:
#       raftkv/driver/proposals.py _outcome, Forwarder.rejected, core._submit; etcd 3.4
#       returns ErrLeaderChanged only from its read-index loop, for a read).
#   "etcdserver: no leader": raftkv answers it only for a request still parked when its
#       deadline passed, i.e. never proposed nor forwarded (core.expire); etcd 3.4 answers it
#       only before proposing anything (waitLeader, the require-leader check, watch streams).
DEFINITE_TEXTS = ("etcdserver: leader changed", "etcdserver: no leader")


def classify(code: grpc.StatusCode | None, detail: str) -> bool:
    """True when a failed call certainly had no effect (the history may record it as fail)."""
    if code in _DEFINITE:
        return True
    if code is grpc.StatusCode.UNAVAILABLE:
        if NEVER_SENT in detail:
            return True
        return any(detail.startswith(t) for t in DEFINITE_TEXTS)
    return False


def _wrap(err: grpc.RpcError) -> ClientError:
    code_fn = getattr(err, "code", None)
    details_fn = getattr(err, "details", None)
    code: grpc.StatusCode | None = code_fn() if callable(code_fn) else None
    detail = details_fn() if callable(details_fn) else str(err)
    detail = detail or ""
    msg = f"{code.name if code else 'ERROR'}: {detail}"
    return Definite(msg) if classify(code, detail) else Indefinite(msg)


@dataclass(frozen=True)
class TxnResult:
    succeeded: bool
    revision: int
    # One entry per request op: for a range, [(key, value, mod_revision)]; for a put, [].
    ranges: list[list[tuple[str, str, int]]]


class Client:
    """One gRPC channel to one endpoint (``host:port``)."""

    def __init__(self, endpoint: str, timeout_s: float = 2.0) -> None:
        self.endpoint = endpoint
        self.timeout_s = timeout_s
        self._channel = grpc.insecure_channel(
            endpoint,
            options=[
                ("grpc.enable_retries", 0),
                ("grpc.initial_reconnect_backoff_ms", 100),
                ("grpc.max_reconnect_backoff_ms", 500),
                ("grpc.min_reconnect_backoff_ms", 100),
            ],
        )
        self.kv = pbg.KVStub(self._channel)
        self.maint = pbg.MaintenanceStub(self._channel)
        self.watch_stub = pbg.WatchStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- KV -------------------------------------------------------------------------------------

    def get(
        self, key: str, *, serializable: bool = False, timeout_s: float | None = None
    ) -> tuple[str | None, int, int]:
        """Returns (value or None, mod_revision or 0, header revision)."""
        try:
            resp = self.kv.Range(
                pb.RangeRequest(key=key.encode(), serializable=serializable),
                timeout=self.timeout_s if timeout_s is None else timeout_s,
            )
        except grpc.RpcError as e:
            raise _wrap(e) from None
        if not resp.kvs:
            return None, 0, resp.header.revision
        kv = resp.kvs[0]
        return kv.value.decode(), kv.mod_revision, resp.header.revision

    def range_prefix(self, prefix: str) -> tuple[list[tuple[str, str, int]], int]:
        end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        try:
            resp = self.kv.Range(
                pb.RangeRequest(key=prefix.encode(), range_end=end.encode()),
                timeout=self.timeout_s * 3,
            )
        except grpc.RpcError as e:
            raise _wrap(e) from None
        rows = [(kv.key.decode(), kv.value.decode(), kv.mod_revision) for kv in resp.kvs]
        return rows, resp.header.revision

    def put(self, key: str, value: str) -> int:
        """Returns the revision of the write."""
        try:
            resp = self.kv.Put(
                pb.PutRequest(key=key.encode(), value=value.encode()), timeout=self.timeout_s
            )
        except grpc.RpcError as e:
            raise _wrap(e) from None
        return resp.header.revision

    def txn(
        self,
        compares: Sequence[pb.Compare],
        success: Sequence[pb.RequestOp],
        failure: Sequence[pb.RequestOp] = (),
    ) -> TxnResult:
        try:
            resp = self.kv.Txn(
                pb.TxnRequest(compare=compares, success=success, failure=failure),
                timeout=self.timeout_s,
            )
        except grpc.RpcError as e:
            raise _wrap(e) from None
        ranges: list[list[tuple[str, str, int]]] = []
        for r in resp.responses:
            if r.WhichOneof("response") == "response_range":
                ranges.append(
                    [
                        (kv.key.decode(), kv.value.decode(), kv.mod_revision)
                        for kv in r.response_range.kvs
                    ]
                )
            else:
                ranges.append([])
        return TxnResult(resp.succeeded, resp.header.revision, ranges)

    def compact(self, revision: int) -> None:
        try:
            self.kv.Compact(pb.CompactionRequest(revision=revision), timeout=self.timeout_s)
        except grpc.RpcError as e:
            raise _wrap(e) from None

    # --- Maintenance ----------------------------------------------------------------------------

    def status(self, timeout_s: float = 0.5) -> tuple[int, int, int]:
        """Returns (member id, leader id, raft term)."""
        try:
            resp = self.maint.Status(pb.StatusRequest(), timeout=timeout_s)
        except grpc.RpcError as e:
            raise _wrap(e) from None
        return resp.header.member_id, resp.leader, resp.raftTerm

    # --- Watch ----------------------------------------------------------------------------------

    def watch(
        self, requests: Iterator[pb.WatchRequest]
    ) -> grpc.Call:  # an iterator of WatchResponse that can be cancelled
        call: grpc.Call = self.watch_stub.Watch(requests)
        return call


# --- request builders -------------------------------------------------------------------------


def cmp_value(key: str, value: str) -> pb.Compare:
    return pb.Compare(
        key=key.encode(),
        target=pb.Compare.CompareTarget.VALUE,
        result=pb.Compare.CompareResult.EQUAL,
        value=value.encode(),
    )


def cmp_mod(key: str, mod_revision: int) -> pb.Compare:
    return pb.Compare(
        key=key.encode(),
        target=pb.Compare.CompareTarget.MOD,
        result=pb.Compare.CompareResult.EQUAL,
        mod_revision=mod_revision,
    )


def op_put(key: str, value: str) -> pb.RequestOp:
    return pb.RequestOp(request_put=pb.PutRequest(key=key.encode(), value=value.encode()))


def op_get(key: str) -> pb.RequestOp:
    return pb.RequestOp(request_range=pb.RangeRequest(key=key.encode()))
