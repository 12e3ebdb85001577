"""What a request to a deployment and its answer are, and the client interface both transports share.

The rules are the server's (:mod:`inf2_serving.contract`), so a request refused here
would have been refused there, after a paid call. :class:`PredictorBase` turns
prompts into LMI requests and answers into text; the transports
(:class:`~inf2_deploy.client.predictor.Predictor` for SageMaker,
:class:`~inf2_deploy.client.predictor.LocalPredictor` for a local server) only send bytes.
"""
from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from inf2_serving.contract import (
    ENDPOINT_NAME,
    ENDPOINT_NAME_RULE,
    PARAMETER_NAMES,
    InvalidParameters,
    lone_surrogate_at,
    text_problem,
    validate_parameters,
)

from ..errors import ConfigError, InvocationError
from .jsonlines import JsonLinesError, iter_json_lines

__all__ = [
    "CUSTOM_ATTRIBUTES_HEADER",
    "GENERATION_PARAMETERS",
    "InvokeResponse",
    "JSON_TYPE",
    "JSON_LINES_TYPE",
    "MAX_BODY_BYTES",
    "PredictorBase",
    "check_parameters",
    "error_text",
]

JSON_TYPE = "application/json"
JSON_LINES_TYPE = "application/jsonlines"
# The header SageMaker passes custom attributes in, both ways, to and from the container.
CUSTOM_ATTRIBUTES_HEADER = "X-Amzn-SageMaker-Custom-Attributes"
# InvokeEndpoint's header fields: at most 1024 characters; printable ASCII, as HTTP headers carry them.
_HEADER_TEXT = re.compile(r"^[\x20-\x7e]{0,1024}$")
MAX_BODY_BYTES = 6 * 1024 * 1024
"""InvokeEndpoint's largest request body (the sagemaker-runtime service model's Body limit)."""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


GENERATION_PARAMETERS: tuple[str, ...] = PARAMETER_NAMES
"""The TGI generation parameter names the LMI schema accepts."""


def check_parameters(parameters: Mapping[str, Any]) -> dict[str, Any]:
    """Validate generation parameters with the server's own rules; drop those set to ``None``.

    The rules are the contract's (:data:`inf2_serving.contract.PARAMETERS`), so what
    passes here is what the server accepts.

    Returns:
        The parameters to send, with ``stop`` as a list.

    Raises:
        ConfigError: an unknown name (with the closest known one) or a refused value;
            ``problems`` lists every field at fault.
    """
    try:
        checked = validate_parameters(parameters)
    except InvalidParameters as exc:
        error = ConfigError.from_problems([(problem.field, problem.message) for problem in exc.problems])
        error.value = exc.problems[0].value
        raise error from None
    if "stop" in checked:
        checked["stop"] = list(checked["stop"])
    return checked


def _check_text(text: str, field: str) -> None:
    index = lone_surrogate_at(text)
    if index is not None:
        raise ConfigError(str(text_problem(text)), field=field, value=text[max(0, index - 20):index + 20])


def _check_prompt(prompt: Any, field: str = "prompt") -> str:
    if not isinstance(prompt, str) or not prompt.strip():
        raise ConfigError("must be a non-empty string", field=field, value=prompt)
    _check_text(prompt, field)
    return prompt


def _check_request(data: Any) -> None:
    """``data`` is an LMI request that asks for one JSON answer (the rules the server applies)."""
    if not isinstance(data, Mapping):
        raise ConfigError('must be a dict like {"inputs": "Hello", "parameters": {...}}', field="data", value=data)
    unknown = sorted(set(data) - {"inputs", "parameters", "stream"})
    if unknown:
        raise ConfigError("is not a request field; a request has inputs, parameters and stream", field=unknown[0])
    if data.get("stream"):
        raise ConfigError("predict returns one answer; stream with stream() or stream_events()", field="stream")
    inputs = data.get("inputs")
    if isinstance(inputs, list) and inputs:
        for index, prompt in enumerate(inputs):
            _check_prompt(prompt, f"inputs[{index}]")
    else:
        _check_prompt(inputs, "inputs")
    parameters = data.get("parameters", {})
    if not isinstance(parameters, Mapping):
        raise ConfigError("must be a dict of generation parameters", field="parameters", value=parameters)
    check_parameters(parameters)


