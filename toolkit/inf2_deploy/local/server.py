"""A local server that speaks the LMI container's HTTP contract (``inf2-deploy serve``).

It loads an artifact folder the way the container does (``serving.properties``,
``option.`` stripped, ``model_dir`` added, then the handler) and emulates DJL
serving's front end:

- ``GET /ping``: 503 while the model loads (or failed), 200 once it is READY.
- ``POST /invocations`` and ``POST /predictions/{model}``: the LMI schema. Streaming
  answers are chunked ``application/jsonlines``.
- Dynamic batching like DJL's: concurrent requests, streaming and not, are gathered
  up to the model's ``batch_size`` prompts, waiting at most ``max_batch_delay`` ms
  after the first. One worker thread runs one batch at a time; a streaming request
  gets each token line as its batch produces it. When a stream's client hangs up, its
  row stops generating at the next step; a request whose client left before its batch
  started is not generated at all.
- Bodies over ``body_limit_bytes`` (1 MiB by default) get 413.
- The SageMaker runtime API (``POST /endpoints/{name}/invocations`` and
  ``.../invocations-response-stream``, see :mod:`inf2_deploy.local.runtime_api`), so boto3's
  ``sagemaker-runtime`` client works with ``AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME`` set to the server.

Only this module and runtime_api import starlette and uvicorn; the container never imports them.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from inf2_serving.handler import HandlerNotReady, ModelHandler, ReadinessState
from inf2_serving.properties import handler_properties, read_properties
from inf2_serving.schema import GenerationRequest, InvalidRequest, error_body, parse_body

if TYPE_CHECKING:
    from inf2_serving.handler import ResponseBody
    from starlette.applications import Starlette

__all__ = ["DEFAULT_BODY_LIMIT", "DEFAULT_MAX_BATCH_DELAY_MS", "create_app", "load_artifact_properties",
           "main", "serve"]

logger = logging.getLogger(__name__)

DEFAULT_BODY_LIMIT = 1 << 20
DEFAULT_MAX_BATCH_DELAY_MS = 100  # DJL's default max_batch_delay
JSONLINES = "application/jsonlines"


class _BodyTooLarge(Exception):
    """The request body is over the limit (HTTP 413)."""


class _ClientGone(Exception):
    """The client hung up before its batch started; nobody reads the answer."""


def load_artifact_properties(artifact_dir: str | os.PathLike, backend: str | None = None) -> dict[str, str]:
    """The properties the container's handler would see for ``artifact_dir``.

    Args:
        artifact_dir: folder holding ``serving.properties`` (the model_dir).
        backend: overrides the ``backend`` property when given.

    Raises:
        FileNotFoundError: there is no ``serving.properties``.
        inf2_serving.properties.PropertiesError: a line DJL would misread.
    """
    path = os.path.join(os.fspath(artifact_dir), "serving.properties")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found; point serve at a packaged artifact folder")
    props = handler_properties(read_properties(path), os.path.abspath(os.fspath(artifact_dir)))
    if backend is not None:
        props["backend"] = backend
    return props


class _Job:
    """One request in the batcher, and the queue its answer arrives on.

    The worker thread posts to ``events`` (via ``call_soon_threadsafe``, as asyncio
    objects are not thread-safe): a non-streaming request gets its body, a streaming
    one its lines then ``_END``; either gets an exception instead when it fails.
    ``abandoned`` is set on the event loop and read by the worker thread (a plain
    attribute: a stale read costs at most one more generation step).
    """

    def __init__(
        self, request: GenerationRequest, loop: asyncio.AbstractEventLoop,
        client_gone: Callable[[], Awaitable[bool]] | None,
    ) -> None:
        self.request = request
        self.events: asyncio.Queue[Any] = asyncio.Queue()
        self.abandoned = False
        self.client_gone = client_gone
        self._loop = loop

    def post(self, item: Any) -> bool:
        """Hand ``item`` to the waiting request; called from the worker thread.

        Returns False when nobody will read it, which cancels the request's row.
        """
        # Nobody reads an abandoned job's queue (its client left), and a closed loop
        # (server shut down mid-batch) cannot take callbacks.
        if self.abandoned or self._loop.is_closed():
            return False
        self._loop.call_soon_threadsafe(self.events.put_nowait, item)
        return True


_END = object()
_GONE = object()


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
        self._pending: list[_Job] = []
        self._arrived = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inf2-batch")

    def _enqueue(self, request: GenerationRequest, client_gone: Callable[[], Awaitable[bool]] | None) -> _Job:
        job = _Job(request, asyncio.get_running_loop(), client_gone)
        self._pending.append(job)
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
            _ClientGone: ``client_gone`` said True.
            Exception: whatever made its batch fail.
        """
        result = await self._enqueue(request, client_gone).events.get()
        if result is _GONE:
            raise _ClientGone()
        if isinstance(result, Exception):
            raise result
        return result

    async def stream(
        self, request: GenerationRequest, client_gone: Callable[[], Awaitable[bool]] | None = None,
    ) -> AsyncGenerator[dict[str, Any], None]:
        """Queue a streaming request and yield its lines as the model produces them.

        Closing the iterator early (the client left) cancels the request's row: the
        batch stops generating for it at the next step, its other rows run on.

        Raises:
            InvalidRequest: the request failed validation (before any line).
            _ClientGone: ``client_gone`` (see :meth:`submit`) said True.
            Exception: whatever made its batch fail.
        """
        job = self._enqueue(request, client_gone)
        try:
            while True:
                item = await job.events.get()
                if item is _END:
                    return
                if item is _GONE:
                    raise _ClientGone()
                if isinstance(item, Exception):
                    raise item
                yield item
        finally:
            job.abandoned = True

    def _take(self, limit: int) -> list[_Job]:
        # A job abandoned while it waited needs no generation.
        self._pending = [job for job in self._pending if not job.abandoned]
        taken: list[_Job] = []
        prompts = 0
        while self._pending:
            size = len(self._pending[0].request.prompts)
            if taken and prompts + size > limit:
                break
            taken.append(self._pending.pop(0))
            prompts += size
        return taken

    def _prompts(self) -> int:
        return sum(len(job.request.prompts) for job in self._pending)

    async def _drop_departed(self) -> None:
        # A request whose client hung up while it waited needs no generation; its
        # waiting coroutine is woken so that it ends too.
        for job in self._pending:
            if not job.abandoned and job.client_gone is not None and await job.client_gone():
                job.events.put_nowait(_GONE)
                job.abandoned = True

    def _run_batch(self, jobs: list[_Job]) -> None:
        """The worker thread's part: one batch through the model, answers posted to each job."""
        try:
            results = self._handler.generate_many(
                [job.request for job in jobs], on_line=lambda position, line: jobs[position].post(line))
        except Exception as exc:  # each request of the batch gets (and logs) it: a 500 or an error line
            results = [exc] * len(jobs)
        for position, job in enumerate(jobs):
            result = results[position]
            streamed = job.request.stream and not isinstance(result, Exception)
            job.post(_END if streamed else result)

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


