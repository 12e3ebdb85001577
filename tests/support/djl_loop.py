"""A mirror of DJL's Java rolling-batch loop (djl-serving v0.29.0) over a Python ``handle()``.

What the container does between an HTTP request and our handler, with the rolling batch on:

- ``RollingBatch.java``: ``addInput`` puts a request in the list (at most
  ``max_rolling_batch_size``; more wait until a request leaves), each with a random Java
  ``int`` seed. Each pass of ``run()`` sends every request of the list as one batch:
  properties and content under ``batch_XXX.`` prefixes, a request's data, properties and
  seed only on its first call (empty data afterwards), ``batch_size``, and
  ``reset_rollingbatch`` after a failure. An output whose code is not 200 or whose
  content count is not the list's size fails every request (``Batch inference failed``)
  and clears the list; an ``EngineException`` clears it silently. Otherwise content
  ``i`` goes to request ``i`` (``Request.addResponse``: DJL's binary pair list with
  ``data``, ``last``, ``code``, ``error``; empty data without a code sends nothing) and
  the properties ``batch_{i}_<name>`` become request ``i``'s; requests marked last leave.
- ``PyProcess.predict``: adds the ``handler`` property.
- ``Connection``: the wire format both ways (``RequestEncoder``, ``OutputDecoder``).
- ``djl_python_engine.py``: reads the input, calls the handler function, and turns
  None into 204, an exception into ``Output().error(str(e))`` (424; 507 for memory).

The Java loop runs on its own thread and ``addInput`` blocks callers; here one
:meth:`RollingBatchLoop.step` is one pass of that loop, and a request added while the
list is full waits in :attr:`RollingBatchLoop.waiting` until the loop signals ``canAdd``
(one waiter per signal, as ``Condition.signal``). Not mirrored: metrics, the legacy JSON
responses of LMI 0.23 handlers, and the restart of the Python process that follows an
``EngineException`` in ``PyProcess.predict``.
"""
from __future__ import annotations

import json
import random
import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["EngineException", "JavaInput", "JavaOutput", "Request", "RollingBatchLoop", "decode_output",
           "encode_input", "python_engine"]


class EngineException(RuntimeError):
    """``ai.djl.engine.EngineException``: ``PyProcess.predict`` failed (a timeout, a dead Python process)."""


@dataclass
class JavaInput:
    """``ai.djl.modality.Input``: properties and a pair list of byte contents."""

    properties: dict[str, str] = field(default_factory=dict)
    content: list[tuple[str | None, bytes | None]] = field(default_factory=list)

    def get_data(self) -> bytes | None:
        """``Input.getData()``: the ``data`` entry, else the first, else None."""
        if not self.content:
            return None
        return next((value for key, value in self.content if key == "data"), self.content[0][1])


@dataclass
class JavaOutput:
    """``ai.djl.modality.Output`` as ``Connection.OutputDecoder`` builds it."""

    code: int = 200
    message: str = "OK"
    properties: dict[str, str] = field(default_factory=dict)
    content: list[tuple[str | None, bytes]] = field(default_factory=list)


def _utf8(value: str | None) -> bytes:
    if value is None:
        return struct.pack(">i", -1)
    data = value.encode("utf-8")
    return struct.pack(">i", len(data)) + data


def encode_input(batch: JavaInput) -> bytes:
    """``Connection.RequestEncoder``: what Python's ``Input.read`` decodes."""
    out = bytearray(struct.pack(">h", len(batch.properties)))
    for key, value in batch.properties.items():
        out += _utf8(key) + _utf8(value)
    out += struct.pack(">h", len(batch.content))
    for key, value in batch.content:
        out += _utf8(key) + struct.pack(">i", len(value or b"")) + (value or b"")
    return bytes(out)


class _Buffer:
    """A netty ``ByteBuf`` reader, and a socket for Python's ``recv``/``sendall``."""

    def __init__(self, data: bytes = b"") -> None:
        self.data = bytearray(data)
        self.position = 0

    def recv(self, length: int) -> bytes:
        chunk = bytes(self.data[self.position:self.position + length])
        self.position += len(chunk)
        return chunk

    def sendall(self, data: bytes) -> None:
        self.data += data

    def unpack(self, fmt: str) -> int:
        size = struct.calcsize(fmt)
        if self.position + size > len(self.data):
            raise IndexError("read past the end of the frame")
        return struct.unpack(fmt, self.recv(size))[0]

    def read_bytes(self) -> bytes | None:
        length = self.unpack(">i")
        return None if length < 0 else self.recv(length)

    def read_utf8(self) -> str | None:
        data = self.read_bytes()
        return None if data is None else data.decode("utf-8")


