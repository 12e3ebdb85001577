"""``handle()`` under DJL's rolling-batch loop: support.djl_loop mirrors RollingBatch.java (v0.29.0) over the
wire, and the djl_python stand-in's test_model.py runs DJL's own ``inference_rolling_batch`` harness.

CPU backend on the sharp tiny GPT-J, two slots. The reference is the same model served by the static
engine (``rolling_batch=disable``), one request at a time.
"""
from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import inf2_serving
import pytest
from inf2_deploy.artifact.djl_properties import handler_properties, read_properties
from inf2_serving.djl_rolling import DjlRollingBatch
from inf2_serving.handler import ModelHandler
from inf2_serving.jsonline import encode_line
from inf2_serving.schema import parse_request
from support.artifacts import write_artifact
from support.djl_loop import EngineException, Request, RollingBatchLoop

PROMPTS = ["Hello there my friend", "The quick brown fox jumps over", "A", "Once upon a time in a land far away"]
JSONLINES = "application/jsonlines"
SAMPLED = {"do_sample": True, "temperature": 0.9, "top_k": 40, "max_new_tokens": 12, "details": True}


def _loaded(folder: Path) -> ModelHandler:
    handler = ModelHandler()
    handler.initialize(handler_properties(read_properties(folder / "serving.properties"), folder))
    return handler


@pytest.fixture(scope="module")
def rolling_handler(tmp_path_factory: pytest.TempPathFactory, sharp_gptj: Path) -> ModelHandler:
    return _loaded(write_artifact(tmp_path_factory.mktemp("artifacts") / "sharp-djl-rolling", sharp_gptj,
                                  backend="cpu", n_positions="128", dtype="fp32", batch_size="2",
                                  rolling_batch="auto"))


@pytest.fixture(scope="module")
def static_handler(tmp_path_factory: pytest.TempPathFactory, sharp_gptj: Path) -> ModelHandler:
    return _loaded(write_artifact(tmp_path_factory.mktemp("artifacts") / "sharp-djl-static", sharp_gptj,
                                  backend="cpu", n_positions="128", dtype="fp32", batch_size="2",
                                  rolling_batch="disable"))


@pytest.fixture
def djl(standins, monkeypatch: pytest.MonkeyPatch, rolling_handler: ModelHandler):
    """inf2_serving.djl over the rolling handler, with an empty rolling-batch list."""
    from inf2_serving import djl as module

    monkeypatch.setattr(module, "handler", rolling_handler)
    monkeypatch.setattr(module, "rolling", DjlRollingBatch())
    yield module
    scheduler = rolling_handler.engine.scheduler
    if scheduler.active or scheduler.waiting:  # a failed test's rows must not run on in the next one
        scheduler.reset()
        rolling_handler.engine.step()


@pytest.fixture
def loop(djl) -> RollingBatchLoop:
    """DJL's loop with max_rolling_batch_size 4 over the handler's two slots."""
    return RollingBatchLoop(djl.handle, max_rolling_batch_size=4)


@pytest.fixture
def expected(static_handler: ModelHandler) -> Callable[[dict[str, Any]], Any]:
    """The static handler's answer to a payload: the response body, or the list of stream lines."""
    def answer(payload: dict[str, Any]) -> Any:
        request = parse_request(payload)
        return list(static_handler.stream(request)) if request.stream else static_handler.generate(request)

    return answer


def _answer(request: Request) -> Any:
    """What the client of ``request`` received, decoded as its content type says."""
    assert request.closed and request.code == 200, (request.code, request.body)
    if request.properties["Content-Type"] == JSONLINES:
        return [json.loads(line) for line in request.body.decode("utf-8").splitlines()]
    assert request.properties["Content-Type"] == "application/json"
    return json.loads(request.body)


def _idle(handler: ModelHandler) -> bool:
    scheduler = handler.engine.scheduler
    return scheduler.active == 0 and scheduler.waiting == 0


