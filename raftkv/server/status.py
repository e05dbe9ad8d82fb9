"""The one place where exceptions become gRPC statuses, for every client-facing servicer.

* A ``KVError`` (``raftkv.kv.errors`` and ``raftkv.server.errors``) carries its own gRPC code
  name and etcd's text. On the wire every etcd error text starts with ``"etcdserver: "``
  (api/v3rpc/rpctypes), including the MVCC ones ("etcdserver: mvcc: required revision has been
  compacted"), so the prefix is added where the text lacks it.
* Other known exceptions are mapped by ``_TABLE`` (looked up along the exception's MRO).
* Anything else is a bug: it is logged with its traceback and answered with UNKNOWN and a
  generic message. The server keeps serving.

Servicer methods are wrapped with :func:`unary_rpc` or :func:`stream_rpc` (in the manner of
httpcore's ``map_exceptions``), so their bodies simply raise.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, NoReturn, TypeAlias, TypeVar

import grpc
from grpc import aio

from raftkv.errors import CorruptionError, NotLeader, OutcomeUnknown, ProposalDropped
from raftkv.kv.errors import KVError
from raftkv.server.errors import LeaderChangedError, NotLeaderError, RequestTimeoutError

__all__ = [
    "INTERNAL_ERROR_TEXT",
    "Context",
    "abort",
    "status_of",
    "stream_rpc",
    "unary_rpc",
]

logger = logging.getLogger(__name__)

Context: TypeAlias = "aio.ServicerContext[Any, Any]"

ETCD_PREFIX = "etcdserver: "
INTERNAL_ERROR_TEXT = "etcdserver: internal error (details are in the member's log)"

_C = grpc.StatusCode
_TABLE: dict[type[BaseException], tuple[grpc.StatusCode, str]] = {
    # Our own per-call deadline (see kv_service): the outcome of a write is unknown.
    TimeoutError: (_C.UNAVAILABLE, RequestTimeoutError.text),
    OutcomeUnknown: (_C.UNAVAILABLE, RequestTimeoutError.text),
    NotLeader: (_C.FAILED_PRECONDITION, NotLeaderError.text),
    ProposalDropped: (_C.UNAVAILABLE, LeaderChangedError.text),
    CorruptionError: (_C.DATA_LOSS, "etcdserver: corrupt cluster"),
}


def status_of(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The gRPC code and details for an exception raised while serving a call."""
    if isinstance(exc, KVError):
        code = getattr(grpc.StatusCode, exc.code, None)
        if isinstance(code, grpc.StatusCode):
            text = str(exc)
            return code, text if text.startswith(ETCD_PREFIX) else ETCD_PREFIX + text
    else:
        for cls in type(exc).__mro__:
            hit = _TABLE.get(cls)
            if hit is not None:
                return hit
    logger.error("unexpected error while serving a client call", exc_info=exc)
    return grpc.StatusCode.UNKNOWN, INTERNAL_ERROR_TEXT


async def abort(context: Context, exc: BaseException) -> NoReturn:
    code, details = status_of(exc)
    await context.abort(code, details)


_S = TypeVar("_S")
_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")


def unary_rpc(
    fn: Callable[[_S, _Req, Context], Coroutine[Any, Any, _Resp]],
) -> Callable[[_S, _Req, Context], Coroutine[Any, Any, _Resp]]:
    """Wrap a unary servicer method so that whatever it raises ends the call with a status."""

    @functools.wraps(fn)
    async def wrapper(self: _S, request: _Req, context: Context) -> _Resp:
        try:
            return await fn(self, request, context)
        except aio.AbortError:
            raise  # context.abort() was already called
        except Exception as exc:
            await abort(context, exc)

    return wrapper


def stream_rpc(
    fn: Callable[[_S, _Req, Context], AsyncIterator[_Resp]],
) -> Callable[[_S, _Req, Context], AsyncIterator[_Resp]]:
    """Like :func:`unary_rpc`, for a server-streaming method written as an async generator."""

    @functools.wraps(fn)
    async def wrapper(self: _S, request: _Req, context: Context) -> AsyncIterator[_Resp]:
        try:
            async for item in fn(self, request, context):
                yield item
        except aio.AbortError:
            raise
        except Exception as exc:
            await abort(context, exc)

    return wrapper
