"""Rolling batching on the local server: every request goes to the slot scheduler at once.

With ``option.rolling_batch`` on (anything but ``disable``) the handler's engine is a
:class:`~inf2_serving.scheduler.RollingEngine`, and the server behaves as the
container does under DJL's rolling-batch loop: nothing gathers requests or waits
for a batch to fill (``max_batch_delay`` is not used). A request's prompts join the
scheduler's queue as soon as it arrives and take free slots at the next step; a
finished or cancelled row frees its slot at once.

One thread drives the scheduler, stepping while rows remain and sleeping when none
do. That is DJL's shape (one loop calls the handler once per step), and it keeps
tokenization in that thread too, as the static batcher's worker does. Every request
thread stepping the shared scheduler itself (``RollingEngine.run``) would also work;
one driver needs no thread per request in flight, and it holds every row's handle,
so a non-streaming request whose client left is cancelled as well as a stream.

Cancellation: a client that hangs up before its first line or answer is noticed at
once (ASGI's ``http.disconnect``), and its rows leave the queue ungenerated or free
their slots at the next step. Once a stream's lines flow, the server notices a
hang-up and closes the stream, which cancels its row the same way.
"""
from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

from inf2_serving.handler import ModelHandler
from inf2_serving.scheduler import RollingEngine, RowCallback, ScheduledRow
from inf2_serving.schema import Completion, GenerationRequest, response_body, stream_line

from .batcher import Job

if TYPE_CHECKING:
    from inf2_serving.handler import ResponseBody

__all__ = ["ClientLeft", "RollingBatcher"]

logger = logging.getLogger(__name__)

ClientLeft = Callable[[], Awaitable[object]]
"""Returns once the request's client has hung up."""


class _Rows:
    """A job's rows in the scheduler and the completions they gave so far (model thread only)."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self.rows: list[ScheduledRow] = []
        self.finals: dict[int, Completion] = {}

    def callback(self, index: int) -> RowCallback:
        """What the scheduler tells of row ``index``'s tokens; returning False cancels it."""
        request = self.job.request

        def on_token(token_id: int, text: str, final: Completion | None) -> bool:
            if request.stream:
                wanted = self.job.post(stream_line(token_id, text, final, request.params))
                if final is not None:
                    self.job.end()
                return wanted
            if final is not None:
                self.finals[index] = final
                if len(self.finals) == len(request.prompts):
                    self.job.post(response_body(request, [self.finals[i] for i in range(len(self.finals))]))
            return not self.job.abandoned

        return on_token

    @property
    def live(self) -> bool:
        """Whether a row is still waiting or generating."""
        return any(not row.finished.is_set() for row in self.rows)


