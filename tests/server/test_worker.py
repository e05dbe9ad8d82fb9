"""SerialWorker: the driver's disk and apply threads. Each test runs its own event loop."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from raftkv.server.worker import SerialWorker


def test_calls_run_in_order_on_one_thread_off_the_loop() -> None:
    asyncio.run(_calls_run_in_order_on_one_thread_off_the_loop())


async def _calls_run_in_order_on_one_thread_off_the_loop() -> None:
    worker = SerialWorker("test-worker")
    seen: list[tuple[int, str]] = []

    def job(i: int) -> int:
        time.sleep(0.001 * (5 - i))  # later jobs are quicker: order must still hold
        seen.append((i, threading.current_thread().name))
        return i * i

    try:
        results = await asyncio.gather(*(worker.submit(job, i) for i in range(5)))
    finally:
        worker.shutdown()
    assert results == [0, 1, 4, 9, 16]
    assert [i for i, _ in seen] == [0, 1, 2, 3, 4]
    assert {name for _, name in seen} == {"test-worker"}


def test_an_exception_reaches_the_awaiting_coroutine_and_the_worker_goes_on() -> None:
    asyncio.run(_an_exception_reaches_the_awaiting_coroutine_and_the_worker_goes_on())


async def _an_exception_reaches_the_awaiting_coroutine_and_the_worker_goes_on() -> None:
    worker = SerialWorker("test-worker")

    def fail() -> None:
        raise ValueError("disk full")

    try:
        with pytest.raises(ValueError, match="disk full"):
            await worker.submit(fail)
        assert await worker.submit(len, "abc") == 3
    finally:
        worker.shutdown()


def test_a_cancelled_caller_does_not_break_the_worker() -> None:
    asyncio.run(_a_cancelled_caller_does_not_break_the_worker())


async def _a_cancelled_caller_does_not_break_the_worker() -> None:
    worker = SerialWorker("test-worker")
    started = threading.Event()
    release = threading.Event()

    def slow() -> str:
        started.set()
        release.wait(5)
        return "late"

    try:
        future = worker.submit(slow)
        await asyncio.to_thread(started.wait, 5)
        future.cancel()
        release.set()
        assert await worker.submit(str, 7) == "7"
        assert future.cancelled()
    finally:
        worker.shutdown()


def test_shutdown_runs_what_was_queued_then_refuses_more() -> None:
    asyncio.run(_shutdown_runs_what_was_queued_then_refuses_more())


async def _shutdown_runs_what_was_queued_then_refuses_more() -> None:
    worker = SerialWorker("test-worker")
    done: list[int] = []
    for i in range(3):
        worker.submit(done.append, i)
    worker.shutdown(wait=True)
    assert done == [0, 1, 2]
    with pytest.raises(RuntimeError, match="shut down"):
        worker.submit(done.append, 9)
