"""Decoding client requests as etcd 3.4 (gogo protobuf under grpc-go) does, for every service.

gRPC Python decodes a request with the handler's ``request_deserializer`` before any servicer
code runs, and answers a decoding failure with UNKNOWN; on a request stream the failure surfaces
inside the servicer's iterator. etcd instead ends the call with INTERNAL and grpc-go's text:
"grpc: error unmarshalling request: ..." for a unary request, "grpc: failed to unmarshal the
received message ..." for a request read from a stream (Watch) or before a response stream
(Snapshot). :func:`guard` rewraps a method handler so that every service gets this:

* its deserializer never raises: it returns the message or a :class:`Refused` status;
* a unary-request behaviour aborts with that status before the servicer sees the request;
* a stream-request behaviour gets an iterator that raises :class:`RefusedRequest`, which the
  servicer turns into the end of its stream (see the Watch service).

What etcd's decoder refuses or ignores and upb (protobuf's C runtime) does not, handled here:

* a known field sent with another wire type: upb keeps it as an unknown field, gogo fails with
  "proto: wrong wireType = N for field GoName" (reported here with the same text);
* unknown fields: gogo drops them (etcd's messages keep none), so they count for neither the
  request size check nor anything else; they are discarded here too;
* deep nesting: upb refuses messages more than 100 levels deep, i.e. txns nested past 50.
  etcd accepts what its op budget allows (129 levels, see ``raftkv.kv.keys``) and answers
  "too many operations in txn request" past that, at any depth.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

import grpc
from google._upb import _message as upb
from google.protobuf.message import DecodeError, Message
from google.protobuf.unknown_fields import UnknownFieldSet

from raftkv.kv.errors import TooManyOpsError
from raftkv.kv.keys import MAX_TXN_DEPTH
from raftkv.pb.etcdserverpb import rpc_pb2
from raftkv.server.status import Context

__all__ = ["STREAM_PREFIX", "UNARY_PREFIX", "Refused", "RefusedRequest", "decode", "guard"]

UNARY_PREFIX = "grpc: error unmarshalling request: "
STREAM_PREFIX = "grpc: failed to unmarshal the received message "

_M = TypeVar("_M", bound=Message)


@dataclass(frozen=True, slots=True)
class Refused:
    """What a deserializer returns instead of a message it must not hand to a servicer."""

    code: grpc.StatusCode
    details: str


class RefusedRequest(Exception):
    """Raised by a guarded request stream at a message that could not be accepted."""

    def __init__(self, refused: Refused) -> None:
        super().__init__(refused.details)
        self.refused = refused


# -- decoding -------------------------------------------------------------------------------------


def decode(cls: type[_M], raw: bytes, prefix: str = UNARY_PREFIX) -> _M | Refused:
    try:
        msg = _parse(cls, raw)
    except _TooDeep:
        return Refused(grpc.StatusCode.INVALID_ARGUMENT, TooManyOpsError.text)
    except Exception as exc:  # whatever upb raises, the request is unreadable
        return Refused(grpc.StatusCode.INTERNAL, prefix + _reason(exc))
    size = msg.ByteSize()
    msg.DiscardUnknownFields()
    if msg.ByteSize() != size:  # there were unknown fields: rare, so only now look closer
        wrong = _wrong_wire_type(_parse(cls, raw))
        if wrong:
            return Refused(grpc.StatusCode.INTERNAL, prefix + wrong)
    return msg


class _TooDeep(Exception):
    pass


def _reason(exc: Exception) -> str:
    # upb's text names the message type; gogo's would name the Go field. Keep upb's.
    return f"proto: {exc}" if str(exc) else f"proto: {type(exc).__name__}"


def _parse(cls: type[_M], raw: bytes) -> _M:
    try:
        return cls.FromString(raw)
    except DecodeError as exc:
        if cls is not rpc_pb2.TxnRequest:  # the only recursive message: others are shallow
            raise
        try:
            depth = _txn_depth(raw)
        except ValueError:
            raise exc from None  # malformed, not deep: upb's own error
    if depth > MAX_TXN_DEPTH:
        raise _TooDeep()
    # Within etcd's budget a txn is at most ~260 messages deep, far from what upb's recursive
    # decoder can take (tens of thousands crash it): lift upb's process-wide limit of 100 for
    # this one call. Every other message type has a depth bounded by its schema.
    with _deep_decoding():
        return cls.FromString(raw)


@contextlib.contextmanager
def _deep_decoding() -> Iterator[None]:
    upb.SetAllowOversizeProtos(True)
    try:
        yield
    finally:
        upb.SetAllowOversizeProtos(False)


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    n = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ValueError("bad varint")
        b = buf[pos]
        pos += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return n, pos


def _fields(buf: memoryview) -> Iterator[tuple[int, memoryview | None]]:
    """(field number, payload of a length-delimited field or None), at one level of the wire."""
    pos = 0
    while pos < len(buf):
        tag, pos = _varint(buf, pos)
        wt = tag & 7
        if wt == 0:
            _, pos = _varint(buf, pos)
            yield tag >> 3, None
        elif wt in (1, 5):
            pos += 8 if wt == 1 else 4
            yield tag >> 3, None
        elif wt == 2:
            n, pos = _varint(buf, pos)
            if pos + n > len(buf):
                raise ValueError("truncated")
            yield tag >> 3, buf[pos : pos + n]
            pos += n
        else:
            raise ValueError(f"wire type {wt}")


def _txn_depth(raw: bytes) -> int:
    """Levels of TxnRequest nesting (RequestOp.request_txn), without recursion; stops counting
    past ``MAX_TXN_DEPTH``. Raises ValueError if the wire is malformed on the way."""
    deepest = 0
    todo: list[tuple[memoryview, int]] = [(memoryview(raw), 1)]
    while todo and deepest <= MAX_TXN_DEPTH:
        txn, level = todo.pop()
        deepest = max(deepest, level)
        for num, payload in _fields(txn):
            if num not in (2, 3) or payload is None:  # success, failure: RequestOps
                continue
            for op_num, op_payload in _fields(payload):
                if op_num == 4 and op_payload is not None:  # request_txn
                    todo.append((op_payload, level + 1))
    return deepest


def _go_name(field_name: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in field_name.split("_"))


def _wrong_wire_type(msg: Message) -> str:
    """gogo's error for the first unknown field that is a known field sent with the wrong
    wire type, looking through every nested message; "" if there is none."""
    todo = [msg]
    while todo:
        m = todo.pop()
        fields = m.DESCRIPTOR.fields_by_number
        unknowns = UnknownFieldSet(m)
        for i in range(len(unknowns)):
            unknown = unknowns[i]
            known = fields.get(unknown.field_number)
            if known is not None:
                return (
                    f"proto: wrong wireType = {unknown.wire_type} for field {_go_name(known.name)}"
                )
        for fd, value in m.ListFields():
            if fd.message_type is None:
                continue
            todo.extend(value if fd.is_repeated else [value])
    return ""


# -- method handlers ------------------------------------------------------------------------------


def guard(handler: grpc.RpcMethodHandler[Any, Any]) -> grpc.RpcMethodHandler[Any, Any]:
    """``handler`` with etcd's answers to requests that cannot be decoded (see the module)."""
    deserializer = handler.request_deserializer
    if deserializer is None or not hasattr(deserializer, "__self__"):
        raise TypeError("guard expects a Message.FromString request deserializer")
    cls: type[Message] = deserializer.__self__
    serializer = handler.response_serializer
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(
            _unary(handler.unary_unary),
            request_deserializer=functools.partial(decode, cls, prefix=UNARY_PREFIX),
            response_serializer=serializer,
        )
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(
            _unary_stream(handler.unary_stream),
            request_deserializer=functools.partial(decode, cls, prefix=STREAM_PREFIX),
            response_serializer=serializer,
        )
    if handler.stream_stream is not None:
        return grpc.stream_stream_rpc_method_handler(
            _stream_stream(handler.stream_stream),
            request_deserializer=functools.partial(decode, cls, prefix=STREAM_PREFIX),
            response_serializer=serializer,
        )
    raise TypeError("etcd's client API has no stream-unary methods to guard")