def test_greedy_answers_equal_the_static_handlers(loop, expected, rolling_handler) -> None:
    payloads = [
        {"inputs": PROMPTS[0], "stream": True, "parameters": {"max_new_tokens": 9, "details": True}},
        {"inputs": PROMPTS[1], "parameters": {"max_new_tokens": 5}},
        {"inputs": PROMPTS[2], "stream": True, "parameters": {"max_new_tokens": 3, "repetition_penalty": 1.3}},
        {"inputs": PROMPTS[3], "parameters": {"max_new_tokens": 7, "return_full_text": True, "details": True}},
    ]
    requests = [loop.add_input(payload) for payload in payloads]
    loop.run()
    assert [_answer(request) for request in requests] == [expected(payload) for payload in payloads]
    # A stream gets one token line per call once it has a slot: DJL forwards each as it comes.
    assert [len(requests[i].chunks) for i in (0, 2)] == [9, 3]
    assert all(chunk.count(b"\n") == 1 for chunk in requests[0].chunks + requests[2].chunks)
    assert [len(requests[i].chunks) for i in (1, 3)] == [1, 1]  # the whole body, once, at the end
    assert _idle(rolling_handler)


def test_a_request_joining_mid_generation_finishes_before_a_long_one(loop, expected) -> None:
    long = {"inputs": PROMPTS[3], "stream": True, "parameters": {"max_new_tokens": 60}}
    short = {"inputs": PROMPTS[0], "parameters": {"max_new_tokens": 4}}
    long_request = loop.add_input(long)
    for _ in range(3):
        loop.step()
    short_request = loop.add_input(short)
    finished: dict[str, int] = {}
    while loop.list:
        loop.step()
        for name, request in (("long", long_request), ("short", short_request)):
            if request.closed:
                finished.setdefault(name, loop.calls)
    # The short request joins at the next call (4), whose step is its prefill, and its 4 tokens take
    # calls 4-7; the long stream pauses for that one prefill only: 61 calls, 60 lines.
    assert finished == {"short": 7, "long": 61}
    assert len(long_request.chunks) == 60
    assert _answer(short_request) == expected(short) and _answer(long_request) == expected(long)


@pytest.mark.parametrize(("body", "problem"), [
    ({"inputs": "Hi", "parameters": {"top_p": 7}}, "top_p"),
    ({"inputs": "word " * 200}, "n_positions"),
    (b"{not json", "not valid JSON"),
    (b"", "not valid JSON"),
])
def test_a_bad_request_in_the_middle_gets_400_and_the_others_lose_nothing(loop, expected, body,
                                                                          problem) -> None:
    streams = [{"inputs": PROMPTS[i], "stream": True, "parameters": {"max_new_tokens": 6}} for i in (0, 1)]
    later = {"inputs": PROMPTS[2], "parameters": {"max_new_tokens": 5}}
    first = [loop.add_input(payload) for payload in streams]
    loop.step()
    loop.step()
    bad, good = loop.add_input(body), loop.add_input(later)
    loop.step()
    assert bad.closed and bad.last and bad.code == 400 and bad.properties["Content-Type"] == "application/json"
    answer = json.loads(bad.body)
    assert answer["code"] == 400 and problem in answer["error"] and bad.message == answer["error"]
    assert bad not in loop.list and good in loop.list
    loop.run()
    assert [_answer(request) for request in first] == [expected(payload) for payload in streams]
    assert _answer(good) == expected(later)


def _fail_next_call_with_an_error_output(loop: RollingBatchLoop, monkeypatch: pytest.MonkeyPatch) -> None:
    real = loop.handle

    def fails(inputs: Any) -> Any:
        monkeypatch.setattr(loop, "handle", real)
        real(inputs)  # the step ran; the reply is an error (DJL's Python engine turns it into a 424 output)
        raise RuntimeError("output lost")

    monkeypatch.setattr(loop, "handle", fails)


def _lose_the_next_reply(loop: RollingBatchLoop, monkeypatch: pytest.MonkeyPatch) -> None:
    real = loop.predict

    def times_out(batch: Any) -> Any:
        monkeypatch.setattr(loop, "predict", real)
        real(batch)  # the step ran; Java's predict timed out before the reply
        raise EngineException("predict timed out")

    monkeypatch.setattr(loop, "predict", times_out)