class RollingBatcher:
    """Feeds requests, streaming or not, to a :class:`RollingEngine`'s scheduler (see the module doc).

    Args:
        handler: a handler that is (or will be) READY with a rolling engine.
    """

    def __init__(self, handler: ModelHandler) -> None:
        self._handler = handler
        # Both guarded by _lock: jobs the driver takes before its next step, and jobs with rows in the scheduler.
        self._incoming: list[_Rows] = []
        self._live: list[_Rows] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = False

    async def submit(self, request: GenerationRequest, client_left: ClientLeft | None = None) -> ResponseBody:
        """Queue a non-streaming request and wait for its response body.

        Args:
            request: the parsed request.
            client_left: returns once the client hung up; its rows are then cancelled.

        Raises:
            InvalidRequest: the request failed validation.
            ClientGone: the client hung up first.
            Exception: whatever made its generation fail.
        """
        job = self._enqueue(request)
        watch = self._watch(job, client_left)
        try:
            return await job.answer()
        finally:
            _stop(watch)
            self._cancel(job)

    async def stream(
        self, request: GenerationRequest, client_left: ClientLeft | None = None,
    ) -> AsyncGenerator[dict[str, Any], None]:
        """Queue a streaming request and yield its lines as the model produces them.

        Closing the iterator early (the client left) cancels the request's row: its
        slot is free at the next step.

        Raises:
            InvalidRequest: the request failed validation (before any line).
            ClientGone: ``client_left`` returned before the first line.
            Exception: whatever made its generation fail.
        """
        job = self._enqueue(request)
        watch = self._watch(job, client_left)
        try:
            async for line in job.lines():
                # The response streams from here: the server notices a hang-up and closes this iterator.
                _stop(watch)
                yield line
        finally:
            _stop(watch)
            self._cancel(job)

    def _enqueue(self, request: GenerationRequest) -> Job:
        job = Job(request, asyncio.get_running_loop())
        with self._lock:
            self._incoming.append(_Rows(job))
        self._wake.set()
        return job

    def _watch(self, job: Job, client_left: ClientLeft | None) -> asyncio.Task[None] | None:
        if client_left is None:
            return None

        async def watch() -> None:
            await client_left()
            job.gone()
            self._cancel(job)

        return asyncio.get_running_loop().create_task(watch())

    def _cancel(self, job: Job) -> None:
        """End ``job``'s unfinished rows at the next step; called on the event loop."""
        job.abandoned = True
        with self._lock:
            # Rows still incoming are skipped by the driver; those it submitted are cancelled here.
            rows = [row for entry in self._live if entry.job is job for row in entry.rows if not row.finished.is_set()]
        if rows:
            scheduler = self._engine().scheduler
            for row in rows:
                scheduler.cancel(row)

    def _engine(self) -> RollingEngine:
        engine = self._handler.engine
        if not isinstance(engine, RollingEngine):
            raise TypeError("the handler's engine is static: load the artifact with option.rolling_batch on")
        return engine

    async def run(self) -> None:
        """Drive the scheduler from a thread of its own until cancelled."""
        threading.Thread(target=self._drive, name="inf2-rolling", daemon=True).start()
        try:
            await asyncio.Event().wait()  # the thread does the work; this task marks its lifetime
        finally:
            self.close()

    def close(self) -> None:
        """Cancel every request's rows and stop the driver thread after its current step."""
        self._closed = True
        self._wake.set()

    def _drive(self) -> None:
        while not self._closed:
            self._wake.wait()
            self._wake.clear()  # before stepping: a request queued from here on wakes the next wait
            busy = True
            while busy and not self._closed:
                self._take_incoming()
                busy = self._step()
        self._stop_all()

    def _take_incoming(self) -> None:
        with self._lock:
            incoming, self._incoming = self._incoming, []
        for entry in incoming:
            if entry.job.abandoned:  # its client left before it reached the scheduler
                continue
            try:
                engine = self._engine()
                prepared = self._handler.prepare(entry.job.request)
            except Exception as exc:  # InvalidRequest and HandlerNotReady become 4xx/503, anything else 500
                entry.job.post(exc)
                continue
            entry.rows = [engine.scheduler.submit(prompt, entry.callback(index))
                          for index, prompt in enumerate(prepared)]
            with self._lock:
                self._live.append(entry)
            if entry.job.abandoned:  # it left while being submitted, after _cancel looked
                for row in entry.rows:
                    engine.scheduler.cancel(row)

    def _step(self) -> bool:
        """One scheduler step; returns whether rows of ours remain."""
        if not self._live:
            return False
        try:
            self._engine().step()
        except Exception:  # the scheduler ended every row, waiting or active, with it: each request gets it below
            logger.debug("a rolling-batch step failed", exc_info=True)
        with self._lock:
            ended = [entry for entry in self._live if not entry.live]
            self._live = [entry for entry in self._live if entry.live]
        for entry in ended:
            errors = [row.error for row in entry.rows if row.error is not None]
            if errors:  # logged where it is answered: a 500, or an error line ending a stream
                entry.job.post(errors[0])
        return bool(self._live)

    def _stop_all(self) -> None:
        # The handler may outlive this server (tests share one): leave no rows in its scheduler.
        with self._lock:
            entries, self._live = self._live, []
        if not entries:
            return
        scheduler = self._engine().scheduler
        for entry in entries:
            entry.job.abandoned = True
            for row in entry.rows:
                scheduler.cancel(row)  # dropped at the scheduler's next step, whoever drives it


def _stop(watch: asyncio.Task[None] | None) -> None:
    if watch is not None:
        watch.cancel()
