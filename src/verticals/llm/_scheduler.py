"""One generation at a time, on one worker thread, behind a bounded queue.

Why: one CPU model answers one request at a time. The server used to hold a lock across a
stream's `yield`s, so a client that stopped reading locked it for good. Here the model belongs
to one worker thread; requests wait in a bounded queue (full: an honest 429 with `Retry-After`,
not unbounded waiting); between tokens the worker checks each job's cancel flag and deadline, so
a client that leaves, a request past its time limit, or a shutdown stops generation within one
token. Nothing on the network path ever waits on the model.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import queue
import threading
import time
import uuid
from collections.abc import Callable, Generator
from typing import Generic, TypeVar

from verticals.llm._api_errors import APIError, as_api_error, shutting_down

logger = logging.getLogger("verticals.llm.serve")
T = TypeVar("T")

#: the worker answers a job's time limit itself; the waiting side gives it this much longer
_SLACK = 2.0


class ClientGone(Exception):
    """The client disconnected; nobody is left to answer."""


class Job(Generic[T]):
    """One request's generation: `work()` runs on the worker thread, its items reach `next_item()`.

    Must be created on the event loop's thread (its queue belongs to that loop).
    """

    def __init__(self, work: Callable[[], Generator[T, None, None]], time_limit: float) -> None:
        self.id = uuid.uuid4().hex[:12]
        self.work, self.time_limit = work, time_limit
        self.deadline = time.monotonic() + time_limit
        self.cancelled = threading.Event()
        self.shutting_down = False
        self._loop = asyncio.get_running_loop()
        self._events: asyncio.Queue[tuple[str, object]] = asyncio.Queue()

    def cancel(self) -> None:
        """Stop this job; a waiting `next_item` raises `ClientGone`. Safe from any thread."""
        if not self.cancelled.is_set():
            self.cancelled.set()
            self._put("cancelled")

    def timeout_error(self) -> APIError:
        if self.shutting_down:
            return shutting_down()
        return APIError(503, f"The request ran past this server's time limit of {self.time_limit:g} s "
                             "(ask for fewer max_tokens, or start the server with a longer --timeout).",
                        code="timeout")

    async def next_item(self) -> T | None:
        """The next generated item, or None when the generation has ended.

        Raises:
            APIError: the generation failed or ran out of time.
            ClientGone: the job was cancelled.
        """
        remaining = self.deadline + _SLACK - time.monotonic()
        try:
            async with asyncio.timeout(max(remaining, 0)):
                kind, value = await self._events.get()
        except TimeoutError:
            self.cancel()
            raise self.timeout_error() from None
        if kind == "item":
            return value  # type: ignore[return-value]
        if kind == "done":
            return None
        if kind == "cancelled":
            raise ClientGone
        raise value  # type: ignore[misc]

    # -- worker side ----------------------------------------------------------------------------
    def _put(self, kind: str, value: object = None) -> None:
        try:
            self._loop.call_soon_threadsafe(self._events.put_nowait, (kind, value))
        except RuntimeError:  # the event loop is closed: nobody will read this
            self.cancelled.set()


class Scheduler:
    """Runs jobs one at a time on a worker thread; at most `max_queue` jobs wait behind the running one.

    Args:
        max_queue (`int`): jobs allowed to wait; one more is refused with a 429.
    """

    def __init__(self, max_queue: int) -> None:
        self.max_queue = max_queue
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._waiting: list[Job] = []
        self._active: Job | None = None
        self._closing = False
        self._mean_seconds = 1.0  # running mean of a job's duration, for Retry-After
        self._thread = threading.Thread(target=self._run, name="verticals-generation", daemon=True)
        self._thread.start()

    @property
    def queued(self) -> int:
        with self._lock:
            return sum(1 for job in self._waiting if not job.cancelled.is_set())

    @property
    def busy(self) -> bool:
        return self._active is not None

    def check_room(self) -> None:
        """Refuse now, before any work on a request, if `submit` would: 429 (queue full) or 503 (shutting down)."""
        with self._lock:
            self._refuse_if_full()

    def submit(self, job: Job) -> None:
        """Queue `job`, or refuse it with a 429 (queue full) or a 503 (shutting down)."""
        with self._lock:
            self._refuse_if_full()
            self._waiting.append(job)
        self._queue.put(job)

    def _refuse_if_full(self) -> None:
        if self._closing:
            raise shutting_down()
        self._waiting = [j for j in self._waiting if not j.cancelled.is_set()]
        if len(self._waiting) + (self._active is not None) > self.max_queue:
            wait = math.ceil(self._mean_seconds * (len(self._waiting) + 1))
            raise APIError(429, f"This server is busy: {len(self._waiting)} requests are waiting for the model. "
                                f"Retry after {wait} s.", code="rate_limit_exceeded",
                           headers={"Retry-After": str(min(max(wait, 1), 600))})

    def drain(self, grace: float) -> None:
        """Refuse new jobs, answer waiting ones with a 503, give the running one `grace` seconds."""
        with self._lock:
            self._closing = True
            waiting, self._waiting = self._waiting, []
            active = self._active
        for job in waiting:
            job.shutting_down = True
            job.deadline = time.monotonic()
            job._put("error", job.timeout_error())
        if active is not None:
            active.shutting_down = True
            active.deadline = min(active.deadline, time.monotonic() + grace)

    def close(self, grace: float = 0.0) -> None:
        """Drain, then stop the worker thread (waiting at most `grace` + 1 s for it)."""
        self.drain(grace)
        self._queue.put(None)
        self._thread.join(timeout=grace + 1.0)

    # -- the worker thread ----------------------------------------------------------------------
    def _run(self) -> None:
        while (job := self._queue.get()) is not None:
            with self._lock:
                if job not in self._waiting:  # answered by drain() while it waited
                    continue
                self._waiting.remove(job)
                self._active = job
            started = time.monotonic()
            try:
                self._execute(job)
            finally:
                with self._lock:
                    self._active = None
                    if not job.cancelled.is_set():
                        self._mean_seconds = 0.8 * self._mean_seconds + 0.2 * (time.monotonic() - started)

    def _execute(self, job: Job) -> None:
        if job.cancelled.is_set():
            return
        if time.monotonic() >= job.deadline:
            job._put("error", job.timeout_error())
            return
        try:
            with contextlib.closing(job.work()) as items:
                for item in items:
                    job._put("item", item)
                    if job.cancelled.is_set():
                        return
                    if time.monotonic() >= job.deadline:
                        job._put("error", job.timeout_error())
                        return
        except Exception as err:  # a model error is the client's 400; a bug or a failing device a logged 500
            answer = as_api_error(err)
            if answer.status >= 500:
                logger.exception("generation failed (job %s)", job.id)
            job._put("error", answer)
        else:
            job._put("done")