@pytest.mark.parametrize("failure", [_fail_next_call_with_an_error_output, _lose_the_next_reply])
def test_reset_rollingbatch_after_a_failed_call_cancels_the_forgotten_rows(
        loop, expected, rolling_handler, monkeypatch: pytest.MonkeyPatch, failure) -> None:
    old = [loop.add_input({"inputs": PROMPTS[i], "stream": i == 0, "parameters": {"max_new_tokens": 30}})
           for i in (0, 1)]
    loop.step()
    failure(loop, monkeypatch)
    loop.step()
    assert loop.list == [] and loop.reset_rolling_batch
    if failure is _fail_next_call_with_an_error_output:  # DJL tells the clients; a lost reply tells nobody
        assert all(request.closed and json.loads(request.chunks[-1]) == {
            "code": 424, "message": "Batch inference failed"} for request in old)
    assert rolling_handler.engine.scheduler.active == 2  # the handler still runs the rows DJL forgot
    seen: list[str | None] = []
    handle = loop.handle

    def recording(inputs: Any) -> Any:
        seen.append(inputs.get_property("reset_rollingbatch"))
        return handle(inputs)

    monkeypatch.setattr(loop, "handle", recording)
    cancelled = rolling_handler.engine.scheduler.stats.cancelled
    fresh = {"inputs": PROMPTS[2], "stream": True, "parameters": {"max_new_tokens": 5}}
    request = loop.add_input(fresh)
    loop.run()
    assert seen == ["true", None, None, None, None]
    assert rolling_handler.engine.scheduler.stats.cancelled == cancelled + 2
    assert _answer(request) == expected(fresh) and _idle(rolling_handler)


