"""The AWS event-stream wire format (application/vnd.amazon.eventstream), for SageMaker stream tests.

Each message: total length, headers length, prelude CRC32, headers, payload, message CRC32.
"""
from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Iterator
from typing import Any


def _header(name: str, value: str) -> bytes:
    raw_name, raw_value = name.encode(), value.encode()
    return struct.pack("B", len(raw_name)) + raw_name + b"\x07" + struct.pack(">H", len(raw_value)) + raw_value


def event_message(headers: dict[str, str], payload: bytes) -> bytes:
    """One encoded event-stream message."""
    encoded = b"".join(_header(k, v) for k, v in headers.items())
    prelude = struct.pack(">II", 12 + len(encoded) + len(payload) + 4, len(encoded))
    message = prelude + struct.pack(">I", zlib.crc32(prelude)) + encoded + payload
    return message + struct.pack(">I", zlib.crc32(message))


def payload_part(data: bytes) -> bytes:
    return event_message({":message-type": "event", ":event-type": "PayloadPart",
                          ":content-type": "application/octet-stream"}, data)


def stream_exception(kind: str, message: str, error_code: str | None = None) -> bytes:
    body: dict[str, str] = {"Message": message}
    if error_code:
        body["ErrorCode"] = error_code
    return event_message({":message-type": "exception", ":exception-type": kind,
                          ":content-type": "application/json"}, json.dumps(body).encode())


class _RawStream:
    """What botocore reads an event stream from (urllib3's response has the same stream())."""

    def __init__(self, wire: bytes, read_size: int) -> None:
        self._wire = wire
        self._read_size = read_size
        self.closed = False

    def stream(self, amt: int | None = None, decode_content: bool | None = None) -> Iterator[bytes]:
        for start in range(0, len(self._wire), self._read_size):
            yield self._wire[start:start + self._read_size]

    def close(self) -> None:
        self.closed = True


def serve_event_stream(client: Any, messages: list[bytes], *, read_size: int = 7) -> list[bytes]:
    """Answer the client's next InvokeEndpointWithResponseStream calls with ``messages`` on the wire.

    Botocore's Stubber validates an event-stream ``Body`` as a plain dict, so a stubbed
    stream cannot be expressed with it; this serves real wire bytes through the
    ``before-send`` hook instead, and botocore's own parser builds the EventStream.
    The wire is read in ``read_size`` chunks, so messages are also split across reads.

    Returns:
        A list that receives each request sent (botocore's ``AWSPreparedRequest``) and,
        after it, the raw stream it was answered with.
    """
    from botocore.awsrequest import AWSResponse

    sent: list[Any] = []

    def respond(request: Any, **_kwargs: Any) -> AWSResponse:
        sent.append(request)
        headers = {"Content-Type": "application/vnd.amazon.eventstream",
                   "X-Amzn-SageMaker-Content-Type": "application/jsonlines",
                   "x-amzn-RequestId": "req-stream-1"}
        raw = _RawStream(b"".join(messages), read_size)
        sent.append(raw)
        return AWSResponse(request.url, 200, headers, raw)

    client.meta.events.register("before-send.sagemaker-runtime.InvokeEndpointWithResponseStream", respond)
    return sent
