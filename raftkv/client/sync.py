"""``Client``: the synchronous twin of :class:`~raftkv.client.aio.AsyncClient`.

It owns an event loop in a daemon thread and runs the async client there, so both have the
same methods, arguments, results, errors and failover rules. ``watch`` returns an ordinary
iterator.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Coroutine, Iterator, Sequence
from typing import Any, TypeVar

from raftkv.client.aio import DEFAULT_TIMEOUT_S, AsyncClient, AsyncWatch
from raftkv.client.txn import Txn
from raftkv.client.types import (
    CompactResult,
    DeleteResult,
    MemberListResult,
    PutResult,
    RangeResult,
    StatusResult,
    TxnResult,
    WatchResponse,
)
from raftkv.pb.etcdserverpb import rpc_pb2

__all__ = ["Client", "Watch"]

_T = TypeVar("_T")


class Client:
    """A synchronous etcd v3 client: ``with Client(["127.0.0.1:2379"]) as c: c.put("k", "v")``."""

    def __init__(self, endpoints: Sequence[str] | str = ("127.0.0.1:2379",), **kw: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="raftkv-client", daemon=True
        )
        self._thread.start()
        try:
            self._aio: AsyncClient = self._run(_make(endpoints, kw))
        except BaseException:  # bad arguments: stop the loop thread we just started
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
            self._loop.close()
            raise
        self.timeout_s = self._aio.timeout_s

    def _run(self, coro: Coroutine[Any, Any, _T]) -> _T:
        fut = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return fut.result()
        except KeyboardInterrupt:
            fut.cancel()
            raise

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._loop.is_closed():
            return
        self._run(self._aio.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    @property
    def endpoints(self) -> list[str]:
        return self._aio.endpoints

    def get(self, key: bytes | str, range_end: bytes | str | None = None, **kw: Any) -> RangeResult:
        return self._run(self._aio.get(key, range_end, **kw))

    range = get

    def put(self, key: bytes | str, value: bytes | str, **kw: Any) -> PutResult:
        return self._run(self._aio.put(key, value, **kw))

    def delete(
        self, key: bytes | str, range_end: bytes | str | None = None, **kw: Any
    ) -> DeleteResult:
        return self._run(self._aio.delete(key, range_end, **kw))

    def txn(self, txn: Txn | rpc_pb2.TxnRequest, **kw: Any) -> TxnResult:
        return self._run(self._aio.txn(txn, **kw))

    def compact(self, revision: int, **kw: Any) -> CompactResult:
        return self._run(self._aio.compact(revision, **kw))

    def member_list(self, **kw: Any) -> MemberListResult:
        return self._run(self._aio.member_list(**kw))

    def status(self, endpoint: str | None = None, **kw: Any) -> StatusResult:
        return self._run(self._aio.status(endpoint, **kw))

    def watch(self, key: bytes | str, range_end: bytes | str | None = None, **kw: Any) -> Watch:
        return Watch(self, self._aio.watch(key, range_end, **kw))


async def _make(endpoints: Sequence[str] | str, kw: dict[str, Any]) -> AsyncClient:
    return AsyncClient(endpoints, **kw)


class Watch:
    """Iterator of :class:`WatchResponse`; ``next(w)`` blocks. Same guarantees as AsyncWatch."""

    def __init__(self, client: Client, watch: AsyncWatch) -> None:
        self._client = client
        self.aio = watch
        self._it = watch.__aiter__()
        self._pending: asyncio.Future[WatchResponse] | None = None

    def __iter__(self) -> Iterator[WatchResponse]:
        return self

    def __next__(self) -> WatchResponse:
        try:
            return self._client._run(_shielded_next(self))
        except StopAsyncIteration:
            raise StopIteration from None

    def next(self, timeout_s: float | None = DEFAULT_TIMEOUT_S) -> WatchResponse | None:
        """The next response, or None after ``timeout_s`` (the watch keeps going)."""
        fut = asyncio.run_coroutine_threadsafe(_shielded_next(self), self._client._loop)
        try:
            return fut.result(timeout_s)
        except concurrent.futures.TimeoutError:
            return None
        except StopAsyncIteration:
            raise StopIteration from None

    @property
    def next_revision(self) -> int:
        return self.aio.next_revision

    @property
    def resumes(self) -> int:
        return self.aio.resumes

    def request_progress(self) -> None:
        self._client._run(self.aio.request_progress())

    def cancel(self) -> None:
        self._client._run(self.aio.cancel())
        self._client._run(_aclose(self._it))

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancel()


async def _aclose(it: Any) -> None:
    aclose = getattr(it, "aclose", None)
    if aclose is not None:
        with contextlib.suppress(RuntimeError):  # a pending __anext__ is still running
            await aclose()


async def _shielded_next(w: Watch) -> WatchResponse:
    """``__anext__`` that survives a caller's timeout: the same pending step is awaited again."""
    if w._pending is None:
        w._pending = asyncio.ensure_future(w._it.__anext__())
    task = w._pending
    try:
        result = await asyncio.shield(task)
    except asyncio.CancelledError:
        raise
    except BaseException:
        w._pending = None
        raise
    w._pending = None
    return result
