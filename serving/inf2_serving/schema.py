"""The LMI/TGI request and response schema: parsing, validation and shaping.

Request::

    {"inputs": str | [str, ...],
     "parameters": {"max_new_tokens", "temperature", "top_k", "top_p", "do_sample",
                    "repetition_penalty", "stop", "seed", "return_full_text", "details"},
     "stream": bool}

Response: ``{"generated_text": str, "details"?: {...}}``, or a list of those for list
inputs. Errors: ``{"error": "<what and how to fix>", "code": 400}``.

Sampling happens only with ``do_sample: true`` (as in TGI and transformers); without
it, ``temperature``, ``top_k`` and ``top_p`` are accepted and have no effect.
Stop sequences are kept at the end of ``generated_text``, as TGI does, so streamed
token texts always join to the final text.
"""
from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "DEFAULT_MAX_NEW_TOKENS",
    "Completion",
    "GenerationParams",
    "GenerationRequest",
    "InvalidRequest",
    "error_body",
    "lone_surrogate_at",
    "parse_body",
    "parse_request",
    "response_body",
    "stream_line",
]

DEFAULT_MAX_NEW_TOKENS = 30
MAX_STOP_SEQUENCES = 8
# Below this, dividing fp32 logits by the temperature overflows and sampling fails;
# such a temperature means "always the likeliest token", so it decodes greedily.
MIN_SAMPLING_TEMPERATURE = 1e-5
# Logits are divided or multiplied by the penalty in fp32: far outside this range they
# reach 0 or inf and sampling fails; inside it, 1 is off and 1.2 is the usual setting.
REPETITION_PENALTY_RANGE = (0.01, 100.0)


class InvalidRequest(ValueError):
    """A request the client must fix; answered with HTTP 400 (or ``code``)."""

    def __init__(self, message: str, *, field: str | None = None, code: int = 400) -> None:
        super().__init__(message)
        self.field = field
        self.code = code


@dataclass(frozen=True)
class GenerationParams:
    """Validated generation parameters (TGI names and meanings)."""

    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    do_sample: bool = False
    repetition_penalty: float | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None
    return_full_text: bool = False
    details: bool = False

    @property
    def sampling(self) -> bool:
        """True when tokens are sampled; temperature 0 means greedy, as in TGI."""
        return self.do_sample and self.temperature >= MIN_SAMPLING_TEMPERATURE


@dataclass(frozen=True)
class GenerationRequest:
    """One parsed request: one or more prompts sharing parameters."""

    prompts: tuple[str, ...]
    params: GenerationParams
    is_list: bool = False
    stream: bool = False


@dataclass(frozen=True)
class Completion:
    """The result for one prompt."""

    prompt: str
    text: str
    token_ids: tuple[int, ...]
    finish_reason: str
    prompt_tokens: int
    seed: int | None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    """A finite int or float (JSON has no NaN or Infinity; 1e400 decodes to inf)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float
        return False


def lone_surrogate_at(text: str) -> int | None:
    """The index of the first lone UTF-16 surrogate in ``text``, or None when it is valid Unicode.

    JSON's ``\\ud800`` escapes and Python's ``surrogatepass`` decoding of bytes like
    ``ed a0 80`` both produce such characters; no tokenizer can encode them.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return exc.start
    return None


def _check_text(text: str, field: str) -> None:
    index = lone_surrogate_at(text)
    if index is not None:
        raise InvalidRequest(f"{field} has a lone UTF-16 surrogate (U+{ord(text[index]):04X}) at character {index}; "
                             "send valid Unicode text", field=field)


def _check(ok: bool, field: str, message: str) -> None:
    if not ok:
        raise InvalidRequest(f"parameters.{field} {message}", field=field)


