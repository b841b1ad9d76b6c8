"""The generation scheduler on its own, with generators the test controls step by step: cancel
stops within one item, deadlines, the bounded queue, drain, and a worker that outlives failures."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Coroutine, Generator
from typing import Any

import pytest

from verticals.llm._api_errors import APIError
from verticals.llm._scheduler import ClientGone, Job, Scheduler
from verticals.llm.errors import LLMError


class Steps:
    """A generator factory that yields one item per `release()`, and records what it produced and whether
    it was closed."""

    def __init__(self) -> None:
        self.permits = threading.Semaphore(0)
        self.produced = 0
        self.started = threading.Event()
        self.closed = threading.Event()

    def release(self, n: int = 1) -> None:
        for _ in range(n):
            self.permits.release()

    def __call__(self) -> Generator[int, None, None]:
        self.started.set()
        try:
            while True:
                if not self.permits.acquire(timeout=10):
                    return
                self.produced += 1
                yield self.produced
        finally:
            self.closed.set()


def items(*values: int) -> Callable[[], Generator[int, None, None]]:
    def generate() -> Generator[int, None, None]:
        yield from values

    return generate


def run(test: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), timeout=30))


def test_cancel_stops_the_generator_within_one_item() -> None:
    steps, scheduler = Steps(), Scheduler(max_queue=2)

    async def test() -> None:
        job = Job(steps, time_limit=30)
        scheduler.submit(job)
        steps.release(3)
        assert [await job.next_item() for _ in range(3)] == [1, 2, 3]
        job.cancel()
        steps.release(5)  # plenty of permits: only the cancel flag can stop it
        assert await asyncio.to_thread(steps.closed.wait, 5)
        assert steps.produced <= 4
        with pytest.raises(ClientGone):
            await job.next_item()

    run(test)
    scheduler.close()


def test_a_job_past_its_deadline_fails_with_a_503_and_is_closed() -> None:
    scheduler = Scheduler(max_queue=2)

    def slow() -> Generator[int, None, None]:
        while True:
            time.sleep(0.05)
            yield 1

    async def test() -> None:
        job = Job(slow, time_limit=0.3)
        scheduler.submit(job)
        with pytest.raises(APIError) as caught:
            while await job.next_item() is not None:
                pass
        assert caught.value.status == 503 and caught.value.code == "timeout"
        follow = Job(items(7), time_limit=5)
        scheduler.submit(follow)
        assert await follow.next_item() == 7 and await follow.next_item() is None

    run(test)
    scheduler.close()


def test_the_queue_is_bounded_and_says_when_to_retry() -> None:
    steps, scheduler = Steps(), Scheduler(max_queue=1)

    async def test() -> None:
        running, waiting = Job(steps, 30), Job(steps, 30)
        scheduler.submit(running)
        assert await asyncio.to_thread(steps.started.wait, 5)
        scheduler.submit(waiting)
        assert scheduler.queued == 1 and scheduler.busy
        for refuse in (scheduler.check_room, lambda: scheduler.submit(Job(steps, 30))):
            with pytest.raises(APIError) as caught:
                refuse()
            assert caught.value.status == 429 and int(caught.value.headers["Retry-After"]) >= 1
        waiting.cancel()  # a client that left frees its place at once
        assert scheduler.queued == 0
        scheduler.check_room()
        running.cancel()
        steps.release()

    run(test)
    scheduler.close()


def test_a_cancelled_waiting_job_never_starts() -> None:
    first, second, scheduler = Steps(), Steps(), Scheduler(max_queue=2)

    async def test() -> None:
        running, waiting = Job(first, 30), Job(second, 30)
        scheduler.submit(running)
        scheduler.submit(waiting)
        waiting.cancel()
        first.release()
        assert await running.next_item() == 1
        running.cancel()
        first.release()
        await asyncio.to_thread(first.closed.wait, 5)
        probe = Job(items(1), 5)
        scheduler.submit(probe)
        assert await probe.next_item() == 1  # the worker went past the cancelled job
        assert not second.started.is_set()

    run(test)
    scheduler.close()


def test_drain_answers_waiting_jobs_at_once_and_gives_the_running_one_its_grace() -> None:
    steps, scheduler = Steps(), Scheduler(max_queue=2)

    async def test() -> None:
        running, waiting = Job(steps, 30), Job(steps, 30)
        scheduler.submit(running)
        scheduler.submit(waiting)
        await asyncio.to_thread(steps.started.wait, 5)
        scheduler.drain(grace=0.3)
        with pytest.raises(APIError) as caught:
            await waiting.next_item()
        assert caught.value.code == "server_shutting_down"
        with pytest.raises(APIError) as caught:
            scheduler.submit(Job(steps, 30))
        assert caught.value.status == 503
        start = time.monotonic()
        with pytest.raises(APIError) as caught:
            while True:
                steps.release()
                if await running.next_item() is None:
                    break
        assert caught.value.code == "server_shutting_down" and time.monotonic() - start < 3

    run(test)
    scheduler.close()


@pytest.mark.parametrize(("failure", "status"), [(LLMError("the chat template refused"), 400),
                                                 (RuntimeError("CUDA out of memory"), 500)])
def test_a_failing_generation_is_an_error_answer_and_the_worker_goes_on(failure: Exception, status: int) -> None:
    scheduler = Scheduler(max_queue=2)

    def broken() -> Generator[int, None, None]:
        yield 1
        raise failure

    async def test() -> None:
        job = Job(broken, 5)
        scheduler.submit(job)
        assert await job.next_item() == 1
        with pytest.raises(APIError) as caught:
            await job.next_item()
        assert caught.value.status == status
        after = Job(items(2), 5)
        scheduler.submit(after)
        assert await after.next_item() == 2

    run(test)
    scheduler.close()