async def _read_body(request: Any, limit: int) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _BodyTooLarge()
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _BodyTooLarge()
        chunks.append(chunk)
    return b"".join(chunks)


def _jsonline(line: dict[str, Any]) -> bytes:
    return (json.dumps(line, ensure_ascii=False) + "\n").encode("utf-8")


async def _jsonlines(
    first: dict[str, Any], rest: AsyncGenerator[dict[str, Any], None],
) -> AsyncIterator[bytes]:
    try:
        yield _jsonline(first)
        async for line in rest:
            yield _jsonline(line)
    except Exception as exc:  # the 200 status is already sent: report the failure in band
        logger.exception("streaming generation failed")
        yield _jsonline(error_body(f"generation failed: {exc}", 500))
    finally:
        await rest.aclose()  # marks the job abandoned at once when the client left mid-stream


def create_app(
    artifact_dir: str | os.PathLike,
    *,
    backend: str | None = "auto",
    max_batch_delay_ms: float | None = None,
    body_limit_bytes: int = DEFAULT_BODY_LIMIT,
    ready_callback: Callable[[], None] | None = None,
    handler: ModelHandler | None = None,
) -> Starlette:
    """Build the ASGI app for an artifact folder; the model loads in the background at startup.

    Args:
        artifact_dir: the packaged artifact (``serving.properties`` and weights or ``model_id``).
        backend: ``cpu``, ``neuron`` or ``auto``; None keeps the artifact's ``backend`` property.
        max_batch_delay_ms: batching wait; default the ``max_batch_delay`` property, else 100.
        body_limit_bytes: larger request bodies get 413.
        ready_callback: called once the model is READY.
        handler: an existing handler to serve (tests share one); default a new one.

    Raises:
        FileNotFoundError: no ``serving.properties`` in ``artifact_dir``.
    """
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response, StreamingResponse
    from starlette.routing import Route

    from .runtime_api import runtime_routes, streaming_body

    props = load_artifact_properties(artifact_dir, backend)
    if max_batch_delay_ms is None:
        max_batch_delay_ms = float(props.get("max_batch_delay", DEFAULT_MAX_BATCH_DELAY_MS))
    model_name = os.path.basename(os.path.abspath(os.fspath(artifact_dir)))
    model = handler or ModelHandler()
    state: dict[str, DynamicBatcher] = {}

    def load() -> None:
        try:
            model.initialize(props)
        except Exception:  # FAILED is reported by /ping; the handler logged the cause
            return
        if ready_callback is not None:
            ready_callback()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> Any:
        batcher = DynamicBatcher(model, max_batch_delay_ms / 1000.0)
        state["batcher"] = batcher
        task = asyncio.get_running_loop().create_task(batcher.run())
        threading.Thread(target=load, name="inf2-load", daemon=True).start()
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            batcher.close()

    def error(message: str, code: int) -> Response:
        return JSONResponse(error_body(message, code), status_code=code)

    async def ping(request: Request) -> Response:
        if model.state is ReadinessState.READY:
            return JSONResponse({"status": "Healthy"})
        body: dict[str, Any] = {"status": model.state.value}
        if model.error:
            body["error"] = model.error
        return JSONResponse(body, status_code=503)

    async def invoke(request: Request, force_stream: bool = False) -> Response:
        if model.state is not ReadinessState.READY:
            return error(f"the model is {model.state.value.lower()}; retry when /ping returns 200", 503)
        try:
            body = await _read_body(request, body_limit_bytes)
            generation = parse_body(streaming_body(body) if force_stream else body)
            if generation.stream:
                lines = state["batcher"].stream(generation, request.is_disconnected)
                # The status waits for the first line, so a request that fails validation
                # in its batch still gets a 400 rather than a 200 with an error line.
                first = await lines.__anext__()
                return StreamingResponse(_jsonlines(first, lines), media_type=JSONLINES)
            result = await state["batcher"].submit(generation, request.is_disconnected)
        except _ClientGone:
            return Response(status_code=499)  # nobody reads it; the code shows in the access log
        except _BodyTooLarge:
            return error(f"the request body is over {body_limit_bytes} bytes; send a shorter request", 413)
        except (InvalidRequest, HandlerNotReady) as exc:
            return error(str(exc), exc.code)
        return JSONResponse(result)

    async def predictions(request: Request) -> Response:
        name = request.path_params["model"]
        if name != model_name:
            return error(f"model {name!r} not found; this server serves {model_name!r}", 404)
        return await invoke(request)

    async def internal_error(request: Request, exc: Exception) -> Response:
        logger.error("request failed", exc_info=exc)
        return error(f"internal error: {type(exc).__name__}: {exc}", 500)

    return Starlette(
        routes=[
            Route("/ping", ping, methods=["GET"]),
            Route("/invocations", invoke, methods=["POST"]),
            Route("/predictions/{model}", predictions, methods=["POST"]),
            *runtime_routes(invoke),
        ],
        lifespan=lifespan,
        exception_handlers={Exception: internal_error},
    )