def _check_invoke(body: Any, content_type: Any, accept: Any, custom_attributes: Any, target_variant: Any) -> None:
    """The InvokeEndpoint fields, by the service model's rules; every problem at once."""
    problems = []
    if not isinstance(body, (bytes, bytearray)):
        problems.append(("body", f"must be bytes, got {type(body).__name__}"))
    elif len(body) > MAX_BODY_BYTES:
        problems.append(("body", f"is {len(body)} bytes; InvokeEndpoint takes at most {MAX_BODY_BYTES}"))
    headers = (("content_type", content_type), ("accept", accept), ("custom_attributes", custom_attributes))
    for field, value in headers:
        if value is not None and not (isinstance(value, str) and _HEADER_TEXT.match(value)):
            problems.append((field, f"must be at most 1024 printable ASCII characters, got {str(value)[:80]!r}"))
    if not content_type:
        problems.append(("content_type", "must name the body's media type, e.g. application/json"))
    if target_variant is not None and not (isinstance(target_variant, str) and ENDPOINT_NAME.match(target_variant)):
        problems.append(("target_variant", f"{ENDPOINT_NAME_RULE}, got {str(target_variant)[:80]!r}"))
    if problems:
        raise ConfigError.from_problems(problems)


def _request(inputs: str | list[str], parameters: dict[str, Any], *, stream: bool) -> bytes:
    payload: dict[str, Any] = {"inputs": inputs, "parameters": check_parameters(parameters)}
    if stream:
        payload["stream"] = True
    return json.dumps(payload).encode("utf-8")


def _one_result(body: Any, *, details: bool) -> str | dict[str, Any]:
    if not isinstance(body, dict) or not isinstance(body.get("generated_text"), str):
        raise InvocationError(f"the endpoint answered without generated_text: {str(body)[:200]}")
    return body if details else body["generated_text"]


def error_text(raw: str | bytes | None) -> tuple[str | None, int | None]:
    """The message and code of an LMI error body ``{"error", "code"}``, or the raw text."""
    if not raw:
        return None, None
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    try:
        data = json.loads(text)
    except ValueError:
        return text.strip()[:500], None
    if isinstance(data, dict) and isinstance(data.get("error"), str):
        code = data.get("code")
        return data["error"], code if _is_int(code) else None
    return text.strip()[:500], None


@dataclass(frozen=True)
class InvokeResponse:
    """A deployment's raw answer to :meth:`Predictor.invoke`, as InvokeEndpoint returns it."""

    body: bytes
    content_type: str | None = None
    #: the container's X-Amzn-SageMaker-Custom-Attributes answer header, if it set one
    custom_attributes: str | None = None
    #: the production variant that answered (SageMaker only)
    invoked_variant: str | None = None


