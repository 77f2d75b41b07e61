"""Background jobs for slow questions (AI calls), so the engine thread never waits on them.

A job runs on a small thread pool; its result is handed back on the engine thread by
`drain()`, which is where every effect (metadata, queue, audit, notifications) happens. One job
per key at a time; a job that raises is logged and its key rests before it may run again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Hashable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

log = logging.getLogger("orchestrator.assist.jobs")

T = TypeVar("T")

FAILED_JOB_REST_SECONDS = 30.0


class Jobs:
    def __init__(self, workers: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="assist")
        self.clock = clock
        self._inflight: dict[Hashable, tuple[Future[Any], Callable[[Any], None]]] = {}
        self._resting: dict[Hashable, float] = {}

    def submit(self, key: Hashable, work: Callable[[], T], on_done: Callable[[T], None]) -> bool:
        """Start `work` on the pool unless the key's job is in flight or resting; False if not started."""
        if key in self._inflight or self._resting.get(key, 0.0) > self.clock():
            return False
        self._inflight[key] = (self.pool.submit(work), on_done)
        return True

    def running(self, key: Hashable) -> bool:
        return key in self._inflight

    def busy(self) -> bool:
        return bool(self._inflight)

    def drain(self) -> None:
        for key, (future, on_done) in list(self._inflight.items()):
            if not future.done():
                continue
            del self._inflight[key]
            try:
                on_done(future.result())
            except Exception:  # a bug in one job must not stop the orchestrator
                log.exception("background job %s failed; retrying in %ss", key, FAILED_JOB_REST_SECONDS)
                self._resting[key] = self.clock() + FAILED_JOB_REST_SECONDS

    def wait(self, timeout: float) -> None:
        """Tests and --once: wait (bounded) for the jobs in flight, then hand their results back."""
        deadline = self.clock() + timeout
        while self._inflight and self.clock() < deadline:
            time.sleep(0.01)
            self.drain()

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
