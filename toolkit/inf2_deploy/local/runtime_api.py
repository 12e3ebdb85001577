"""The SageMaker runtime API in front of the local server, so boto3 code runs unchanged against it.

boto3's ``sagemaker-runtime`` client sends ``InvokeEndpoint`` and
``InvokeEndpointWithResponseStream`` to these routes when
``AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME=http://127.0.0.1:PORT`` (botocore's service-specific
endpoint variable) points it at the local server:

- ``POST /endpoints/{name}/invocations``: the body goes to the same handling as
  ``/invocations`` and the answer comes back as is (a streamed answer whole, as
  SageMaker buffers it), with ``Content-Type`` and ``x-Amzn-Invoked-Production-Variant``.
- ``POST /endpoints/{name}/invocations-response-stream``: the same request with
  ``"stream": true`` forced on, as LMI containers stream for this API. Each chunk of
  JSON lines goes out as the model produces it, in a ``PayloadPart`` event
  (``application/vnd.amazon.eventstream``).

Any valid endpoint name is accepted: a local server serves exactly one model and does
not know the name a deployment was given, and accepting any name lets code written
for the real endpoint run unchanged. A name SageMaker would reject gets its
``ValidationError``. Request signatures are not checked, so any credentials work
(boto3 still needs some to sign with).

Errors come back as SageMaker reports them (REST-JSON with ``x-amzn-ErrorType``):

========================================  =====================================================
the container answers 4xx/5xx             ``ModelError`` (424) with ``OriginalStatusCode`` and
(bad request, loading, body too large)    ``OriginalMessage`` (the LMI ``{"error", "code"}``)
an invalid endpoint name                  ``ValidationError`` (400)
generation fails after the stream began   a ``ModelStreamError`` exception event ends the stream
========================================  =====================================================

SageMaker itself passes a container's in-stream error line through as payload; here it
becomes ``ModelStreamError`` so that boto3 callers see a failed stream as a failure.
"""
from __future__ import annotations

import json
import re
import struct
import uuid
import zlib
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

from inf2_serving.contract import VARIANT_NAME
from inf2_serving.jsonline import JSONLINES
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

__all__ = [
    "EVENT_STREAM",
    "event_message",
    "event_stream",
    "payload_part",
    "runtime_routes",
    "stream_exception",
    "streaming_body",
]

EVENT_STREAM = "application/vnd.amazon.eventstream"
"""The media type of the response-stream API's answer: event-stream messages."""

# SageMaker's EndpointName constraint (botocore's service model) and its 63-character limit.
_ENDPOINT_NAME = re.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9])*")
_MAX_NAME = 63
_STRING_HEADER = 7  # the event-stream header value type for a UTF-8 string

Invoke = Callable[[Request, bool], Awaitable[Response]]
"""The container's invocation handling: ``(request, force_stream) -> response``."""


# --- the event-stream wire format -------------------------------------------------------------------


def _header(name: str, value: str) -> bytes:
    raw_name, raw_value = name.encode("utf-8"), value.encode("utf-8")
    return (struct.pack("B", len(raw_name)) + raw_name + struct.pack("B", _STRING_HEADER)
            + struct.pack(">H", len(raw_value)) + raw_value)


def event_message(headers: Mapping[str, str], payload: bytes) -> bytes:
    """One ``application/vnd.amazon.eventstream`` message.

    The layout: total length and headers length (big-endian uint32), the CRC32 of
    those 8 bytes, the headers (all strings here), the payload, then the CRC32 of
    everything before it.

    Args:
        headers: header names and string values, e.g. ``{":message-type": "event"}``.
        payload: the message body.

    Returns:
        The encoded message.
    """
    encoded = b"".join(_header(name, value) for name, value in headers.items())
    prelude = struct.pack(">II", 12 + len(encoded) + len(payload) + 4, len(encoded))
    message = prelude + struct.pack(">I", zlib.crc32(prelude)) + encoded + payload
    return message + struct.pack(">I", zlib.crc32(message))


def payload_part(data: bytes) -> bytes:
    """A ``PayloadPart`` event carrying ``data`` (botocore yields it as ``{"PayloadPart": {"Bytes": data}}``)."""
    return event_message({":message-type": "event", ":event-type": "PayloadPart",
                          ":content-type": "application/octet-stream"}, data)


def stream_exception(kind: str, message: str, error_code: str | None = None) -> bytes:
    """An exception event, e.g. ``ModelStreamError``; botocore raises it as an ``EventStreamError``.

    Args:
        kind: the exception shape: ``ModelStreamError`` or ``InternalStreamFailure``.
        message: the ``Message`` member.
        error_code: the ``ErrorCode`` member (``ModelStreamError`` only), when there is one.
    """
    body: dict[str, str] = {"Message": message}
    if error_code:
        body["ErrorCode"] = error_code
    return event_message({":message-type": "exception", ":exception-type": kind,
                          ":content-type": "application/json"}, json.dumps(body).encode("utf-8"))


# --- routes -------------------------------------------------------------------------------------------