class PredictorBase(ABC):
    """The client interface; subclasses supply the transport (``_invoke`` and ``_post_stream``)."""

    endpoint_name: str

    @abstractmethod
    def _invoke(self, body: bytes, content_type: str, accept: str | None, custom_attributes: str | None,
                target_variant: str | None) -> InvokeResponse:
        """Send ``body`` as is and return the answer; an error answer raises InvocationError."""

    @abstractmethod
    def _post_stream(self, payload: bytes) -> Iterator[bytes]:
        """Send one streaming request and yield the answer's bytes as they arrive."""

    def _post(self, payload: bytes) -> Any:
        """Send one JSON request and return the decoded JSON answer."""
        answer = self._invoke(payload, JSON_TYPE, JSON_TYPE, None, None)
        try:
            return json.loads(answer.body)
        except ValueError:
            raise InvocationError(f"{self.endpoint_name} answered with non-JSON: {answer.body[:200]!r}") from None

    def invoke(
        self,
        body: bytes,
        *,
        content_type: str = JSON_TYPE,
        accept: str | None = None,
        custom_attributes: str | None = None,
        target_variant: str | None = None,
    ) -> InvokeResponse:
        """Send ``body`` unchanged, as InvokeEndpoint does, and return the answer unparsed.

        Args:
            body: the request bytes (at most :data:`MAX_BODY_BYTES`).
            content_type: the body's media type.
            accept: the media type asked for in the answer.
            custom_attributes: passed to the container in ``X-Amzn-SageMaker-Custom-Attributes``.
            target_variant: the production variant to invoke (SageMaker only).

        Raises:
            ConfigError: a field breaks InvokeEndpoint's rules, or ``target_variant`` for a local
                server (nothing was sent).
            InvocationError: the endpoint answered with an error.
        """
        _check_invoke(body, content_type, accept, custom_attributes, target_variant)
        return self._invoke(bytes(body), content_type, accept, custom_attributes, target_variant)

    def predict(self, data: Mapping[str, Any]) -> dict[str, Any] | list[Any]:
        """Send ``data`` as the LMI request JSON and return the decoded answer, as the SageMaker SDK's
        ``Predictor`` with its JSON serializer and deserializer does.

        Args:
            data: ``{"inputs": "Hello" or ["a", "b"], "parameters": {...}}``.

        Returns:
            ``{"generated_text": ...}`` (and ``details`` when asked) for one prompt; a list of them
            for a list of prompts.

        Raises:
            ConfigError: ``data`` is not a request the server accepts, or asks to stream (nothing was sent).
            InvocationError: the endpoint answered with an error.
        """
        _check_request(data)
        return self._post(json.dumps(dict(data)).encode("utf-8"))

    def generate(self, prompt: str, **parameters: Any) -> str | dict[str, Any]:
        """Generate a completion for ``prompt``.

        Args:
            prompt: the text to continue.
            **parameters: TGI generation parameters (max_new_tokens, temperature, top_k,
                top_p, do_sample, repetition_penalty, stop, seed, return_full_text, details).

        Returns:
            The generated text, or the whole response dict (with ``details``) when
            ``details=True``.

        Raises:
            ConfigError: the prompt or a parameter is invalid (nothing was sent).
            InvocationError: the endpoint answered with an error.
            CredentialsError: no AWS credentials or region (SageMaker only).
        """
        payload = _request(_check_prompt(prompt), parameters, stream=False)
        body = self._post(payload)
        if isinstance(body, list) and len(body) == 1:  # some servers wrap a single answer
            body = body[0]
        return _one_result(body, details=bool(parameters.get("details")))

    def generate_batch(self, prompts: Sequence[str], **parameters: Any) -> list[str | dict[str, Any]]:
        """Generate completions for several prompts in one request (the server batches them).

        Returns:
            One result per prompt, in order: texts, or response dicts with ``details=True``.

        Raises:
            ConfigError: a prompt or a parameter is invalid (nothing was sent).
            InvocationError: the endpoint answered with an error or with the wrong number of results.
        """
        if isinstance(prompts, str) or not prompts:
            raise ConfigError("must be a non-empty list of prompts", field="prompts", value=prompts)
        inputs = [_check_prompt(p) for p in prompts]
        body = self._post(_request(inputs, parameters, stream=False))
        if not isinstance(body, list) or len(body) != len(inputs):
            raise InvocationError(f"the endpoint answered {len(inputs)} prompts with {str(body)[:200]}")
        details = bool(parameters.get("details"))
        return [_one_result(item, details=details) for item in body]

    def stream_events(self, prompt: str, **parameters: Any) -> Iterator[dict[str, Any]]:
        """Stream a completion and yield every JSON line as it arrives.

        Each line is ``{"token": {"id", "text", ...}}``; the last one also carries
        ``generated_text`` (and ``details`` when asked). The prompt and parameters
        are checked now; the request is sent when iteration starts.

        Raises:
            ConfigError: the prompt or a parameter is invalid (raised by this call).
            InvocationError: the endpoint answered with an error, before or during the stream.
        """
        payload = _request(_check_prompt(prompt), parameters, stream=True)
        return self._events(payload)

    def _events(self, payload: bytes) -> Iterator[dict[str, Any]]:
        try:
            for line in iter_json_lines(self._post_stream(payload)):
                if not isinstance(line, dict):
                    raise InvocationError(f"the endpoint streamed a line that is not an object: {line!r}")
                if "error" in line:  # an error after the stream started, e.g. a failed step
                    code = line.get("code")
                    raise InvocationError(f"{self.endpoint_name}: {line['error']}",
                                          status=code if _is_int(code) else None)
                yield line
        except JsonLinesError as exc:
            raise InvocationError(f"the endpoint streamed a line that is not JSON: {exc}") from None

    def stream(self, prompt: str, **parameters: Any) -> Iterator[str]:
        """Stream a completion and yield each token's text as it arrives.

        Raises:
            ConfigError: the prompt or a parameter is invalid (raised by this call).
            InvocationError: the endpoint answered with an error, before or during the stream.
        """
        return _token_texts(self.stream_events(prompt, **parameters))

    @abstractmethod
    def close(self) -> None:
        """Release network connections; the predictor cannot be used afterwards."""

    def __enter__(self) -> PredictorBase:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _token_texts(events: Iterator[dict[str, Any]]) -> Iterator[str]:
    for event in events:
        token = event.get("token")
        if isinstance(token, dict) and isinstance(token.get("text"), str) and token["text"]:
            yield token["text"]
