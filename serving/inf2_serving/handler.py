"""The handler core: initialize once, then answer requests.

``ModelHandler`` is all the DJL adapter (:mod:`inf2_serving.djl`) and the local
server (:mod:`inf2_deploy.local.server`) call. Its :class:`ReadinessState` drives
``/ping``: NOT_READY until :meth:`ModelHandler.initialize` starts, LOADING while it
loads and compiles the model and runs a warm-up generation, then READY or FAILED.
"""
from __future__ import annotations

import enum
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .config import ConfigError, ServingConfig
from .engine import Engine, PreparedPrompt, StepObserver
from .schema import (
    Completion,
    GenerationParams,
    GenerationRequest,
    InvalidRequest,
    response_body,
    stream_line,
)
from .self_check import SelfCheckFailed, run_self_check

__all__ = ["HandlerNotReady", "LineCallback", "ModelHandler", "ReadinessState", "load_engine"]

logger = logging.getLogger(__name__)

if TYPE_CHECKING:
    ResponseBody = dict[str, Any] | list[dict[str, Any]]

# The return type is quoted: this alias is evaluated at import, on Python 3.9 too.
LineCallback = Callable[[int, dict[str, Any]], "bool | None"]
"""Told of each stream line: the position of its request in the batch, and the line.
Returns ``False`` once the request's client is gone, which stops generating for it."""

_END = object()


class ReadinessState(str, enum.Enum):
    """Where the handler is in its life; only READY serves requests."""

    NOT_READY = "NOT_READY"
    LOADING = "LOADING"
    READY = "READY"
    FAILED = "FAILED"


class HandlerNotReady(RuntimeError):
    """A request arrived before the model was ready (HTTP 503)."""

    code = 503


def _resolve_backend(config: ServingConfig) -> str:
    from .neuron_backend import neuron_available

    if config.backend != "auto":
        return config.backend
    return "neuron" if neuron_available() else "cpu"


def load_engine(config: ServingConfig) -> Engine:
    """Load tokenizer and model for ``config`` and return a ready engine.

    Raises:
        ConfigError: the backend cannot serve this model.
        OSError: the weights or tokenizer files cannot be read.
    """
    from transformers import AutoConfig, AutoTokenizer

    model_config = AutoConfig.from_pretrained(config.weights_dir)
    tokenizer = AutoTokenizer.from_pretrained(config.weights_dir)
    eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else model_config.eos_token_id
    if config.n_positions is not None and config.n_positions > model_config.n_positions:
        raise ConfigError("n_positions", config.n_positions,
                          f"the model supports at most {model_config.n_positions} positions")
    backend_name = _resolve_backend(config)
    logger.info("loading %s with the %s backend", config.weights_dir, backend_name)
    if backend_name == "neuron":
        if model_config.model_type != "gptj":
            raise ConfigError("backend", "neuron", f"serves GPT-J only, not {model_config.model_type!r}")
        from .neuron_backend import NeuronBackend

        backend: Any = NeuronBackend(config, model_config, eos)
    else:
        from .cpu_backend import CpuBackend

        backend = CpuBackend(config, model_config, eos)
    if config.rolling:
        from .scheduler import RollingEngine

        return RollingEngine(backend, tokenizer, eos)
    return Engine(backend, tokenizer, eos)


