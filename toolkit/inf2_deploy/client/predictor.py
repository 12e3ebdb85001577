"""Invoke a deployed model: a SageMaker endpoint (:class:`Predictor`) or a local server (:class:`LocalPredictor`).

Both speak the LMI/TGI schema: the request is ``{"inputs", "parameters", "stream"}``
and the answer ``{"generated_text", "details"?}``; a stream is JSON lines of
``{"token": {"id", "text"}}`` whose last line also carries ``generated_text``.
They share one interface::

    predictor.generate("Hello", max_new_tokens=20)          # -> str
    predictor.generate("Hello", details=True)               # -> the response dict
    predictor.generate_batch(["a", "b"])                    # -> [str, str]
    for text in predictor.stream("Hello"): ...              # token texts as they arrive
    for line in predictor.stream_events("Hello"): ...       # every parsed JSON line
    predictor.predict({"inputs": "Hello"})                  # the request dict in, the response dict out
    predictor.invoke(b"...", content_type="text/csv")      # bytes as is, as InvokeEndpoint sends them

and :meth:`Predictor.delete_endpoint` deletes the endpoint as ``inf2-deploy delete`` does.

Generation parameters are checked on the client, so a typo fails with a
:class:`~inf2_deploy.errors.ConfigError` before a paid call. Every error the
endpoint answers with, whatever the transport, is an
:class:`~inf2_deploy.errors.InvocationError` carrying the HTTP status.
"""
from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
from inf2_serving.contract import (
    ENDPOINT_NAME,
    ENDPOINT_NAME_RULE,
    PARAMETER_NAMES,
    InvalidParameters,
    lone_surrogate_at,
    text_problem,
    validate_parameters,
)

from ..errors import ConfigError, CredentialsError, EndpointNotFoundError, InvocationError
from ..spec.validators import check_endpoint_name
from .jsonlines import JsonLinesError, iter_json_lines

__all__ = [
    "GENERATION_PARAMETERS",
    "InvokeResponse",
    "LocalPredictor",
    "MAX_BODY_BYTES",
    "Predictor",
    "check_parameters",
    "runtime_client",
]

_JSON = "application/json"
_JSON_LINES = "application/jsonlines"
# The header SageMaker passes custom attributes in, both ways, to and from the container.
_CUSTOM_ATTRIBUTES = "X-Amzn-SageMaker-Custom-Attributes"
# InvokeEndpoint's header fields: at most 1024 characters; printable ASCII, as HTTP headers carry them.
_HEADER_TEXT = re.compile(r"^[\x20-\x7e]{0,1024}$")
DEFAULT_LOCAL_TIMEOUT = 300.0
"""Seconds LocalPredictor waits for an answer (or for the next streamed bytes)."""
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


def _error_text(raw: str | bytes | None) -> tuple[str | None, int | None]:
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


