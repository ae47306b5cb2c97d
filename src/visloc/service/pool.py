"""The bounded work queue in front of the engine: admission (429 when full), a fixed pool of worker
threads, and the per-request deadline (504).

A request is admitted before its image is decoded and keeps its place until its work has finished in a
worker -- also when its client was already answered 504 -- so the number of requests being decoded,
waiting or running never exceeds ``workers + queue_size``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from .errors import RequestError

T = TypeVar("T")


class Ticket:
    """One admitted request's place in the pool; :meth:`release` is idempotent."""

    def __init__(self, pool: WorkPool) -> None:
        self._pool = pool
        self._released = False
        self.submitted = False
        self.started_at = time.perf_counter()

    def release(self) -> None:
        with self._pool._lock:
            if not self._released:
                self._released = True
                self._pool._admitted -= 1


class WorkPool:
    """Args:
    workers: worker threads.
    capacity: requests admitted at once (running + queued).
    retry_after_s: the ``Retry-After`` of the 429 a request gets when the pool is full.
    """

    def __init__(self, workers: int, capacity: int, retry_after_s: int = 1) -> None:
        self.workers = workers
        self.capacity = capacity
        self.retry_after_s = retry_after_s
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="visloc-worker")
        self._lock = threading.Lock()
        self._admitted = 0
        self._running = 0

    @property
    def running(self) -> int:
        return self._running

    @property
    def waiting(self) -> int:
        """Admitted requests not running in a worker (being decoded or queued): the queue depth."""
        with self._lock:
            return max(0, self._admitted - self._running)

    def admit(self) -> Ticket:
        """A place for one request, or a 429 with ``Retry-After`` when all are taken."""
        with self._lock:
            if self._admitted >= self.capacity:
                raise RequestError(429, f"the server is busy ({self.capacity} requests queued or running); "
                                        f"retry in {self.retry_after_s} s",
                                   {"Retry-After": str(self.retry_after_s)})
            self._admitted += 1
        return Ticket(self)

    async def run(self, ticket: Ticket, fn: Callable[[], T], deadline: float, limit_s: float) -> tuple[T, float]:
        """Run ``fn`` in a worker; its result and the seconds it waited for the worker.

        Args:
            deadline: the :func:`time.perf_counter` by which it must have finished.
            limit_s: the request timeout, for the message of the 504.

        Raises:
            RequestError: 504 when it has not finished by ``deadline`` (a queued call is then dropped; a
                running one finishes in its worker, holding the ticket until then).
        """
        submitted = time.perf_counter()
        waited = {"s": 0.0}

        def job() -> T:
            waited["s"] = time.perf_counter() - submitted
            with self._lock:
                self._running += 1
            try:
                return fn()
            finally:
                with self._lock:
                    self._running -= 1

        future = self._executor.submit(job)
        ticket.submitted = True
        future.add_done_callback(lambda _: ticket.release())
        try:
            result = await asyncio.wait_for(asyncio.wrap_future(future), max(deadline - time.perf_counter(), 0.0))
        except asyncio.TimeoutError:
            raise RequestError(504, f"no answer within the server's timeout of {limit_s:.3g} s") from None
        return result, waited["s"]

    def shutdown(self) -> None:
        """Drop the queued calls and wait for the running ones."""
        self._executor.shutdown(wait=True, cancel_futures=True)