class ModelHandler:
    """Loads the model once and serves generation requests.

    Thread-safe: concurrent callers share one engine. The static engine runs one batch
    at a time; the rolling engine (``rolling_batch`` on) admits each caller's rows into
    its running batch at the next step.
    """

    def __init__(self) -> None:
        self._state = ReadinessState.NOT_READY
        self._error: str | None = None
        self._engine: Engine | None = None
        self._config: ServingConfig | None = None
        self._init_lock = threading.Lock()

    @property
    def state(self) -> ReadinessState:
        """The current readiness state."""
        return self._state

    @property
    def error(self) -> str | None:
        """Why initialization failed, when FAILED."""
        return self._error

    @property
    def config(self) -> ServingConfig | None:
        """The validated configuration, once initialization started."""
        return self._config

    @property
    def engine(self) -> Engine:
        """The loaded engine.

        Raises:
            HandlerNotReady: the handler is not READY.
        """
        if self._engine is None or self._state is not ReadinessState.READY:
            detail = f": {self._error}" if self._error else ""
            state = self._state.value.lower()
            raise HandlerNotReady(f"the model is {state}{detail}; retry when /ping says ready")
        return self._engine

    def initialize(self, properties: Mapping[str, str]) -> None:
        """Load the model, run the startup self-check and a warm-up generation; later calls return at once.

        Raises:
            ConfigError: a property is invalid.
            SelfCheckFailed: the model's logits are not finite or ignore the prompt's context.
            HandlerNotReady: an earlier initialization failed.
        """
        with self._init_lock:
            if self._state is ReadinessState.READY:
                return
            if self._state is ReadinessState.FAILED:
                raise HandlerNotReady(f"initialization failed earlier: {self._error}")
            self._state = ReadinessState.LOADING
            started = time.monotonic()
            try:
                self._config = ServingConfig.from_properties(properties)
                engine = load_engine(self._config)
                self._self_check(engine)
                engine.run([engine.prepare("Hello", GenerationParams(max_new_tokens=2))])
            except SelfCheckFailed as exc:
                self._fail(exc)
                logger.error("%s", exc)  # one line, found by `inf2-deploy deploy` in the endpoint's logs
                raise
            except BaseException as exc:
                self._fail(exc)
                logger.exception("model initialization failed")
                raise
            self._engine = engine
            self._state = ReadinessState.READY
            logger.info("model ready in %.1f s (warm-up included)", time.monotonic() - started)

    def _self_check(self, engine: Engine) -> None:
        try:
            report = run_self_check(engine.backend, engine.tokenizer)
        except SelfCheckFailed as exc:
            if self._config is not None and not self._config.startup_self_check:
                logger.warning("serving anyway (startup_self_check=false): %s", exc)
                return
            raise
        logger.info("self-check passed: next-token logits finite (max |logit| %.3g) and context-sensitive "
                    "(difference %.3g over %d tokens)", report.max_logit, report.context_difference,
                    report.probe_tokens)

    def _fail(self, exc: BaseException) -> None:
        self._state = ReadinessState.FAILED
        self._error = f"{type(exc).__name__}: {exc}"

    def prepare(self, request: GenerationRequest) -> list[PreparedPrompt]:
        """Tokenize and validate every prompt of a request.

        Raises:
            InvalidRequest: a prompt is empty or too long for ``n_positions``.
            HandlerNotReady: the model is not READY.
        """
        engine = self.engine
        return [engine.prepare(prompt, request.params) for prompt in request.prompts]

    def generate(self, request: GenerationRequest) -> ResponseBody:
        """Answer one non-streaming request.

        Raises:
            InvalidRequest: see :meth:`prepare`.
            HandlerNotReady: the model is not READY.
        """
        return self.generate_many([request])[0]

    def generate_many(
        self, requests: Sequence[GenerationRequest], on_line: LineCallback | None = None,
    ) -> list[ResponseBody | Exception]:
        """Answer several requests, streaming and not, in shared batches.

        A request that fails validation gets its :class:`InvalidRequest` in its slot
        and does not affect the others. A streaming request's slot holds its stream
        lines (see :meth:`stream`); each is also passed to ``on_line(position, line)``
        as soon as the model produces it, ``position`` being the request's index.
        When ``on_line`` returns ``False`` the stream's row is cancelled: no more
        lines, its slot keeps the lines so far, and the other requests are unaffected.

        Raises:
            HandlerNotReady: the model is not READY.
        """
        prepared: list[list[PreparedPrompt] | Exception] = []
        flat: list[PreparedPrompt] = []
        owners: list[int] = []  # the position of each flat row's request
        for position, request in enumerate(requests):
            try:
                prompts = self.prepare(request)
            except InvalidRequest as exc:
                prepared.append(exc)
                continue
            prepared.append(prompts)
            flat += prompts
            owners += [position] * len(prompts)
        lines: dict[int, list[dict[str, Any]]] = {
            position: [] for position, request in enumerate(requests)
            if request.stream and not isinstance(prepared[position], Exception)
        }

        def on_token(index: int, token_id: int, text: str, final: Completion | None) -> bool:
            position = owners[index]
            if position not in lines:
                return True
            line = stream_line(token_id, text, final, requests[position].params)
            lines[position].append(line)
            return on_line is None or on_line(position, line) is not False

        completions = iter(self.engine.run(flat, on_token=on_token if lines else None)) if flat else iter(())
        answers: list[ResponseBody | Exception] = []
        for position, item in enumerate(prepared):
            if isinstance(item, Exception):
                answers.append(item)
                continue
            done = [next(completions) for _ in item]
            answers.append(lines[position] if position in lines else response_body(requests[position], done))
        return answers

    def stream(self, request: GenerationRequest) -> Iterator[dict[str, Any]]:
        """Validate now, then return an iterator of streamed JSON lines.

        Each line is ``{"token": {"id", "text"}}``; the last also carries
        ``generated_text`` (and ``details`` when asked). Closing the iterator early
        stops generation at the next step.

        Raises:
            InvalidRequest: see :meth:`prepare`.
            HandlerNotReady: the model is not READY.
        """
        (prepared,) = self.prepare(request)
        return self._stream_lines(prepared, request.params)

    def _stream_lines(self, prepared: PreparedPrompt, params: GenerationParams) -> Iterator[dict[str, Any]]:
        events: queue.Queue = queue.Queue()
        observers: list[StepObserver] = []

        def on_token(index: int, token_id: int, text: str, final: Completion | None) -> None:
            events.put(stream_line(token_id, text, final, params))

        def work() -> None:
            try:
                self.engine.run([prepared], on_token=on_token, observer_ready=observers.append)
            except BaseException as exc:  # handed to the consumer, which re-raises it
                events.put(exc)
            finally:
                events.put(_END)

        threading.Thread(target=work, name="inf2-stream", daemon=True).start()
        try:
            while True:
                item = events.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            for observer in observers:
                observer.cancelled = True