class _PredictorBase(ABC):
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
        answer = self._invoke(payload, _JSON, _JSON, None, None)
        try:
            return json.loads(answer.body)
        except ValueError:
            raise InvocationError(f"{self.endpoint_name} answered with non-JSON: {answer.body[:200]!r}") from None

    def invoke(
        self,
        body: bytes,
        *,
        content_type: str = _JSON,
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

    def __enter__(self) -> _PredictorBase:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _token_texts(events: Iterator[dict[str, Any]]) -> Iterator[str]:
    for event in events:
        token = event.get("token")
        if isinstance(token, dict) and isinstance(token.get("text"), str) and token["text"]:
            yield token["text"]


# --- SageMaker -----------------------------------------------------------------------------------------


def _aws_session(region: str | None, session: Any) -> Any:
    """Our :class:`~inf2_deploy.aws.session.Session` from what the caller gave."""
    from ..aws.session import Session, make_session

    if session is None:
        return make_session(region)
    if isinstance(session, Session):
        return session
    region = region or session.region_name  # a boto3.Session
    if not region:
        raise CredentialsError("no AWS region configured", field="region", hint="pass --region or set AWS_REGION")
    return Session(session, region)


def runtime_client(*, region: str | None = None, session: Any = None) -> Any:
    """The ``sagemaker-runtime`` client, from :mod:`inf2_deploy.aws.session` (adaptive retries).

    Args:
        region: the region; default: the session's, else the standard AWS resolution.
        session: an :class:`inf2_deploy.aws.session.Session` or a ``boto3.Session``; default: a new one.
            ``AWS_ENDPOINT_URL`` (and ``AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME``) are honoured by botocore.

    Raises:
        CredentialsError: no region or no credentials could be found.
    """
    return _aws_session(region, session).client("sagemaker-runtime")


def _aws_error(exc: Exception, endpoint_name: str) -> Exception:
    """Our error for a botocore exception raised by an invocation (or while streaming)."""
    from botocore.exceptions import ClientError, NoCredentialsError, PartialCredentialsError

    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return CredentialsError(f"no usable AWS credentials: {exc}",
                                hint="set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY")
    if not isinstance(exc, ClientError):
        from ..aws.session import last_call

        return InvocationError(f"{last_call() or 'sagemaker-runtime'} {endpoint_name} failed: {type(exc).__name__}: "
                               f"{exc}", hint="the network failed after botocore's retries; try again")
    response = exc.response
    error = response.get("Error", {})
    code = error.get("Code", "")
    message = error.get("Message") or str(exc)
    metadata = response.get("ResponseMetadata", {})
    status = metadata.get("HTTPStatusCode")
    hint = None
    if code == "ModelError":
        # The container's own answer: its status and (LMI) {"error", "code"} body.
        status = response.get("OriginalStatusCode", status)
        message = _error_text(response.get("OriginalMessage"))[0] or message
    elif code in ("ModelStreamError", "InternalStreamFailure"):
        message = f"{code}: {message}"
        status = status if status and status >= 400 else 500
    elif code == "ValidationError" and "not found" in message.lower():
        return EndpointNotFoundError(f"{endpoint_name}: {message}", code="NotFound", field="name",
                                     value=endpoint_name, hint="see `inf2-deploy list`",
                                     request_id=metadata.get("RequestId"))
    elif code == "ModelNotReadyException":
        hint = f"the model is still loading; inf2-deploy status {endpoint_name}"
    return InvocationError(f"{endpoint_name}: {message}", status=status, hint=hint,
                           request_id=metadata.get("RequestId"))


class Predictor(_PredictorBase):
    """Invoke a SageMaker endpoint running the LMI container.

    Args:
        endpoint_name: the SageMaker endpoint name.
        region: the AWS region; default: the session's, else the standard AWS resolution.
        session: an :class:`inf2_deploy.aws.session.Session` or a ``boto3.Session`` to create the client from.
        client: a ready ``sagemaker-runtime`` client (tests pass a stubbed one);
            ``region`` and ``session`` are then ignored.

    Raises:
        ConfigError: the endpoint name is not a valid SageMaker name.
        CredentialsError: no region or no credentials could be found.
    """

    def __init__(
        self,
        endpoint_name: str,
        region: str | None = None,
        session: Any = None,
        *,
        client: Any = None,
    ) -> None:
        self.endpoint_name = check_endpoint_name(endpoint_name, "endpoint_name")
        self._owns_client = client is None
        self._client = client if client is not None else runtime_client(region=region, session=session)
        self._session = session  # for delete_endpoint's SageMaker calls

    def __repr__(self) -> str:
        return f"Predictor({self.endpoint_name!r}, region={self._client.meta.region_name!r})"

    def _invoke(self, body: bytes, content_type: str, accept: str | None, custom_attributes: str | None,
                target_variant: str | None) -> InvokeResponse:
        from botocore.exceptions import BotoCoreError, ClientError

        optional = {"Accept": accept, "CustomAttributes": custom_attributes, "TargetVariant": target_variant}
        try:
            response = self._client.invoke_endpoint(
                EndpointName=self.endpoint_name, Body=body, ContentType=content_type,
                **{key: value for key, value in optional.items() if value is not None})
            data = response["Body"].read()
        except (ClientError, BotoCoreError) as exc:
            raise _aws_error(exc, self.endpoint_name) from None
        return InvokeResponse(data, response.get("ContentType"), response.get("CustomAttributes"),
                              response.get("InvokedProductionVariant"))

    def _post_stream(self, payload: bytes) -> Iterator[bytes]:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            response = self._client.invoke_endpoint_with_response_stream(
                EndpointName=self.endpoint_name, Body=payload, ContentType=_JSON, Accept=_JSON_LINES)
            events = response["Body"]
            try:
                # Errors inside the stream arrive either as modeled events or, from botocore's
                # event-stream parser, as an EventStreamError (a ClientError) while iterating.
                for event in events:
                    if "PayloadPart" in event:
                        yield event["PayloadPart"].get("Bytes", b"")
                    for kind in ("ModelStreamError", "InternalStreamFailure"):
                        if kind in event:
                            detail = event[kind]
                            raise InvocationError(
                                f"{self.endpoint_name}: {kind}: {detail.get('Message') or 'no message'}",
                                status=500, value=detail.get("ErrorCode"))
            finally:
                events.close()  # frees the connection when the caller stops early
        except (ClientError, BotoCoreError) as exc:
            raise _aws_error(exc, self.endpoint_name) from None

    def delete_endpoint(self, *, purge_artifacts: bool = False, wait: bool = False) -> list[str]:
        """Delete the endpoint, its endpoint config and model(s): the teardown of ``inf2-deploy delete``.

        Args:
            purge_artifacts: also delete the artifact in S3 that no other live model uses.
            wait: when the endpoint is still Creating or Updating, wait for it to settle first.

        Returns:
            What was deleted, one item per resource.

        Raises:
            EndpointNotFoundError: no such endpoint and nothing left of one.
            AwsError: the endpoint is busy and ``wait`` is false, or a call failed.
        """
        from ..aws.teardown import delete_deployment

        session = _aws_session(self._client.meta.region_name, self._session)
        return list(delete_deployment(self.endpoint_name, purge_artifacts=purge_artifacts, wait=wait,
                                      session=session))

    def close(self) -> None:
        if self._owns_client:
            self._client.close()


# --- local HTTP -----------------------------------------------------------------------------------------


class LocalPredictor(_PredictorBase):
    """Invoke an LMI-compatible HTTP server, such as ``inf2-deploy serve`` or ``deploy --local``.

    Args:
        url: the server's base URL, e.g. ``http://127.0.0.1:8080``; requests go to ``{url}/invocations``.
        name: the local deployment's name (shown in errors); default: the URL.
        timeout: seconds to wait for an answer or for the next streamed bytes.
        client: an ``httpx.Client`` to send with (tests pass one with a mock transport).

    Raises:
        ConfigError: the URL is not an http(s) URL.
    """

    def __init__(
        self,
        url: str,
        *,
        name: str | None = None,
        timeout: float = DEFAULT_LOCAL_TIMEOUT,
        client: httpx.Client | None = None,
    ) -> None:
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ConfigError("must be an http:// or https:// URL", field="url", value=url)
        self.url = url.rstrip("/")
        self.endpoint_name = name or self.url
        self._owns_client = client is None
        self._http = client if client is not None else httpx.Client(timeout=httpx.Timeout(timeout, connect=10))

    def __repr__(self) -> str:
        return f"LocalPredictor({self.url!r})"

    def _unreachable(self, exc: httpx.TransportError) -> InvocationError:
        return InvocationError(f"cannot reach {self.url}: {exc or type(exc).__name__}",
                               hint="is the server running? inf2-deploy list shows local deployments")

    def _http_error(self, response: httpx.Response) -> InvocationError:
        message, _code = _error_text(response.content)
        return InvocationError(f"{self.endpoint_name}: {message or response.reason_phrase}",
                               status=response.status_code)

    def _invoke(self, body: bytes, content_type: str, accept: str | None, custom_attributes: str | None,
                target_variant: str | None) -> InvokeResponse:
        if target_variant is not None:
            raise ConfigError("applies to SageMaker endpoints only; a local server has one model",
                              field="target_variant", value=target_variant)
        optional = {"Accept": accept, _CUSTOM_ATTRIBUTES: custom_attributes}
        headers = {"Content-Type": content_type, **{key: value for key, value in optional.items() if value is not None}}
        try:
            response = self._http.post(f"{self.url}/invocations", content=body, headers=headers)
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from None
        if response.status_code >= 400:
            raise self._http_error(response)
        return InvokeResponse(response.content, response.headers.get("content-type"),
                              response.headers.get(_CUSTOM_ATTRIBUTES))

    def _post_stream(self, payload: bytes) -> Iterator[bytes]:
        try:
            with self._http.stream("POST", f"{self.url}/invocations", content=payload,
                                   headers={"Content-Type": _JSON, "Accept": _JSON_LINES}) as response:
                if response.status_code >= 400:
                    response.read()
                    raise self._http_error(response)
                yield from response.iter_bytes()
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from None

    def close(self) -> None:
        if self._owns_client:
            self._http.close()
