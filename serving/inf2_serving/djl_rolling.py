"""DJL's rolling-batch protocol over the slot scheduler (``option.rolling_batch`` set and not ``disable``).

DJL's Java front end (``RollingBatch.java``, v0.29.0) keeps the requests in flight in a
list, at most ``max_rolling_batch_size`` of them, and calls ``handle()`` in a loop, each
call one batch of every request in the list, in order (``batch_size`` and ``batch_XXX.``
keys). A request's body, its properties and a random ``seed`` come only with its first
call; later calls carry empty data. It expects exactly one output per request, each
DJL's binary pair list (``Output.binary_encode``) with ``data``, ``last`` and, for an
error, ``code`` and ``error``; properties named ``batch_{i}_<name>`` go to request ``i``.
A request marked ``last`` leaves the list. After a failed call (an error output, the
wrong number of outputs, a lost reply) DJL fails every request in the list, forgets
them and sends ``reset_rollingbatch`` with the next call.

:class:`DjlRollingBatch` is the Python side, as LMI's ``RollingBatch`` keeps
``active_requests``: the requests of its list are the first items of each call, in
DJL's order, and the items after them are new (LMI's ``get_batch_start_id``). Each new
request is parsed once and its prompts go to the scheduler; then exactly one scheduler
step runs, and every request gets its output:

- a stream: the JSON lines of the tokens it got since the last call (often one line,
  none while it waits for a slot), ``application/jsonlines``;
- any other request: empty data until all its prompts are done, then the whole
  response body, ``application/json`` (DJL sends nothing to the client for empty data);
- an invalid request: ``code`` 400 and the message, at once, and it never enters the list;
- when the backend fails a step: every request ``last`` with ``code`` 424 and the error,
  then the list is forgotten, as LMI's ``stop_on_any_exception`` does.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any, cast

from .handler import ModelHandler
from .jsonline import JSONLINES, encode_line
from .scheduler import RollingEngine, ScheduledRow
from .schema import Completion, GenerationRequest, InvalidRequest, error_body, parse_body, response_body, stream_line

__all__ = ["BACKEND_ERROR_CODE", "DjlRollingBatch", "read_request"]

logger = logging.getLogger(__name__)

BACKEND_ERROR_CODE = 424
"""The code of a request whose step the backend failed (LMI's, in ``stop_on_any_exception``)."""
_JSON = "application/json"
# DJL's seed is a Java int, negative half the time; a request's own seed is at least 0.
_SEED_SPACE = 2**32


def read_request(item: Any) -> GenerationRequest:
    """Parse one DJL input's body.

    Raises:
        InvalidRequest: the body is missing or does not follow the schema.
    """
    data = item.get_as_bytes()
    if data is None:
        raise InvalidRequest('the request body is empty; send {"inputs": "your prompt"}')
    return parse_body(bytes(data))


def _djl_seed(item: Any) -> int | None:
    """The seed DJL sends with a request's first call, as a seed of ours; None without one."""
    if not item.contains_key("seed"):
        return None
    return int(item.get_as_string("seed")) % _SEED_SPACE


@dataclass(eq=False)
class _Flight:
    """One request in DJL's list: its rows in the scheduler and the stream lines not yet sent."""

    request: GenerationRequest
    rows: list[ScheduledRow] = field(default_factory=list)
    lines: list[dict[str, Any]] = field(default_factory=list)

    @property
    def done(self) -> bool:
        return all(row.finished.is_set() for row in self.rows)

    @property
    def content_type(self) -> str:
        return JSONLINES if self.request.stream else _JSON

    def on_token(self, token_id: int, text: str, final: Completion | None) -> None:
        if self.request.stream:
            self.lines.append(stream_line(token_id, text, final, self.request.params))

    def result(self) -> dict[str, Any]:
        """This call's output for the request."""
        done = self.done
        if self.request.stream:
            data = b"".join(encode_line(line) for line in self.lines).decode("utf-8")
            self.lines.clear()
        elif done:
            body = response_body(self.request, [row.state.completion() for row in self.rows])
            data = json.dumps(body, ensure_ascii=False)
        else:
            data = ""
        return {"data": data, "last": done}


def _error(message: str, code: int) -> dict[str, Any]:
    return {"data": json.dumps(error_body(message, code), ensure_ascii=False), "last": True, "code": code,
            "error": message}


class DjlRollingBatch:
    """The requests in DJL's rolling-batch list, and one call of its loop (see the module doc)."""

    def __init__(self) -> None:
        self.requests: list[_Flight] = []

    def reset(self, handler: ModelHandler) -> None:
        """Cancel every row and forget every request (DJL's ``reset_rollingbatch``)."""
        _engine(handler).scheduler.reset()
        self.requests = []

    def handle(self, handler: ModelHandler, inputs: Any, output: Any) -> Any:
        """Answer one call of DJL's loop into ``output``: one binary pair list per batch item, in order."""
        if inputs.get_property("reset_rollingbatch"):
            self.reset(handler)
        items = inputs.get_batches()
        # Per batch item: its request in flight, or the error output of a request refused at once.
        answers: list[_Flight | dict[str, Any]] = list(self.requests)
        answers += [self._start(handler, item) for item in items[len(self.requests):]]
        self.requests = [answer for answer in answers if isinstance(answer, _Flight)]
        try:
            _engine(handler).step()
        except Exception as exc:  # any backend failure ends every request, as in LMI
            logger.exception("rolling batch step failed; failing %d requests", len(self.requests))
            message = f"{type(exc).__name__}: {exc}"
            answers = [_error(message, BACKEND_ERROR_CODE) if isinstance(a, _Flight) else a for a in answers]
            self.reset(handler)
        for index, answer in enumerate(answers):
            result = answer.result() if isinstance(answer, _Flight) else answer
            content_type = answer.content_type if isinstance(answer, _Flight) else _JSON
            output.add(output.binary_encode(result), key="data", batch_index=index)
            output.add_property(f"batch_{index}_Content-Type", content_type)
        self.requests = [flight for flight in self.requests if not flight.done]
        return output

    @staticmethod
    def _start(handler: ModelHandler, item: Any) -> _Flight | dict[str, Any]:
        try:
            request = read_request(item)
            prepared = handler.prepare(request)
        except InvalidRequest as exc:
            return _error(str(exc), exc.code)
        flight = _Flight(request)
        seed = _djl_seed(item)
        scheduler = _engine(handler).scheduler
        for index, prompt in enumerate(prepared):
            row_seed = None if seed is None else (seed + index) % _SEED_SPACE  # list prompts draw apart
            flight.rows.append(scheduler.submit(prompt, flight.on_token, index, seed=row_seed))
        return flight


def _engine(handler: ModelHandler) -> RollingEngine:
    # load_engine gives a RollingEngine whenever the configuration is rolling, which is when this runs.
    return cast(RollingEngine, handler.engine)
