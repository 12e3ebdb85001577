"""The LMI/TGI request and response schema: parsing, validation and shaping.

Request::

    {"inputs": str | [str, ...],
     "parameters": {"max_new_tokens", "temperature", "top_k", "top_p", "do_sample",
                    "repetition_penalty", "stop", "seed", "return_full_text", "details"},
     "stream": bool}

The parameters and the values accepted are the contract's
(:data:`inf2_serving.contract.PARAMETERS`), which the client checks too.
Response: ``{"generated_text": str, "details"?: {...}}``, or a list of those for list
inputs. Errors: ``{"error": "<what and how to fix>", "code": 400}``.

Sampling happens only with ``do_sample: true`` (as in TGI and transformers); without
it, ``temperature``, ``top_k`` and ``top_p`` are accepted and have no effect.
Stop sequences are kept at the end of ``generated_text``, as TGI does, so streamed
token texts always join to the final text.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .contract import (
    DEFAULT_MAX_NEW_TOKENS,
    PARAMETERS,
    InvalidParameters,
    lone_surrogate_at,
    text_problem,
    validate_parameters,
)

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

# Below this, dividing fp32 logits by the temperature overflows and sampling fails;
# such a temperature means "always the likeliest token", so it decodes greedily.
MIN_SAMPLING_TEMPERATURE = 1e-5
_DEFAULT = {parameter.name: parameter.default for parameter in PARAMETERS}


class InvalidRequest(ValueError):
    """A request the client must fix; answered with HTTP 400 (or ``code``)."""

    def __init__(self, message: str, *, field: str | None = None, code: int = 400) -> None:
        super().__init__(message)
        self.field = field
        self.code = code


@dataclass(frozen=True)
class GenerationParams:
    """Validated generation parameters (TGI names and meanings)."""

    max_new_tokens: int = _DEFAULT["max_new_tokens"]
    temperature: float = _DEFAULT["temperature"]
    top_k: int | None = _DEFAULT["top_k"]
    top_p: float | None = _DEFAULT["top_p"]
    do_sample: bool = _DEFAULT["do_sample"]
    repetition_penalty: float | None = _DEFAULT["repetition_penalty"]
    stop: tuple[str, ...] = _DEFAULT["stop"]
    seed: int | None = _DEFAULT["seed"]
    return_full_text: bool = _DEFAULT["return_full_text"]
    details: bool = _DEFAULT["details"]

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


def _check_text(text: str, field: str) -> None:
    problem = text_problem(text)
    if problem is not None:
        raise InvalidRequest(f"{field} {problem}", field=field)


def _parse_params(raw: Any) -> GenerationParams:
    if raw is None:
        return GenerationParams()
    if not isinstance(raw, dict):
        raise InvalidRequest('"parameters" must be a JSON object', field="parameters")
    try:
        return GenerationParams(**validate_parameters(raw))
    except InvalidParameters as exc:
        first = exc.problems[0]
        # An item is named from the body's root, as inputs[1] is; a whole parameter by its name.
        field = first.name if first.index is None else f"parameters.{first.field}"
        raise InvalidRequest(str(exc), field=field) from None


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