def decode_output(data: bytes) -> JavaOutput:
    """``Connection.OutputDecoder``: a streamed output (content count -1) becomes one chunked content."""
    buf = _Buffer(data)
    output = JavaOutput(buf.unpack(">h"), buf.read_utf8() or "")
    for _ in range(buf.unpack(">h")):
        key = buf.read_utf8()
        output.properties[key or ""] = buf.read_utf8() or ""
    size = buf.unpack(">h")
    if size == -1:
        chunks = b""
        while buf.unpack(">b") == 1:
            chunks += buf.read_bytes() or b""
        output.content.append((None, chunks))
        return output
    for _ in range(size):
        key = buf.read_utf8()
        output.content.append((key, buf.read_bytes() or b""))
    return output


def python_engine(handle: Callable[[Any], Any], data: bytes) -> bytes:
    """``djl_python_engine.py``: one input off the wire, the handler's output back on it."""
    from djl_python.inputs import Input
    from djl_python.outputs import Output

    inputs = Input()
    inputs.read(_Buffer(data))
    assert inputs.get_function_name() == "handle", inputs.get_function_name()
    try:
        outputs = handle(inputs)
        if outputs is None:
            outputs = Output(code=204, message="No content")
        elif not isinstance(outputs, Output):
            outputs = Output().error(f"Invalid output type: {type(outputs)}")
    except Exception as exc:
        if type(exc).__name__ in ("OutOfMemoryError", "MemoryError"):
            outputs = Output(code=507, message=str(exc))
        else:
            outputs = Output().error(str(exc))
    sink = _Buffer()
    outputs.send(sink)
    return bytes(sink.data)


@dataclass(eq=False)
class Request:
    """``RollingBatch.Request``: one client request and what it has received so far."""

    input: JavaInput
    seed: str
    next_token: str | None = None
    last: bool = False
    count: int = 0
    code: int = 200
    message: str = "OK"
    properties: dict[str, str] = field(default_factory=dict)
    chunks: list[bytes] = field(default_factory=list)
    """Each ``appendContent`` of the request's ``ChunkedBytesSupplier``: what the client receives."""
    closed: bool = False
    """The supplier got its last chunk."""

    @property
    def body(self) -> bytes:
        """Everything sent to the client."""
        return b"".join(self.chunks)

    def get_request(self) -> bytes | None:
        return b"" if self.next_token is not None else self.input.get_data()

    def get_properties(self) -> dict[str, str]:
        return {} if self.next_token is not None else self.input.properties

    def get_seed(self) -> str | None:
        return None if self.next_token is not None else self.seed

    def append(self, data: bytes, last: bool) -> None:
        # A check of ours: DJL would append it, but no client reads past the last chunk.
        assert not self.closed, "content appended after the last chunk"
        self.chunks.append(data)
        self.closed = last

    def add_response(self, resp: bytes, properties: dict[str, str] | None) -> None:
        """``Request.addResponse``."""
        if properties is not None:
            self.properties.update(properties)
        self.count += 1
        if resp[:1] == b"{":
            raise NotImplementedError("a legacy JSON response (LMI 0.23 handlers); ours are binary pair lists")
        buf = _Buffer(resp)
        code = error = None
        for _ in range(buf.unpack(">h")):
            key, value = buf.read_utf8(), buf.read_utf8()
            if key is None or value is None:
                raise TypeError("Objects.requireNonNull: a null key or value in the pair list")
            if key == "data":
                self.next_token = value
            elif key == "last":
                self.last = value.lower() == "true"
            elif key == "code":
                code = value
            elif key == "error":
                error = value
        if not self.next_token and code is None:
            return  # non-streaming: no content until generation is finished
        if code is not None:
            self.code = int(code)
            body: dict[str, Any] = {"code": self.code}
            if error is not None:
                body["error"] = error
                self.message = error
            self.append(json.dumps(body).encode("utf-8"), True)
        else:
            self.append((self.next_token or "").encode("utf-8"), self.last)


