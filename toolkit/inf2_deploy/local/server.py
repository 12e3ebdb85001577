"""A local server that speaks the LMI container's HTTP contract (``inf2-deploy serve``).

It loads an artifact folder the way the container does (``serving.properties``,
``option.`` stripped, ``model_dir`` added, then the handler) and emulates DJL
serving's front end:

- ``GET /ping``: 503 while the model loads (or failed), 200 once it is READY.
- ``POST /invocations`` and ``POST /predictions/{model}``: the LMI schema. Streaming
  answers are chunked ``application/jsonlines``.
- Batching as DJL's front end does it for the artifact's ``option.rolling_batch``. Off
  (``disable`` or unset), dynamic batching (:mod:`inf2_deploy.local.batcher`): concurrent
  requests, streaming and not, are gathered up to the model's ``batch_size`` prompts,
  waiting at most ``max_batch_delay`` ms after the first. On, the rolling batch
  (:mod:`inf2_deploy.local.rolling`): each request joins the slot scheduler at once and
  takes a free slot at its next step, with no wait.
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
import functools
import logging
import os
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

from inf2_serving.contract import BACKENDS, DEFAULT_MAX_BATCH_DELAY_MS, rolling_batch_enabled
from inf2_serving.handler import HandlerNotReady, ModelHandler, ReadinessState
from inf2_serving.jsonline import JSONLINES, encode_line
from inf2_serving.schema import GenerationRequest, InvalidRequest, error_body, parse_body
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from ..artifact.djl_properties import handler_properties, read_properties
from .batcher import ClientGone, DynamicBatcher
from .rolling import RollingBatcher
from .runtime_api import runtime_routes, streaming_body

__all__ = ["DEFAULT_BODY_LIMIT", "DEFAULT_MAX_BATCH_DELAY_MS", "create_app", "load_artifact_properties",
           "main", "serve"]

logger = logging.getLogger(__name__)

DEFAULT_BODY_LIMIT = 1 << 20


class _BodyTooLarge(Exception):
    """The request body is over the limit (HTTP 413)."""


def load_artifact_properties(artifact_dir: str | os.PathLike, backend: str | None = None) -> dict[str, str]:
    """The properties the container's handler would see for ``artifact_dir``.

    Args:
        artifact_dir: folder holding ``serving.properties`` (the model_dir).
        backend: overrides the ``backend`` property when given.

    Raises:
        FileNotFoundError: there is no ``serving.properties``.
        inf2_deploy.artifact.djl_properties.PropertiesError: a line DJL would misread.
    """
    path = os.path.join(os.fspath(artifact_dir), "serving.properties")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found; point serve at a packaged artifact folder")
    props = handler_properties(read_properties(path), os.path.abspath(os.fspath(artifact_dir)))
    if backend is not None:
        props["backend"] = backend
    return props


async def _read_body(request: Request, limit: int) -> bytes:
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


async def _jsonlines(
    first: dict[str, Any], rest: AsyncGenerator[dict[str, Any], None],
) -> AsyncIterator[bytes]:
    try:
        yield encode_line(first)
        async for line in rest:
            yield encode_line(line)
    except Exception as exc:  # the 200 status is already sent: report the failure in band
        logger.exception("streaming generation failed")
        yield encode_line(error_body(f"generation failed: {exc}", 500))
    finally:
        await rest.aclose()  # marks the job abandoned at once when the client left mid-stream


async def _hung_up(request: Request) -> None:
    """Return once the client has hung up: ASGI's ``http.disconnect``, once the body has been read."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _error(message: str, code: int) -> Response:
    return JSONResponse(error_body(message, code), status_code=code)


