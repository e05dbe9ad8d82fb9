"""``AsyncClient``: etcd's v3 API over grpc.aio, with failover that never guesses.

Which member a call tries next, and which failures may be retried, is the failover policy in
:mod:`raftkv.client.failover`; the watch that resumes on another member is
:class:`~raftkv.client.watch.AsyncWatch`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, TypeVar

import grpc
from grpc import aio

from raftkv.client.errors import Unavailable
from raftkv.client.failover import (
    DEFAULT_TIMEOUT_S,
    Endpoint,
    EndpointRing,
    no_member_answered,
    raise_unless_retryable,
)
from raftkv.client.txn import Txn, prefix_end
from raftkv.client.types import (
    CompactResult,
    DeleteResult,
    Header,
    KeyValue,
    Member,
    MemberListResult,
    OpResult,
    PutResult,
    RangeResult,
    StatusResult,
    TxnResult,
)
from raftkv.client.watch import AsyncWatch
from raftkv.errors import ConfigError
from raftkv.pb.etcdserverpb import rpc_pb2, rpc_pb2_grpc

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "AsyncClient",
    "AsyncWatch",
    "channel_options",
    "connect",
    "parse_endpoint",
]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

_SORT_ORDER = {"none": 0, "ascend": 1, "descend": 2}
_SORT_TARGET = {"key": 0, "version": 1, "create": 2, "mod": 3, "value": 4}


def channel_options(keepalive_time_s: float, keepalive_timeout_s: float) -> list[tuple[str, Any]]:
    """Keepalive like etcdctl (pings on open calls), within what raftkv's server accepts.

    etcdctl asks for 2 s, which gRPC-Go raises to 10 s; raftkv's and etcd's servers accept pings
    every 5 s with calls in flight. No pings without calls: etcd's server does not permit them.
    """
    return [
        ("grpc.keepalive_time_ms", int(keepalive_time_s * 1000)),
        ("grpc.keepalive_timeout_ms", int(keepalive_timeout_s * 1000)),
        ("grpc.keepalive_permit_without_calls", 0),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.max_receive_message_length", 2**31 - 1),
        ("grpc.max_send_message_length", 2**31 - 1),
        ("grpc.enable_retries", 0),
        # Reconnect quickly after a member restarts (gRPC's default backoff grows to 2 min).
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.min_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 2000),
    ]


def parse_endpoint(ep: str) -> tuple[str, bool]:
    """``(host:port, tls)`` from ``host:port``, ``http://host:port`` or ``https://host:port``."""
    ep = ep.strip()
    if ep.startswith("https://"):
        return ep[len("https://") :].rstrip("/"), True
    if ep.startswith("http://"):
        return ep[len("http://") :].rstrip("/"), False
    return ep.rstrip("/"), False


def _kv(kv: Any) -> KeyValue:
    return KeyValue.from_pb(kv)


def _range_result(r: rpc_pb2.RangeResponse) -> RangeResult:
    return RangeResult(Header.from_pb(r.header), tuple(_kv(k) for k in r.kvs), r.more, r.count)


def _put_result(r: rpc_pb2.PutResponse) -> PutResult:
    return PutResult(Header.from_pb(r.header), _kv(r.prev_kv) if r.HasField("prev_kv") else None)


def _delete_result(r: rpc_pb2.DeleteRangeResponse) -> DeleteResult:
    return DeleteResult(Header.from_pb(r.header), r.deleted, tuple(_kv(k) for k in r.prev_kvs))


def _op_result(r: rpc_pb2.ResponseOp) -> OpResult:
    which = r.WhichOneof("response")
    if which == "response_range":
        return _range_result(r.response_range)
    if which == "response_put":
        return _put_result(r.response_put)
    if which == "response_delete_range":
        return _delete_result(r.response_delete_range)
    return _txn_result(r.response_txn)


def _txn_result(r: rpc_pb2.TxnResponse) -> TxnResult:
    return TxnResult(
        Header.from_pb(r.header), r.succeeded, tuple(_op_result(x) for x in r.responses)
    )


def _b(x: bytes | str) -> bytes:
    return x.encode() if isinstance(x, str) else x


def _range_key(key: bytes | str, prefix: bool, from_key: bool) -> bytes:
    """etcd's clientv3 (WithPrefix, WithFromKey) turns the empty key into ``\\0``: the server
    refuses an empty key, and ``"" --prefix`` means every key."""
    k = _b(key)
    return b"\0" if not k and (prefix or from_key) else k