async def _refuse(context: Context, refused: Refused) -> NoReturn:
    await context.abort(refused.code, refused.details)


# The handlers' behaviours are typed as sync callables by grpc's stubs; they are async here.


def _unary(fn: Callable[..., Any]) -> Callable[[Any, Context], Any]:
    async def behaviour(request: Any, context: Context) -> Any:
        if isinstance(request, Refused):
            await _refuse(context, request)
        return await fn(request, context)

    return behaviour


def _unary_stream(fn: Callable[..., Any]) -> Callable[[Any, Context], AsyncIterator[Any]]:
    async def behaviour(request: Any, context: Context) -> AsyncIterator[Any]:
        if isinstance(request, Refused):
            await _refuse(context, request)
        async for item in fn(request, context):
            yield item

    return behaviour


def _stream_stream(
    fn: Callable[..., Any],
) -> Callable[[AsyncIterator[Any], Context], AsyncIterator[Any]]:
    async def checked(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
        async for request in requests:
            if isinstance(request, Refused):
                raise RefusedRequest(request)
            yield request

    # An async generator, not a function returning one: gRPC runs anything else as a sync
    # handler in its thread pool.
    async def behaviour(requests: AsyncIterator[Any], context: Context) -> AsyncIterator[Any]:
        async for item in fn(checked(requests), context):
            yield item

    return behaviour
