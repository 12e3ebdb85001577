"""The DJL Python-engine adapter: ``handle(inputs)`` over :class:`ModelHandler`.

DJL calls ``handle`` once with an empty input at start-up; the model is loaded and
compiled then, so ``/ping`` turns healthy only when it is ready. Properties come
from ``inputs.get_properties()`` of that first call (``option.`` already stripped,
``model_dir`` added).

Rolling batch (``option.rolling_batch`` set and not ``disable``, what the packager
writes by default): DJL's Java loop calls ``handle`` once per generation step with
every request in flight as one batch, and :mod:`inf2_serving.djl_rolling` answers it
(:data:`rolling`): new requests join the slot scheduler at the next step, each request
gets one output per call, streams get their new token lines at every step. An input
that is not a batch (DJL's direct ``handler`` calls) is answered as a single request.

``rolling_batch=disable``: with DJL dynamic batching (model-level ``batch_size``) a
request batch arrives as one input split by ``get_batches()``; each answer goes back
with ``batch_index``. In a batch, a client error is that item's JSON body
``{"error", "code": 400}`` since DJL gives the whole batch one status; single
requests get ``Output.error(..., code=400)``. DJL streams one ``Output`` per
``handle()`` call, so only a request that arrives alone (a batch of one, or no
batching) streams its token lines live through ``add_stream_content``. A streaming
request batched with others runs in the shared batch and gets its complete
``application/jsonlines`` body (every token line and the final line) when the batch
ends.
"""
from __future__ import annotations

from typing import Any

from .djl_rolling import DjlRollingBatch, read_request
from .handler import HandlerNotReady, ModelHandler, ReadinessState
from .jsonline import JSONLINES, encode_line
from .schema import GenerationRequest, InvalidRequest, error_body

__all__ = ["handle", "handler", "rolling"]

handler = ModelHandler()
"""The process-wide handler; DJL runs one worker process per model."""
rolling = DjlRollingBatch()
"""The requests of DJL's rolling-batch loop in flight, with the rolling batch on."""


def _single(inputs: Any, output: Any) -> Any:
    try:
        request = read_request(inputs)
        if request.stream:
            lines = handler.stream(request)
            output.add_property("content-type", JSONLINES)
            output.add_stream_content(lines, output_formatter=encode_line)
            return output
        body = handler.generate(request)
    except (InvalidRequest, HandlerNotReady) as exc:
        return output.error(str(exc), code=exc.code)
    output.add_property("content-type", "application/json")
    return output.add_as_json(body)


def _batch(items: list[Any], output: Any) -> Any:
    if len(items) == 1:
        return _single(items[0], output)
    requests: list[GenerationRequest | None] = []
    answers: dict[int, Any] = {}
    for index, item in enumerate(items):
        try:
            requests.append(read_request(item))
        except InvalidRequest as exc:
            answers[index] = error_body(str(exc), exc.code)
            requests.append(None)
    valid = [(i, r) for i, r in enumerate(requests) if r is not None]
    results = handler.generate_many([r for _, r in valid])
    for position, (index, request) in enumerate(valid):
        result = results[position]
        if isinstance(result, InvalidRequest):
            answers[index] = error_body(str(result), result.code)
        elif request.stream:
            # DJL streams one Output per handle() call: a stream in a batch of several
            # gets its whole jsonlines body at once, typed per item as DJL's handlers do.
            answers[index] = b"".join(encode_line(line) for line in result)
            output.add_property(f"batch_{index}_Content-Type", JSONLINES)
        else:
            answers[index] = result
    for index in range(len(items)):
        answer = answers[index]
        if isinstance(answer, bytes):
            output.add(answer, batch_index=index)
        else:
            output.add_as_json(answer, batch_index=index)
    return output


def handle(inputs: Any) -> Any:
    """DJL entry point: initialize on the first call, then answer requests.

    Returns None for DJL's empty warm-up call, else a ``djl_python.outputs.Output``.
    """
    from djl_python.outputs import Output

    if handler.state is not ReadinessState.READY:
        handler.initialize(inputs.get_properties())
    if inputs.is_empty():
        return None
    if inputs.is_batch():
        config = handler.config
        if config is not None and config.rolling:
            return rolling.handle(handler, inputs, Output())
        return _batch(inputs.get_batches(), Output())
    return _single(inputs, Output())
