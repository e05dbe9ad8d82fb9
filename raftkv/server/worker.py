"""One background thread that runs blocking calls in order and answers with asyncio futures.

The driver keeps its Raft log and its state machine each on a thread of their own (LMDB write
transactions and fsyncs must not stall the event loop). ``loop.run_in_executor`` over a
one-worker ``ThreadPoolExecutor`` did that at a price paid per call, twice per Ready: a
``concurrent.futures.Future`` with its condition variable, a work item, the executor's
thread-count bookkeeping, and an asyncio future chained to the concurrent one by callbacks on
both sides. Under ``etcdctl check perf --load=m`` those hand-offs were ~4% of the GIL-holding
samples (py-spy). Here a call costs one ``SimpleQueue.put`` and one ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["SerialWorker"]

T = TypeVar("T")

_STOP = object()


def _resolve(future: asyncio.Future[Any], ok: bool, outcome: Any) -> None:
    if future.done():  # the caller cancelled it
        return
    if ok:
        future.set_result(outcome)
    else:
        future.set_exception(outcome)


class SerialWorker:
    """Runs submitted calls one at a time, in submission order, on one daemon thread."""

    def __init__(self, name: str) -> None:
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """Queue ``fn(*args)``; the future resolves on the calling thread's running loop.

        Cancelling the future stops nothing: a call that has started, and unlike with a thread
        pool one still queued, runs to the end and its outcome is dropped. A persist handed over
        before a stop must still happen, in order.
        """
        if self._closed:
            raise RuntimeError("cannot submit to a worker that was shut down")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put((loop, future, fn, args))
        return future

    def shutdown(self, *, wait: bool = True) -> None:
        """Run what was already submitted, then stop the thread."""
        if not self._closed:
            self._closed = True
            self._queue.put(_STOP)
        if wait and self._thread is not threading.current_thread():
            self._thread.join()

    def _run(self) -> None:
        get = self._queue.get
        while True:
            item = get()
            if item is _STOP:
                return
            loop, future, fn, args = item
            try:
                outcome, ok = fn(*args), True
            except BaseException as exc:  # handed to the awaiting coroutine, as executors do
                outcome, ok = exc, False
            # A closed loop raises RuntimeError: nobody is waiting any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_resolve, future, ok, outcome)
            # Not kept alive while waiting for the next call: a Ready, a batch of entries.
            del item, loop, future, fn, args, outcome