def streaming_body(body: bytes) -> bytes:
    """The request body with ``"stream": true``, for the response-stream API.

    A body that is not a JSON object is returned unchanged, for the container to reject.
    """
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return body
    if not isinstance(payload, dict):
        return body
    payload["stream"] = True
    return json.dumps(payload).encode("utf-8")


def _aws_error(kind: str, status: int, request_id: str, **members: Any) -> Response:
    """A REST-JSON error response; botocore takes the code from ``x-amzn-ErrorType``."""
    return JSONResponse(members, status_code=status,
                        headers={"x-amzn-ErrorType": kind, "x-amzn-RequestId": request_id})


def _model_error(status: int, original: bytes, request_id: str) -> Response:
    """SageMaker's ``ModelError``: the container answered ``status`` with ``original``."""
    text = original.decode("utf-8", "replace")
    side = "client" if status < 500 else "server"
    return _aws_error(
        "ModelError", 424, request_id,
        ErrorCode=f"{side.upper()}_ERROR_FROM_MODEL",
        Message=f'Received {side} error ({status}) from primary with message "{text}".',
        OriginalStatusCode=status, OriginalMessage=text,
    )


def _check_name(name: str, request_id: str) -> Response | None:
    if len(name) <= _MAX_NAME and _ENDPOINT_NAME.fullmatch(name):
        return None
    return _aws_error(
        "ValidationError", 400, request_id,
        Message=f"1 validation error detected: Value '{name}' at 'endpointName' failed to satisfy "
                f"constraint: Member must satisfy regular expression pattern: "
                f"{_ENDPOINT_NAME.pattern} and have length less than or equal to {_MAX_NAME}",
    )


async def _whole_body(response: Response) -> bytes:
    if isinstance(response, StreamingResponse):
        return b"".join([chunk async for chunk in response.body_iterator])
    return bytes(response.body)


def _error_message(line: bytes) -> str | None:
    """The message of an LMI in-stream error line ``{"error", "code"}``; None for any other line."""
    try:
        data = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        return None
    if isinstance(data, dict) and "token" not in data and isinstance(data.get("error"), str):
        return data["error"]
    return None


async def event_stream(body: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
    """Wrap JSON-lines chunks in ``PayloadPart`` events as they arrive; an error line ends the stream."""
    pending = b""
    try:
        async for chunk in body:
            lines = (pending + chunk).split(b"\n")
            pending = lines.pop()  # an unfinished line waits for the rest of it
            parts: list[bytes] = []
            for line in lines:
                message = _error_message(line)
                if message is not None:
                    if parts:
                        yield payload_part(b"".join(parts))
                    yield stream_exception("ModelStreamError", message)
                    return
                parts.append(line + b"\n")
            if parts:
                yield payload_part(b"".join(parts))
        if pending:
            yield payload_part(pending)
    finally:
        close = getattr(body, "aclose", None)
        if close is not None:  # frees the request's batch slot when the client left
            await close()


def runtime_routes(invoke: Invoke) -> list[Route]:
    """The two SageMaker runtime routes over the container's invocation handling.

    Args:
        invoke: answers a request as ``/invocations`` does; with ``force_stream`` true it must
            stream the request (as :func:`streaming_body` rewrites it) and answer JSON lines.

    Returns:
        Routes for ``/endpoints/{name}/invocations`` and ``/endpoints/{name}/invocations-response-stream``.
    """

    async def invocations(request: Request) -> Response:
        request_id = str(uuid.uuid4())
        rejected = _check_name(request.path_params["name"], request_id)
        if rejected is not None:
            return rejected
        answer = await invoke(request, False)
        body = await _whole_body(answer)
        if answer.status_code >= 400:
            return _model_error(answer.status_code, body, request_id)
        headers = {"x-Amzn-Invoked-Production-Variant": VARIANT_NAME, "x-amzn-RequestId": request_id}
        return Response(body, status_code=answer.status_code, headers=headers,
                        media_type=answer.headers.get("content-type"))

    async def invocations_response_stream(request: Request) -> Response:
        request_id = str(uuid.uuid4())
        rejected = _check_name(request.path_params["name"], request_id)
        if rejected is not None:
            return rejected
        answer = await invoke(request, True)
        if answer.status_code >= 400:  # rejected before any line: an error response, not a stream
            return _model_error(answer.status_code, await _whole_body(answer), request_id)
        if not isinstance(answer, StreamingResponse):
            raise TypeError(f"invoke(force_stream=True) answered {type(answer).__name__}, not a stream")
        headers = {"X-Amzn-SageMaker-Content-Type": answer.headers.get("content-type", JSONLINES),
                   "x-Amzn-Invoked-Production-Variant": VARIANT_NAME, "x-amzn-RequestId": request_id}
        return StreamingResponse(event_stream(answer.body_iterator), headers=headers, media_type=EVENT_STREAM)

    return [
        Route("/endpoints/{name}/invocations", invocations, methods=["POST"]),
        Route("/endpoints/{name}/invocations-response-stream", invocations_response_stream, methods=["POST"]),
    ]