def serve(
    artifact_dir: str | os.PathLike,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    backend: str = "auto",
    max_batch_delay_ms: float | None = None,
    body_limit_bytes: int = DEFAULT_BODY_LIMIT,
    ready_callback: Callable[[], None] | None = None,
) -> None:
    """Serve an artifact folder with uvicorn until interrupted (see :func:`create_app`)."""
    import uvicorn

    app = create_app(
        artifact_dir,
        backend=backend,
        max_batch_delay_ms=max_batch_delay_ms,
        body_limit_bytes=body_limit_bytes,
        ready_callback=ready_callback,
    )
    uvicorn.run(app, host=host, port=port, log_level="info")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m inf2_deploy.local.server ARTIFACT_DIR [--host] [--port] [--backend] [--max-batch-delay-ms]``."""
    parser = argparse.ArgumentParser(prog="inf2-serve", description=__doc__.splitlines()[0])
    parser.add_argument("artifact_dir")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--backend", choices=("cpu", "neuron", "auto"), default="auto")
    parser.add_argument("--max-batch-delay-ms", type=float, default=None)
    parser.add_argument("--body-limit-bytes", type=int, default=DEFAULT_BODY_LIMIT)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    serve(
        args.artifact_dir,
        host=args.host,
        port=args.port,
        backend=args.backend,
        max_batch_delay_ms=args.max_batch_delay_ms,
        body_limit_bytes=args.body_limit_bytes,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
