"""SageMaker event streams for the Predictor tests: real wire bytes (application/vnd.amazon.eventstream)
served to a botocore client.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

# The server's own encoder, so the client tests and the local runtime API share one wire format.
from inf2_deploy.local.runtime_api import event_message, payload_part, stream_exception

__all__ = ["event_message", "payload_part", "serve_event_stream", "stream_exception"]


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