class _LmiApp:
    """The routes and lifespan of one served model: DJL's front end over one handler."""

    #: set by :meth:`lifespan`, which runs before the first request
    batcher: DynamicBatcher | RollingBatcher

    def __init__(
        self, model: ModelHandler, props: dict[str, str], *, model_name: str, max_delay_s: float,
        body_limit: int, ready_callback: Callable[[], None] | None,
    ) -> None:
        self.model = model
        self.props = props
        self.model_name = model_name
        self.max_delay_s = max_delay_s
        self.body_limit = body_limit
        self.ready_callback = ready_callback
        # As DJL's Java front end decides, from the properties; the handler reads the same one.
        self.rolling = rolling_batch_enabled(props.get("rolling_batch"))

    def _load(self) -> None:
        try:
            self.model.initialize(self.props)
        except Exception:  # FAILED is reported by /ping; the handler logged the cause
            return
        if self.ready_callback is not None:
            self.ready_callback()

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        """Run the batcher, and load the model in the background, while the app serves."""
        batcher = RollingBatcher(self.model) if self.rolling else DynamicBatcher(self.model, self.max_delay_s)
        self.batcher = batcher
        task = asyncio.get_running_loop().create_task(batcher.run())
        threading.Thread(target=self._load, name="inf2-load", daemon=True).start()
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            batcher.close()

    async def ping(self, request: Request) -> Response:
        """``GET /ping``: 200 once READY, else 503 with the readiness state (and error)."""
        if self.model.state is ReadinessState.READY:
            return JSONResponse({"status": "Healthy"})
        body: dict[str, Any] = {"status": self.model.state.value}
        if self.model.error:
            body["error"] = self.model.error
        return JSONResponse(body, status_code=503)

    async def invoke(self, request: Request, force_stream: bool = False) -> Response:
        """``POST /invocations``: the LMI schema; ``force_stream`` streams whatever the body says."""
        if self.model.state is not ReadinessState.READY:
            return _error(f"the model is {self.model.state.value.lower()}; retry when /ping returns 200", 503)
        try:
            body = await _read_body(request, self.body_limit)
            return await self._generate(parse_body(streaming_body(body) if force_stream else body), request)
        except ClientGone:
            return Response(status_code=499)  # nobody reads it; the code shows in the access log
        except _BodyTooLarge:
            return _error(f"the request body is over {self.body_limit} bytes; send a shorter request", 413)
        except (InvalidRequest, HandlerNotReady) as exc:
            return _error(str(exc), exc.code)

    async def _generate(self, generation: GenerationRequest, request: Request) -> Response:
        # The dynamic batcher asks whether the client left just before a batch; the rolling one
        # is told the moment it leaves, which cancels the request wherever it is.
        client: Callable[[], Awaitable[object]] = (
            functools.partial(_hung_up, request) if self.rolling else request.is_disconnected)
        if not generation.stream:
            return JSONResponse(await self.batcher.submit(generation, client))
        lines = self.batcher.stream(generation, client)
        # The status waits for the first line, so a request that fails validation
        # in its batch still gets a 400 rather than a 200 with an error line.
        first = await lines.__anext__()
        return StreamingResponse(_jsonlines(first, lines), media_type=JSONLINES)

    async def predictions(self, request: Request) -> Response:
        """``POST /predictions/{model}``: as ``/invocations`` for this server's model, else 404."""
        name = request.path_params["model"]
        if name != self.model_name:
            return _error(f"model {name!r} not found; this server serves {self.model_name!r}", 404)
        return await self.invoke(request)

    async def internal_error(self, request: Request, exc: Exception) -> Response:
        """Any unexpected failure: logged, and a 500 in the LMI error shape."""
        logger.error("request failed", exc_info=exc)
        return _error(f"internal error: {type(exc).__name__}: {exc}", 500)


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
        max_batch_delay_ms: batching wait; default the ``max_batch_delay`` property, else 100. Unused
            with the rolling batch, which never waits.
        body_limit_bytes: larger request bodies get 413.
        ready_callback: called once the model is READY.
        handler: an existing handler to serve (tests share one); default a new one.

    Raises:
        FileNotFoundError: no ``serving.properties`` in ``artifact_dir``.
    """
    props = load_artifact_properties(artifact_dir, backend)
    if max_batch_delay_ms is None:
        max_batch_delay_ms = float(props.get("max_batch_delay", DEFAULT_MAX_BATCH_DELAY_MS))
    app = _LmiApp(handler or ModelHandler(), props,
                  model_name=os.path.basename(os.path.abspath(os.fspath(artifact_dir))),
                  max_delay_s=max_batch_delay_ms / 1000.0, body_limit=body_limit_bytes, ready_callback=ready_callback)
    return Starlette(
        routes=[
            Route("/ping", app.ping, methods=["GET"]),
            Route("/invocations", app.invoke, methods=["POST"]),
            Route("/predictions/{model}", app.predictions, methods=["POST"]),
            *runtime_routes(app.invoke),
        ],
        lifespan=app.lifespan,
        exception_handlers={Exception: app.internal_error},
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
    parser.add_argument("--backend", choices=BACKENDS, default="auto")
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
