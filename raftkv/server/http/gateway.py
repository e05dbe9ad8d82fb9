"""etcd's JSON gateway: POST /v3/... with a JSON body, answered as etcd's grpc-gateway answers.

Like etcd's gateway, this one is a client of the member's own gRPC server (over loopback): every
request goes through the same servicers, input checks, error table and call counters as a gRPC
call, so an HTTP client gets exactly the answer and the error a gRPC client would, including
UNIMPLEMENTED for the services raftkv does not have yet (Lease, Auth, Lock, Election).

* Unary: the JSON response, or an error body (``jsonpb.error_body``) with the HTTP status of
  the gRPC code. A body that is not JSON, or does not fit the request, is INVALID_ARGUMENT.
* Streams (Watch, Snapshot, LeaseKeepAlive, Observe): one ``{"result": ...}`` per HTTP chunk.
  The request body is read as a sequence of JSON values, each sent on the gRPC stream; at the
  end of the body the gateway half-closes, and the Watch stays open until the client goes away.
  A first value that cannot be read is etcd's UNKNOWN (500); a later one ends the sending side.
  An error before the first message sets the HTTP status; after it, it is the last chunk.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import json
from collections import deque
from typing import Any, TypeAlias

import grpc
from aiohttp import StreamReader, web
from google.protobuf.message import Message

from raftkv.server.http.jsonpb import (
    JsonRequestError,
    error_body,
    http_status,
    parse_body,
    parse_message,
    raw_objects,
    result_chunk,
    stream_error_chunk,
    to_json,
)
from raftkv.server.http.routes import ROUTES, Route

__all__ = ["Gateway", "gateway_path"]

_JSON = "application/json"


def gateway_path(path: str) -> str:
    """etcd 3.4 and later rewrite ``/v3beta/`` to ``/v3/`` (``/v3alpha/`` is gone)."""
    if path.startswith("/v3beta/"):
        return "/v3/" + path[len("/v3beta/") :]
    return path


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()


def _metadata(request: web.Request) -> tuple[tuple[str, str], ...]:
    # etcd's gateway passes the token in the Authorization header on as gRPC metadata.
    token = request.headers.get("Authorization")
    return (("authorization", token),) if token else ()


def _error(code: grpc.StatusCode, message: str) -> web.Response:
    return web.Response(
        status=http_status(code), body=error_body(code, message), content_type=_JSON
    )


class _JsonStream:
    """The JSON values of a request body, read as they arrive."""

    def __init__(self, content: StreamReader) -> None:
        self._content = content
        self._utf8 = codecs.getincrementaldecoder("utf-8")()
        self._json = json.JSONDecoder()
        self._values: deque[Any] = deque()
        self._text = ""
        self._eof = False

    async def next(self, cls: type[Message]) -> Message | None:
        """The next message, None at the end of the body; JsonRequestError if unreadable."""
        while not self._values:
            if self._eof:
                if self._text.strip():
                    self._text = ""
                    raise JsonRequestError("unexpected EOF")
                return None
            chunk = await self._content.readany()
            try:
                self._text += self._utf8.decode(chunk, final=not chunk)
            except UnicodeDecodeError as exc:
                raise JsonRequestError(str(exc)) from None
            self._eof = not chunk
            values, self._text = raw_objects(self._json, self._text)
            self._values.extend(values)
        return parse_message(self._values.popleft(), cls)


class Gateway:
    """The handler of every ``/v3/`` and ``/v3beta/`` path, over a channel to the member."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._channel = channel

    async def handle(self, request: web.Request) -> web.StreamResponse:
        route = ROUTES.get(gateway_path(request.path))
        if route is None:
            return web.Response(status=404, text="Not Found\n")
        if request.method != "POST":
            return web.Response(status=405, text="Method Not Allowed\n")
        if route.client_stream:
            return await self._bidi(request, route)
        try:
            message = parse_body(await request.read(), route.request)
        except JsonRequestError as exc:
            return _error(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        if route.server_stream:
            call = self._channel.unary_stream(route.path, _serialize, route.response.FromString)(
                message, metadata=_metadata(request)
            )
            return await _relay(request, call)
        unary = self._channel.unary_unary(route.path, _serialize, route.response.FromString)
        try:
            response = await unary(message, metadata=_metadata(request))
        except grpc.aio.AioRpcError as exc:
            return _error(exc.code(), exc.details() or "")
        return web.Response(body=to_json(response), content_type=_JSON)

    async def _bidi(self, request: web.Request, route: Route) -> web.StreamResponse:
        reader = _JsonStream(request.content)
        try:
            first = await reader.next(route.request)
        except JsonRequestError as exc:  # etcd: the first message's error, as UNKNOWN
            return _error(grpc.StatusCode.UNKNOWN, str(exc))
        call = self._channel.stream_stream(route.path, _serialize, route.response.FromString)(
            metadata=_metadata(request)
        )
        feeder = asyncio.create_task(_feed(call, first, reader, route.request))
        try:
            return await _relay(request, call)
        finally:
            feeder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await feeder


async def _feed(
    call: grpc.aio.StreamStreamCall[Message, Message],
    first: Message | None,
    reader: _JsonStream,
    cls: type[Message],
) -> None:
    """Send the body's messages on the stream, then half-close (the server decides the rest)."""
    message = first
    try:
        while message is not None:
            await call.write(message)
            message = await reader.next(cls)
    except JsonRequestError:
        pass  # etcd's gateway stops sending at a value it cannot read
    except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
        return  # the call has ended; the relay reports how
    with contextlib.suppress(grpc.aio.AioRpcError, asyncio.InvalidStateError):
        await call.done_writing()


_Call: TypeAlias = "grpc.aio.UnaryStreamCall[Any, Any] | grpc.aio.StreamStreamCall[Any, Any]"


async def _relay(request: web.Request, call: _Call) -> web.StreamResponse:
    """Write each message of ``call`` as one chunk; cancel the call when the client goes."""
    response: web.StreamResponse | None = None
    try:
        async for message in call:
            if response is None:
                response = web.StreamResponse(headers={"Content-Type": _JSON})
                response.enable_chunked_encoding()
                await response.prepare(request)
            await response.write(result_chunk(message))
    except grpc.aio.AioRpcError as exc:
        chunk = stream_error_chunk(exc.code(), exc.details() or "")
        if response is None:
            return web.Response(status=http_status(exc.code()), body=chunk, content_type=_JSON)
        await response.write(chunk)
    finally:
        call.cancel()
    if response is None:
        response = web.StreamResponse(headers={"Content-Type": _JSON})
        response.enable_chunked_encoding()
        await response.prepare(request)
    await response.write_eof()
    return response