def _parse_stop(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    _check(isinstance(value, list), "stop", "must be a string or a list of strings")
    _check(len(value) <= MAX_STOP_SEQUENCES, "stop", f"allows at most {MAX_STOP_SEQUENCES} sequences")
    for index, item in enumerate(value):
        _check(isinstance(item, str) and item != "", "stop", "must contain only non-empty strings")
        _check_text(item, f"parameters.stop[{index}]")
    return tuple(value)


def _parse_params(raw: Any) -> GenerationParams:
    if raw is None:
        return GenerationParams()
    if not isinstance(raw, dict):
        raise InvalidRequest('"parameters" must be a JSON object', field="parameters")
    known = GenerationParams.__dataclass_fields__
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise InvalidRequest(
            f"unknown parameter(s) {', '.join(unknown)}; supported: {', '.join(sorted(known))}",
            field=unknown[0],
        )
    values: dict[str, Any] = {k: v for k, v in raw.items() if v is not None}
    if "max_new_tokens" in values:
        v = values["max_new_tokens"]
        _check(_is_int(v) and v >= 1, "max_new_tokens", f"must be a whole number >= 1, got {v!r}")
    if "temperature" in values:
        v = values["temperature"]
        _check(_is_number(v) and v >= 0, "temperature", f"must be a number >= 0, got {v!r}")
        values["temperature"] = float(v)
    if "top_k" in values:
        v = values["top_k"]
        _check(_is_int(v) and v >= 0, "top_k", f"must be a whole number >= 0 (0 disables), got {v!r}")
    if "top_p" in values:
        v = values["top_p"]
        _check(_is_number(v) and 0 < v <= 1, "top_p", f"must be a number in (0, 1], got {v!r}")
        values["top_p"] = float(v)
    if "repetition_penalty" in values:
        v = values["repetition_penalty"]
        low, high = REPETITION_PENALTY_RANGE
        _check(_is_number(v) and low <= v <= high, "repetition_penalty",
               f"must be a number from {low} to {high}, got {v!r}")
        values["repetition_penalty"] = float(v)
    if "seed" in values:
        v = values["seed"]
        _check(_is_int(v) and 0 <= v < 2**63, "seed", f"must be a whole number >= 0, got {v!r}")
    for flag in ("do_sample", "return_full_text", "details"):
        if flag in values:
            _check(isinstance(values[flag], bool), flag, f"must be true or false, got {values[flag]!r}")
    if "stop" in values:
        values["stop"] = _parse_stop(values["stop"])
    return GenerationParams(**values)


def parse_request(payload: Any) -> GenerationRequest:
    """Validate a decoded JSON request body.

    Raises:
        InvalidRequest: the body does not follow the schema; the message names the field.
    """
    if not isinstance(payload, dict):
        raise InvalidRequest('the request body must be a JSON object like {"inputs": "Hello"}')
    unknown = sorted(set(payload) - {"inputs", "parameters", "stream"})
    if unknown:
        raise InvalidRequest(
            f"unknown field(s) {', '.join(unknown)}; a request has inputs, parameters and stream",
            field=unknown[0],
        )
    if "inputs" not in payload:
        raise InvalidRequest('missing "inputs": send {"inputs": "your prompt"}', field="inputs")
    inputs = payload["inputs"]
    is_list = isinstance(inputs, list)
    prompts = inputs if is_list else [inputs]
    if not prompts or not all(isinstance(p, str) for p in prompts):
        raise InvalidRequest('"inputs" must be a string or a non-empty list of strings', field="inputs")
    if not all(p.strip() for p in prompts):
        raise InvalidRequest('"inputs" must not contain empty prompts', field="inputs")
    for index, prompt in enumerate(prompts):
        _check_text(prompt, f"inputs[{index}]" if is_list else "inputs")
    stream = payload.get("stream", False)
    if not isinstance(stream, bool):
        raise InvalidRequest(f'"stream" must be true or false, got {stream!r}', field="stream")
    if stream and is_list:
        raise InvalidRequest('"stream": true takes a single string in "inputs"', field="stream")
    return GenerationRequest(tuple(prompts), _parse_params(payload.get("parameters")), is_list, stream)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def parse_body(body: bytes | str) -> GenerationRequest:
    """Decode a JSON request body and validate it (see :func:`parse_request`)."""
    try:
        payload = json.loads(body, parse_constant=_reject_constant)
    except UnicodeDecodeError as exc:
        raise InvalidRequest(f"the request body is not valid UTF-8 (byte {exc.start}: {exc.reason})") from None
    except ValueError as exc:
        raise InvalidRequest(f"the request body is not valid JSON ({exc})") from None
    except RecursionError:
        raise InvalidRequest("the request body is nested too deeply to be a request") from None
    return parse_request(payload)


def _details(completion: Completion) -> dict[str, Any]:
    return {
        "finish_reason": completion.finish_reason,
        "generated_tokens": len(completion.token_ids),
        "prompt_tokens": completion.prompt_tokens,
        "seed": completion.seed,
    }


def _one(completion: Completion, params: GenerationParams) -> dict[str, Any]:
    text = completion.prompt + completion.text if params.return_full_text else completion.text
    body: dict[str, Any] = {"generated_text": text}
    if params.details:
        body["details"] = _details(completion)
    return body


def response_body(
    request: GenerationRequest, completions: Sequence[Completion]
) -> dict[str, Any] | list[dict[str, Any]]:
    """The JSON response: one object, or a list of them for list inputs."""
    bodies = [_one(c, request.params) for c in completions]
    return bodies if request.is_list else bodies[0]


def stream_line(
    token_id: int, text: str, final: Completion | None = None, params: GenerationParams | None = None
) -> dict[str, Any]:
    """One streamed JSON line; the last one (``final`` given) also carries the full text."""
    line: dict[str, Any] = {"token": {"id": token_id, "text": text}}
    if final is not None:
        line.update(_one(final, params or GenerationParams()))
    return line


def error_body(message: str, code: int = 400) -> dict[str, Any]:
    """The JSON error body."""
    return {"error": message, "code": code}