def _per_request_properties(properties: dict[str, str]) -> dict[int, dict[str, str]]:
    """Remove the ``batch_{i}_<name>`` properties and group them by ``i``, as ``run()`` does."""
    grouped: dict[int, dict[str, str]] = {}
    for key in [key for key in properties if key.startswith("batch_")]:
        value = properties.pop(key)
        pos = key.find("_", 7)
        if pos > 0:
            grouped.setdefault(int(key[6:pos]), {})[key[pos + 1:]] = value
    return grouped


class RollingBatchLoop:
    """DJL's rolling-batch loop over ``handle`` (see the module doc).

    Args:
        handle: the Python entry point, as DJL's Python engine calls it.
        max_rolling_batch_size: ``option.max_rolling_batch_size`` (DJL's default 32).
        seed: seeds the loop's ``RandomUtils``, so the per-request seeds repeat.
    """

    def __init__(self, handle: Callable[[Any], Any], *, max_rolling_batch_size: int = 32, seed: int = 0) -> None:
        self.handle = handle
        self.max_rolling_batch_size = max_rolling_batch_size
        self.list: list[Request] = []
        self.waiting: deque[Request] = deque()
        self.reset_rolling_batch = False
        self.calls = 0
        self._random = random.Random(seed)

    def add_input(self, payload: Any, properties: dict[str, str] | None = None) -> Request:
        """``addInput``: a request with ``payload`` as its JSON body (bytes are sent as they are)."""
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode("utf-8")
        props = {"Content-Type": "application/json", **(properties or {})}
        request = Request(JavaInput(props, [("data", data)]), str(self._random.randint(-2**31, 2**31 - 1)))
        if len(self.list) >= self.max_rolling_batch_size:
            self.waiting.append(request)  # the caller blocks on canAdd
        else:
            self.list.append(request)
        return request

    def predict(self, batch: JavaInput) -> JavaOutput:
        """``PyProcess.predict``: the batch over the wire to the Python engine and back."""
        batch.properties.setdefault("handler", "handle")
        self.calls += 1
        return decode_output(python_engine(self.handle, encode_input(batch)))

    def _batch(self) -> JavaInput:
        batch = JavaInput()
        if self.reset_rolling_batch:
            batch.properties["reset_rollingbatch"] = "true"
            self.reset_rolling_batch = False
        for index, request in enumerate(self.list):
            prefix = f"batch_{index:03d}."  # batch_00i., batch_0ii., batch_iii. (999 at most, as in Java)
            for key, value in request.get_properties().items():
                batch.properties[prefix + key] = value
            batch.content.append((prefix + "data", request.get_request()))
            seed = request.get_seed()
            if seed is not None:
                batch.content.append((prefix + "seed", seed.encode("utf-8")))
        batch.properties["batch_size"] = str(len(self.list))
        return batch

    def _fail_all(self, code: int) -> None:
        error = json.dumps({"code": code, "message": "Batch inference failed"}).encode("utf-8")
        for request in self.list:
            request.last = True
            request.append(error, True)
        self.list.clear()
        self.reset_rolling_batch = True
        self._signal_can_add()

    def _signal_can_add(self) -> None:
        if self.waiting:
            self.list.append(self.waiting.popleft())

    def step(self) -> None:
        """One pass of ``run()``; the list must not be empty (Java waits on ``canRead``)."""
        assert self.list, "nothing to run"
        size = len(self.list)
        try:
            output = self.predict(self._batch())
        except EngineException:
            self.list.clear()
            self.reset_rolling_batch = True
            return
        if output.code != 200 or len(output.content) != size:
            self._fail_all(output.code)
            return
        properties = _per_request_properties(output.properties)
        for index in range(size):
            self.list[index].add_response(output.content[index][1], properties.get(index))
        remaining = [request for request in self.list if not request.last]
        removed = len(remaining) < len(self.list)
        self.list = remaining
        if removed or len(self.list) < self.max_rolling_batch_size:
            self._signal_can_add()

    def run(self, max_steps: int = 1000) -> None:
        """Step until the list is empty (a request still waiting then would time out in Java)."""
        for _ in range(max_steps):
            if not self.list:
                return
            self.step()
        raise AssertionError(f"requests still running after {max_steps} steps")