def _range_end(key: bytes, range_end: bytes | str | None, prefix: bool, from_key: bool) -> bytes:
    if prefix:
        return prefix_end(key) if key else b"\0"
    if from_key:
        return b"\0"
    return _b(range_end or b"")


def _txn_is_read_only(t: rpc_pb2.TxnRequest) -> bool:
    for op in (*t.success, *t.failure):
        which = op.WhichOneof("request")
        if which == "request_txn":
            if not _txn_is_read_only(op.request_txn):
                return False
        elif which != "request_range":
            return False
    return True


class AsyncClient:
    """An asyncio etcd v3 client over several endpoints.

    ``async with AsyncClient(["127.0.0.1:2379", ...]) as c: await c.put(b"k", b"v")``

    TLS, as etcdctl's ``--cacert``/``--cert``/``--key``: ``ca_cert`` (the CA bundle that signs
    the servers' certificates; gRPC's default roots without it), and ``cert`` with ``key`` (a
    client certificate, for servers with ``--client-cert-auth``). Each is a path or the PEM
    bytes. Any of them, or an ``https://`` endpoint, makes every connection TLS.
    """

    def __init__(
        self,
        endpoints: Sequence[str] | str = ("127.0.0.1:2379",),
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        connect_timeout_s: float = 1.0,
        ca_cert: str | bytes | None = None,
        cert: str | bytes | None = None,
        key: str | bytes | None = None,
        keepalive_time_s: float = 10.0,
        keepalive_timeout_s: float = 6.0,
        require_leader: bool = True,
    ) -> None:
        if isinstance(endpoints, str):
            endpoints = [e for e in endpoints.split(",") if e.strip()]
        if not endpoints:
            raise ValueError("at least one endpoint is required")
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.require_leader = require_leader
        self._options = channel_options(keepalive_time_s, keepalive_timeout_s)
        if (cert is None) != (key is None):
            raise ConfigError("a client certificate needs its key: give cert and key together")
        self._tls = any(x is not None for x in (ca_cert, cert, key))
        self._creds: grpc.ChannelCredentials | None = None
        if self._tls or any(parse_endpoint(e)[1] for e in endpoints):
            self._creds = grpc.ssl_channel_credentials(_read(ca_cert), _read(key), _read(cert))
        self._ring = EndpointRing([Endpoint(*parse_endpoint(e)) for e in endpoints])
        self._closed = False

    # -- lifecycle ------------------------------------------------------------------------------

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        self._closed = True
        for ep in self._ring.endpoints:
            if ep.channel is not None:
                await ep.channel.close()
                ep.channel = None

    @property
    def endpoints(self) -> list[str]:
        return [ep.target for ep in self._ring.endpoints]

    def _channel(self, ep: Endpoint) -> aio.Channel:
        if ep.channel is None:
            if self._creds is not None or ep.tls:
                creds = self._creds or grpc.ssl_channel_credentials()
                ep.channel = aio.secure_channel(ep.target, creds, options=self._options)
            else:
                ep.channel = aio.insecure_channel(ep.target, options=self._options)
        return ep.channel

    @property
    def _why_unreachable(self) -> str:
        # gRPC does not tell a refused handshake from a refused connection; with TLS, say both.
        return " (no connection, or the TLS handshake failed)" if self._creds else ""

    async def _ready(self, ep: Endpoint, deadline: float) -> aio.Channel | None:
        ch = self._channel(ep)
        wait = min(self.connect_timeout_s, deadline - time.monotonic())
        if wait <= 0:
            return None
        try:
            await asyncio.wait_for(ch.channel_ready(), wait)
        except TimeoutError:
            return None
        return ch

    # -- the one call path ----------------------------------------------------------------------

    async def _call(
        self,
        make: Callable[[aio.Channel], Any],
        request: Any,
        *,
        safe: bool,
        timeout_s: float | None,
        endpoint: str | None = None,
    ) -> Any:
        timeout = self.timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + timeout
        last: BaseException | None = None
        attempt = 0
        while True:
            candidates = self._ring.order()
            if endpoint is not None:
                candidates = [ep for ep in self._ring.endpoints if ep.target == endpoint] or [
                    Endpoint(*parse_endpoint(endpoint))
                ]
            for ep in candidates:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                ch = await self._ready(ep, deadline)
                if ch is None:
                    self._ring.mark_down(ep)
                    last = Unavailable(f"{ep.target}: not reachable{self._why_unreachable}")
                    continue
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    result = await make(ch)(request, timeout=remaining)
                except aio.AioRpcError as e:
                    raise_unless_retryable(e, ep.target, safe=safe)
                    self._ring.mark_down(ep)
                    last = e
                    continue
                self._ring.use(ep)
                return result
            if time.monotonic() >= deadline:
                break
            attempt += 1
            await asyncio.sleep(min(0.05 * 2**attempt, 0.5, max(0.0, deadline - time.monotonic())))
        raise no_member_answered(last, timeout, safe=safe)

    # -- KV -------------------------------------------------------------------------------------

    async def get(
        self,
        key: bytes | str,
        range_end: bytes | str | None = None,
        *,
        prefix: bool = False,
        from_key: bool = False,
        limit: int = 0,
        revision: int = 0,
        sort_order: str = "none",
        sort_target: str = "key",
        keys_only: bool = False,
        count_only: bool = False,
        serializable: bool = False,
        min_mod_revision: int = 0,
        max_mod_revision: int = 0,
        min_create_revision: int = 0,
        max_create_revision: int = 0,
        timeout_s: float | None = None,
    ) -> RangeResult:
        k = _range_key(key, prefix, from_key)
        req = rpc_pb2.RangeRequest(
            key=k,
            range_end=_range_end(_b(key), range_end, prefix, from_key),
            limit=limit,
            revision=revision,
            sort_order=_SORT_ORDER[sort_order.lower()],  # type: ignore[arg-type]
            sort_target=_SORT_TARGET[sort_target.lower()],  # type: ignore[arg-type]
            serializable=serializable,
            keys_only=keys_only,
            count_only=count_only,
            min_mod_revision=min_mod_revision,
            max_mod_revision=max_mod_revision,
            min_create_revision=min_create_revision,
            max_create_revision=max_create_revision,
        )
        r = await self._call(
            lambda ch: rpc_pb2_grpc.KVStub(ch).Range, req, safe=True, timeout_s=timeout_s
        )
        return _range_result(r)

    range = get

    async def put(
        self,
        key: bytes | str,
        value: bytes | str,
        *,
        lease: int = 0,
        prev_kv: bool = False,
        ignore_value: bool = False,
        ignore_lease: bool = False,
        timeout_s: float | None = None,
    ) -> PutResult:
        req = rpc_pb2.PutRequest(
            key=_b(key),
            value=_b(value),
            lease=lease,
            prev_kv=prev_kv,
            ignore_value=ignore_value,
            ignore_lease=ignore_lease,
        )
        r = await self._call(
            lambda ch: rpc_pb2_grpc.KVStub(ch).Put, req, safe=False, timeout_s=timeout_s
        )
        return _put_result(r)

    async def delete(
        self,
        key: bytes | str,
        range_end: bytes | str | None = None,
        *,
        prefix: bool = False,
        from_key: bool = False,
        prev_kv: bool = False,
        timeout_s: float | None = None,
    ) -> DeleteResult:
        k = _range_key(key, prefix, from_key)
        req = rpc_pb2.DeleteRangeRequest(
            key=k, range_end=_range_end(_b(key), range_end, prefix, from_key), prev_kv=prev_kv
        )
        r = await self._call(
            lambda ch: rpc_pb2_grpc.KVStub(ch).DeleteRange, req, safe=False, timeout_s=timeout_s
        )
        return _delete_result(r)

    async def txn(
        self, txn: Txn | rpc_pb2.TxnRequest, *, timeout_s: float | None = None
    ) -> TxnResult:
        req = txn.to_pb() if isinstance(txn, Txn) else txn
        r = await self._call(
            lambda ch: rpc_pb2_grpc.KVStub(ch).Txn,
            req,
            safe=_txn_is_read_only(req),
            timeout_s=timeout_s,
        )
        return _txn_result(r)

    async def compact(
        self, revision: int, *, physical: bool = False, timeout_s: float | None = None
    ) -> CompactResult:
        req = rpc_pb2.CompactionRequest(revision=revision, physical=physical)
        r = await self._call(
            lambda ch: rpc_pb2_grpc.KVStub(ch).Compact, req, safe=False, timeout_s=timeout_s
        )
        return CompactResult(Header.from_pb(r.header))

    # -- cluster and maintenance -----------------------------------------------------------------

    async def member_list(self, *, timeout_s: float | None = None) -> MemberListResult:
        r = await self._call(
            lambda ch: rpc_pb2_grpc.ClusterStub(ch).MemberList,
            rpc_pb2.MemberListRequest(),
            safe=True,
            timeout_s=timeout_s,
        )
        return MemberListResult(
            Header.from_pb(r.header),
            tuple(
                Member(m.ID, m.name, tuple(m.peerURLs), tuple(m.clientURLs), m.isLearner)
                for m in r.members
            ),
        )

    async def status(
        self, endpoint: str | None = None, *, timeout_s: float | None = None
    ) -> StatusResult:
        """Maintenance.Status of ``endpoint`` (default: any member that answers)."""
        used: list[str] = []

        def make(ch: aio.Channel) -> Any:
            for ep in self._ring.endpoints:
                if ep.channel is ch:
                    used.append(ep.target)
            return rpc_pb2_grpc.MaintenanceStub(ch).Status

        r = await self._call(
            make, rpc_pb2.StatusRequest(), safe=True, timeout_s=timeout_s, endpoint=endpoint
        )
        return StatusResult(
            endpoint=endpoint or (used[-1] if used else ""),
            header=Header.from_pb(r.header),
            version=r.version,
            db_size=r.dbSize,
            leader=r.leader,
            raft_index=r.raftIndex,
            raft_term=r.raftTerm,
            raft_applied_index=r.raftAppliedIndex,
            errors=tuple(r.errors),
            db_size_in_use=r.dbSizeInUse,
            is_learner=r.isLearner,
        )

    # -- watch ----------------------------------------------------------------------------------

    def watch(
        self,
        key: bytes | str,
        range_end: bytes | str | None = None,
        *,
        prefix: bool = False,
        from_key: bool = False,
        start_revision: int = 0,
        prev_kv: bool = False,
        no_put: bool = False,
        no_delete: bool = False,
        progress_notify: bool = False,
        fragment: bool = False,
    ) -> AsyncWatch:
        """An async iterator of :class:`WatchResponse`; it survives member failures."""
        k = _range_key(key, prefix, from_key)
        filters = []
        if no_put:
            filters.append(rpc_pb2.WatchCreateRequest.NOPUT)
        if no_delete:
            filters.append(rpc_pb2.WatchCreateRequest.NODELETE)
        create = rpc_pb2.WatchCreateRequest(
            key=k,
            range_end=_range_end(_b(key), range_end, prefix, from_key),
            start_revision=start_revision,
            prev_kv=prev_kv,
            progress_notify=progress_notify,
            filters=filters,
            fragment=fragment,
        )
        return AsyncWatch(self, create)

    async def _open_watch(
        self, create: rpc_pb2.WatchCreateRequest, deadline: float
    ) -> tuple[Any, Endpoint]:
        """A watch stream on some reachable member, with ``create`` sent; before its reply."""
        while True:
            for ep in self._ring.order():
                ch = await self._ready(ep, deadline)
                if ch is None:
                    self._ring.mark_down(ep)
                    continue
                md = (("hasleader", "true"),) if self.require_leader else None
                call = rpc_pb2_grpc.WatchStub(ch).Watch(metadata=md)
                try:
                    await call.write(rpc_pb2.WatchRequest(create_request=create))
                except Exception as e:  # stream broke at once; try another member
                    logger.debug("watch on %s failed to open: %r", ep.target, e)
                    call.cancel()
                    self._ring.mark_down(ep)
                    continue
                return call, ep
            if time.monotonic() >= deadline:
                raise Unavailable("no member could serve the watch")
            await asyncio.sleep(0.1)


def _read(x: str | bytes | None) -> bytes | None:
    if x is None or isinstance(x, bytes):
        return x
    with open(x, "rb") as f:
        return f.read()


@contextlib.asynccontextmanager
async def connect(endpoints: Sequence[str] | str, **kw: Any) -> AsyncIterator[AsyncClient]:
    client = AsyncClient(endpoints, **kw)
    try:
        yield client
    finally:
        await client.close()
