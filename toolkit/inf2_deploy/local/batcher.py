"""Dynamic batching like DJL's front end: concurrent requests gathered into one model run.

Requests, streaming and not, are gathered up to the model's ``batch_size``
prompts, waiting at most ``max_delay_s`` after the first. One worker thread runs
one batch at a time; a streaming request gets each token line as its batch
produces it. When a stream's client hangs up, its row stops generating at the next
step; a request whose client left before its batch started is not generated at all.

:class:`Job` is a request's side of any batcher (also :mod:`inf2_deploy.local.rolling`'s):
the queue its answer or lines arrive on from the model's thread.
"""
from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from inf2_serving.handler import ModelHandler
from inf2_serving.schema import GenerationRequest

if TYPE_CHECKING:
    from inf2_serving.handler import ResponseBody

__all__ = ["ClientGone", "DynamicBatcher", "Job"]


class ClientGone(Exception):
    """The client hung up before its batch started; nobody reads the answer."""


_END = object()
_GONE = object()


class Job:
    """One request in a batcher, and the queue its answer arrives on.

    The model's thread posts to ``events`` (via ``call_soon_threadsafe``, as asyncio
    objects are not thread-safe): a non-streaming request gets its body, a streaming
    one its lines then the end; either gets an exception instead when it fails.
    ``abandoned`` is set on the event loop and read by the model's thread (a plain
    attribute: a stale read costs at most one more generation step).
    """

    def __init__(self, request: GenerationRequest, loop: asyncio.AbstractEventLoop) -> None:
        self.request = request
        self.events: asyncio.Queue[Any] = asyncio.Queue()
        self.abandoned = False
        self._loop = loop

    def post(self, item: Any) -> bool:
        """Hand ``item`` (a body, a line or an exception) to the waiting request; called from the model's thread.

        Returns False when nobody will read it, which cancels the request's rows.
        """
        # Nobody reads an abandoned job's queue (its client left), and a closed loop
        # (server shut down mid-batch) cannot take callbacks.
        if self.abandoned or self._loop.is_closed():
            return False
        self._loop.call_soon_threadsafe(self.events.put_nowait, item)
        return True

    def end(self) -> bool:
        """Tell a streaming request that its last line was posted; called from the model's thread."""
        return self.post(_END)

    def gone(self) -> None:
        """On the event loop: the client left, so wake the waiting request with :class:`ClientGone`."""
        self.events.put_nowait(_GONE)
        self.abandoned = True

    async def answer(self) -> ResponseBody:
        """Wait for the response body.

        Raises:
            ClientGone: the client left first.
            Exception: what the model's thread posted instead of a body.
        """
        result = await self.events.get()
        if result is _GONE:
            raise ClientGone()
        if isinstance(result, Exception):
            raise result
        return result

    async def lines(self) -> AsyncGenerator[dict[str, Any], None]:
        """Yield the stream's lines as they arrive; closing early marks the job abandoned.

        Raises:
            ClientGone: the client left before the stream ended.
            Exception: what the model's thread posted instead of a line.
        """
        try:
            while True:
                item = await self.events.get()
                if item is _END:
                    return
                if item is _GONE:
                    raise ClientGone()
                if isinstance(item, Exception):
                    raise item
                yield item
        finally:
            self.abandoned = True


class DynamicBatcher:
    """Gathers concurrent requests, streaming or not, into batches like DJL's front end.

    One worker thread runs one batch at a time, so the model never runs two
    generations at once (a Neuron model keeps its KV cache as internal state).
    Streaming requests get each line as the model produces it.

    Args:
        handler: a handler that is (or will be) READY; batches use its ``batch_size``.
        max_delay_s: how long to wait for a batch to fill after its first request.
    """

    def __init__(self, handler: ModelHandler, max_delay_s: float) -> None:
        self._handler = handler
        self._max_delay_s = max_delay_s
        # Waiting jobs, each with its client_gone check.
        self._pending: list[tuple[Job, Callable[[], Awaitable[bool]] | None]] = []
        self._arrived = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inf2-batch")

    def _enqueue(self, request: GenerationRequest, client_gone: Callable[[], Awaitable[bool]] | None) -> Job:
        job = Job(request, asyncio.get_running_loop())
        self._pending.append((job, client_gone))
        self._arrived.set()
        return job

    async def submit(
        self, request: GenerationRequest, client_gone: Callable[[], Awaitable[bool]] | None = None,
    ) -> ResponseBody:
        """Queue a non-streaming request and wait for its response body.

        Args:
            request: the parsed request.
            client_gone: asked just before a batch starts; True drops the request ungenerated.

        Raises:
            InvalidRequest: the request failed validation.
            ClientGone: ``client_gone`` said True.
            Exception: whatever made its batch fail.
        """
        return await self._enqueue(request, client_gone).answer()

    def stream(
        self, request: GenerationRequest, client_gone: Callable[[], Awaitable[bool]] | None = None,
    ) -> AsyncGenerator[dict[str, Any], None]:
        """Queue a streaming request and yield its lines as the model produces them.

        Closing the iterator early (the client left) cancels the request's row: the
        batch stops generating for it at the next step, its other rows run on.

        Raises:
            InvalidRequest: the request failed validation (before any line).
            ClientGone: ``client_gone`` (see :meth:`submit`) said True.
            Exception: whatever made its batch fail.
        """
        return self._enqueue(request, client_gone).lines()

    def _take(self, limit: int) -> list[Job]:
        # A job abandoned while it waited needs no generation.
        self._pending = [(job, check) for job, check in self._pending if not job.abandoned]
        taken: list[Job] = []
        prompts = 0
        while self._pending:
            size = len(self._pending[0][0].request.prompts)
            if taken and prompts + size > limit:
                break
            taken.append(self._pending.pop(0)[0])
            prompts += size
        return taken

    def _prompts(self) -> int:
        return sum(len(job.request.prompts) for job, _ in self._pending)

    async def _drop_departed(self) -> None:
        # A request whose client hung up while it waited needs no generation; its
        # waiting coroutine is woken so that it ends too.
        for job, client_gone in self._pending:
            if not job.abandoned and client_gone is not None and await client_gone():
                job.gone()

    def _run_batch(self, jobs: list[Job]) -> None:
        """The worker thread's part: one batch through the model, answers posted to each job."""
        try:
            results = self._handler.generate_many(
                [job.request for job in jobs], on_line=lambda position, line: jobs[position].post(line))
        except Exception as exc:  # each request of the batch gets (and logs) it: a 500 or an error line
            results = [exc] * len(jobs)
        for position, job in enumerate(jobs):
            result = results[position]
            streamed = job.request.stream and not isinstance(result, Exception)
            if streamed:
                job.end()
            else:
                job.post(result)

    async def run(self) -> None:
        """Serve batches until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            while not self._pending:
                self._arrived.clear()
                await self._arrived.wait()
            limit = self._handler.config.batch_size if self._handler.config else 1
            deadline = loop.time() + self._max_delay_s
            while self._prompts() < limit and loop.time() < deadline:
                self._arrived.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._arrived.wait(), deadline - loop.time())
            await self._drop_departed()
            jobs = self._take(limit)
            if jobs:
                await loop.run_in_executor(self._executor, self._run_batch, jobs)

    def close(self) -> None:
        """Stop the worker thread once the running batch ends."""
        self._executor.shutdown(wait=False)