def test_a_backend_failure_ends_every_request_with_424(loop, expected, rolling_handler, djl,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    running = [loop.add_input({"inputs": PROMPTS[i], "stream": i == 0, "parameters": {"max_new_tokens": 20}})
               for i in (0, 1)]
    loop.step()
    loop.step()
    joining, bad = loop.add_input({"inputs": PROMPTS[2]}), loop.add_input({"inputs": ""})

    def device_lost(appended: Any) -> Any:
        raise RuntimeError("device lost")

    with monkeypatch.context() as patch:
        patch.setattr(rolling_handler.engine.scheduler.batch, "step", device_lost)
        loop.step()
    for request in running + [joining]:
        assert request.closed and request.code == 424 and request.message == "RuntimeError: device lost"
        assert json.loads(request.chunks[-1]) == {"code": 424, "error": "RuntimeError: device lost"}
    assert len(running[0].chunks) == 3  # its two token lines went out before the error
    assert bad.code == 400 and loop.list == [] and not loop.reset_rolling_batch
    assert djl.rolling.requests == [] and _idle(rolling_handler)
    after = {"inputs": PROMPTS[3], "parameters": {"max_new_tokens": 6}}
    request = loop.add_input(after)
    loop.run()
    assert _answer(request) == expected(after)


def test_list_inputs_and_djl_seeds(loop, expected) -> None:
    greedy = {"inputs": PROMPTS[:3], "parameters": {"max_new_tokens": 5, "details": True}}
    sampled = {"inputs": PROMPTS[2:], "parameters": SAMPLED}
    first, second = loop.add_input(greedy), loop.add_input(sampled)
    loop.run()
    assert _answer(first) == expected(greedy)  # three rows through two slots, answered in order
    # Without a seed of its own, a sampled prompt draws from DJL's seed for the request (a Java int),
    # the list's later prompts from the next ones.
    djl_seed = int(second.seed) % 2**32
    assert [body["details"]["seed"] for body in _answer(second)] == [djl_seed, (djl_seed + 1) % 2**32]


def _sampled_text(djl, payload: dict[str, Any], mates: list[dict[str, Any]]) -> str:
    """``payload``'s text through a new loop whose first seed is fixed, with ``mates`` joining at calls 1 and 3."""
    loop = RollingBatchLoop(djl.handle, max_rolling_batch_size=4, seed=7)
    request = loop.add_input(payload)
    if mates:
        loop.add_input(mates[0])
    for call in range(40):
        if call == 3 and len(mates) > 1:
            loop.add_input(mates[1])
        if not loop.list:
            break
        loop.step()
    return _answer(request)["generated_text"]


@pytest.mark.parametrize("seed", [{"seed": 11}, {}], ids=["request seed", "DJL seed"])
def test_seeded_sampling_gives_the_same_tokens_whatever_the_batch_mates(djl, seed) -> None:
    payload = {"inputs": PROMPTS[1], "parameters": {**SAMPLED, **seed}}
    mates = [{"inputs": PROMPTS[3], "parameters": {**SAMPLED, "seed": 5}},
             {"inputs": PROMPTS[0], "stream": True, "parameters": {"max_new_tokens": 20}}]
    alone = _sampled_text(djl, payload, [])
    assert _sampled_text(djl, payload, mates) == alone
    assert _sampled_text(djl, payload, mates[::-1]) == alone


def test_one_output_per_request_per_call_and_a_body_only_once(loop, monkeypatch: pytest.MonkeyPatch) -> None:
    from djl_python.test_model import decode_encoded_output_binary

    calls: list[tuple[list[tuple[int, bool, bool]], list[str], list[dict[str, str]]]] = []
    handle = loop.handle

    def recording(inputs: Any) -> Any:
        items = [(len(item.get_as_bytes()), item.contains_key("seed"), bool(item.get_properties()))
                 for item in inputs.get_batches()]
        output = handle(inputs)
        calls.append((items, output.content.get_keys(),
                      [decode_encoded_output_binary(value) for value in output.content.get_values()]))
        return output

    monkeypatch.setattr(loop, "handle", recording)
    loop.add_input({"inputs": PROMPTS[0], "stream": True, "parameters": {"max_new_tokens": 4}})
    loop.add_input({"inputs": PROMPTS[1], "parameters": {"max_new_tokens": 2}})
    loop.step()
    loop.add_input({"inputs": PROMPTS[2], "parameters": {"max_new_tokens": 3}})
    loop.run()
    sizes = [len(items) for items, _keys, _outputs in calls]
    # The third request waits a call for a slot; its prefill is the next call's step, and the first
    # request decodes again after it.
    assert sizes == [2, 3, 2, 2, 2]
    for items, keys, outputs in calls:
        assert keys == [f"batch_{i}.data" for i in range(len(items))]
        assert all(set(output) == {"data", "last"} for output in outputs)
    # A request's body, properties and seed come with its first call only.
    firsts = [(0, 0), (0, 1), (1, 2)]
    for call, (items, _keys, _outputs) in enumerate(calls):
        for index, (length, has_seed, has_properties) in enumerate(items):
            first = (call, index) in firsts
            assert (length > 0, has_seed, has_properties) == (first, first, first), (call, index)
    assert [[output["last"] for output in outputs] for _items, _keys, outputs in calls] == [
        ["False", "False"], ["False", "True", "False"], ["False", "False"], ["False", "False"], ["True", "True"]]


def test_a_direct_call_outside_the_loop_is_answered_alone(djl, expected) -> None:
    from djl_python.test_model import create_json_request

    payload = {"inputs": PROMPTS[0], "parameters": {"max_new_tokens": 5}}
    output = djl.handle(create_json_request(payload))
    assert output.code == 200 and json.loads(bytes(output.content.value_at(0))) == expected(payload)


def test_djl_inference_rolling_batch_harness(standins, tmp_path: Path, sharp_gptj: Path, expected,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """DJL's test_model.py harness, from the model folder as a user runs it; the handler initializes itself.

    Its serving.properties has no option.batch_size: the harness merges every serving property, prefix
    stripped, into each call's properties, where it would replace the batch's own batch_size. The handler
    initializes from the first call's properties, so its slots are that batch's size (the container
    initializes from DJL's empty start-up call instead).
    """
    from djl_python.test_model import TestHandler
    from inf2_serving import djl

    folder = write_artifact(tmp_path / "model", sharp_gptj, backend="cpu", n_positions="128", dtype="fp32",
                            rolling_batch="auto")
    shutil.copy(Path(inf2_serving.__file__).parent / "model.py", folder / "model.py")
    monkeypatch.setattr(djl, "handler", ModelHandler())
    monkeypatch.setattr(djl, "rolling", DjlRollingBatch())
    monkeypatch.chdir(tmp_path)  # TestHandler changes into the model folder; this restores the directory
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delitem(sys.modules, "model", raising=False)
    try:
        harness = TestHandler("model.py", str(folder))
        payloads = [{"inputs": PROMPTS[0], "parameters": {"max_new_tokens": 6}},
                    {"inputs": PROMPTS[1], "stream": True, "parameters": {"max_new_tokens": 4}}]
        results = harness.inference_rolling_batch(payloads)
    finally:
        sys.modules.pop("model", None)
    assert djl.handler.config.rolling and djl.handler.config.batch_size == len(payloads)
    assert json.loads(results[0]) == expected(payloads[0])
    assert results[1] == b"".join(encode_line(line) for line in expected(payloads[1])).decode("utf-8")
