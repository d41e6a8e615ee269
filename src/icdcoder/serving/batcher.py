"""Micro-batching: concurrent requests share one model call.

Request handlers `submit()` a job (one or more notes plus options) and wait on the returned future. One
worker thread owns the model: it takes the first waiting job, then keeps collecting jobs for up to
`max_wait_ms` or until `max_batch` notes are gathered, and runs the model once per group of jobs that ask
for the same options (top-k, evidence). A job bigger than `max_batch` runs on its own. The queue is
bounded: when `max_queue` notes are waiting, `submit` raises `Overloaded` at once (the server answers 503)
instead of letting latency grow without limit.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

# run(notes, options) -> one result per note, in order
RunFn = Callable[[list[tuple[str, str]], Hashable], list[Any]]


class Overloaded(Exception):
    """The queue is full."""


@dataclass
class _Job:
    notes: list[tuple[str, str]]
    options: Hashable
    future: Future[list[Any]] = field(default_factory=Future)
    enqueued: float = field(default_factory=time.perf_counter)


@dataclass
class BatcherStats:
    batches: int = 0
    notes: int = 0
    jobs: int = 0
    max_batch_seen: int = 0

    def to_json(self) -> dict[str, Any]:
        mean = self.notes / self.batches if self.batches else 0.0
        return {
            "batches": self.batches,
            "notes": self.notes,
            "jobs": self.jobs,
            "mean_batch": round(mean, 3),
            "max_batch": self.max_batch_seen,
        }


class MicroBatcher:
    """A worker thread that runs `run` on micro-batches of submitted notes."""

    def __init__(
        self, run: RunFn, *, max_batch: int = 16, max_wait_ms: float = 5.0, max_queue: int = 1024
    ) -> None:
        if max_batch < 1 or max_wait_ms < 0 or max_queue < 1:
            raise ValueError("max_batch and max_queue must be >= 1 and max_wait_ms >= 0")
        self._run = run
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self.max_queue = max_queue
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._pending = 0  # notes submitted and not yet taken by the worker
        self._lock = threading.Lock()
        self.stats = BatcherStats()
        self._stopped = False
        self._thread = threading.Thread(target=self._loop, name="icdcoder-batcher", daemon=True)
        self._thread.start()

    def submit(self, notes: list[tuple[str, str]], options: Hashable) -> Future[list[Any]]:
        """Queue `notes` (run with `options`); the future gets one result per note or the exception."""
        job = _Job(list(notes), options)
        with self._lock:
            if self._stopped:
                raise RuntimeError("the batcher is stopped")
            if self._pending + len(job.notes) > self.max_queue and self._pending > 0:
                raise Overloaded(f"{self._pending} notes are waiting (limit {self.max_queue})")
            self._pending += len(job.notes)
        self._queue.put(job)
        return job.future

    @property
    def pending(self) -> int:
        with self._lock:
            return self._pending

    def close(self, timeout: float = 10.0) -> None:
        """Stop after the jobs already queued; waits for the worker."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        self._queue.put(None)
        self._thread.join(timeout)

    def _take(self, job: _Job) -> None:
        with self._lock:
            self._pending -= len(job.notes)

    def _collect(self, first: _Job) -> tuple[list[_Job], bool]:
        """The first job plus whatever arrives within the wait window, up to max_batch notes."""
        jobs, n = [first], len(first.notes)
        deadline = time.perf_counter() + self.max_wait
        stop = False
        while n < self.max_batch:
            remaining = deadline - time.perf_counter()
            try:
                nxt = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if nxt is None:
                stop = True
                break
            self._take(nxt)
            if n + len(nxt.notes) > self.max_batch:
                # Too big to join: it starts the next batch (put back at the front by running it next).
                self._run_jobs(jobs)
                jobs, n = [nxt], len(nxt.notes)
                deadline = time.perf_counter() + self.max_wait
                continue
            jobs.append(nxt)
            n += len(nxt.notes)
        return jobs, stop

    def _run_jobs(self, jobs: list[_Job]) -> None:
        groups: dict[Hashable, list[_Job]] = {}
        for j in jobs:
            groups.setdefault(j.options, []).append(j)
        for options, group in groups.items():
            notes = [n for j in group for n in j.notes]
            live = [j for j in group if j.future.set_running_or_notify_cancel()]
            if not live:
                continue
            if len(live) != len(group):
                notes = [n for j in live for n in j.notes]
            try:
                results = self._run(notes, options)
            except BaseException as exc:  # handed to the waiting request, which answers for it
                for j in live:
                    j.future.set_exception(exc)
                continue
            self.stats.batches += 1
            self.stats.notes += len(notes)
            self.stats.jobs += len(live)
            self.stats.max_batch_seen = max(self.stats.max_batch_seen, len(notes))
            pos = 0
            for j in live:
                j.future.set_result(results[pos : pos + len(j.notes)])
                pos += len(j.notes)

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            self._take(first)
            jobs, stop = self._collect(first)
            self._run_jobs(jobs)
            if stop:
                return
