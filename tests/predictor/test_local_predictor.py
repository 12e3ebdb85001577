"""LocalPredictor: over a real local server on tiny GPT-J, and over httpx's mock transport for errors."""
from __future__ import annotations

import json

import httpx
import pytest
from inf2_deploy.client.predictor import LocalPredictor
from inf2_deploy.errors import ConfigError, InvocationError


@pytest.mark.slow
def test_generate_and_stream_agree_with_the_server(server_url: str) -> None:
    with LocalPredictor(server_url) as predictor:
        text = predictor.generate("The capital of France is", max_new_tokens=12)
        tokens = list(predictor.stream("The capital of France is", max_new_tokens=12))
        events = list(predictor.stream_events("The capital of France is", max_new_tokens=12, details=True))
    assert text and len(tokens) == 12
    assert "".join(tokens) == text
    assert [e["token"]["text"] for e in events] == tokens
    assert events[-1]["generated_text"] == text
    assert events[-1]["details"]["generated_tokens"] == 12


@pytest.mark.slow
def test_details_batch_and_stop(server_url: str) -> None:
    with LocalPredictor(server_url + "/") as predictor:
        full = predictor.generate("Hello world", max_new_tokens=4, details=True)
        assert set(full) == {"generated_text", "details"} and full["details"]["finish_reason"] == "length"
        batch = predictor.generate_batch(["Hello world", "One two three"], max_new_tokens=4)
        assert batch[0] == full["generated_text"] and len(batch) == 2
        stop = full["generated_text"][-2:]
        stopped = predictor.generate("Hello world", max_new_tokens=4, stop=[stop])
        assert stopped.endswith(stop) and len(stopped) <= len(full["generated_text"])


@pytest.mark.slow
def test_a_server_side_rejection_is_an_invocation_error_with_status(server_url: str) -> None:
    # The client checks parameters by the server's rules; only the server knows the compiled n_positions.
    with LocalPredictor(server_url) as predictor:
        with pytest.raises(InvocationError) as caught:
            predictor.generate("Hello", max_new_tokens=100_000)
        assert caught.value.status == 400 and "n_positions" in str(caught.value)
        with pytest.raises(InvocationError) as streamed:
            list(predictor.stream("Hello", max_new_tokens=100_000))
        assert streamed.value.status == 400


def test_an_unreachable_server_is_an_invocation_error(unused_port: int) -> None:
    with LocalPredictor(f"http://127.0.0.1:{unused_port}", name="gone") as predictor:
        with pytest.raises(InvocationError, match="cannot reach") as caught:
            predictor.generate("Hello")
    assert "inf2-deploy list" in str(caught.value)


def test_the_url_must_be_http() -> None:
    with pytest.raises(ConfigError) as caught:
        LocalPredictor("127.0.0.1:8080")
    assert caught.value.field == "url"


def _mocked(handler) -> LocalPredictor:  # noqa: ANN001 - an httpx request handler
    return LocalPredictor("http://model.test", name="mock", client=httpx.Client(transport=httpx.MockTransport(handler)))


def test_http_errors_use_the_lmi_error_body() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503, json={"error": "the model is loading; retry when /ping returns 200",
                                         "code": 503})

    with pytest.raises(InvocationError) as caught:
        _mocked(handler).generate("Hello")
    assert caught.value.status == 503
    assert caught.value.message == "mock: the model is loading; retry when /ping returns 200"


def test_http_errors_without_json_keep_the_text() -> None:
    with pytest.raises(InvocationError) as caught:
        _mocked(lambda request: httpx.Response(502, text="Bad gateway from proxy")).generate("Hello")
    assert caught.value.status == 502 and "Bad gateway from proxy" in str(caught.value)


def test_the_request_follows_the_lmi_schema() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        body = json.loads(request.content)
        if body.get("stream"):
            lines = [{"token": {"id": 1, "text": "a"}}, {"token": {"id": 2, "text": "b"}, "generated_text": "ab"}]
            wire = "".join(json.dumps(line) + "\n" for line in lines).encode()
            # One byte per chunk: the lines reach the decoder cut everywhere.
            return httpx.Response(200, content=iter([wire[i:i + 1] for i in range(len(wire))]),
                                  headers={"Content-Type": "application/jsonlines"})
        return httpx.Response(200, json={"generated_text": "ab"})

    predictor = _mocked(handler)
    assert predictor.generate("Hi", seed=3) == "ab"
    assert list(predictor.stream("Hi")) == ["a", "b"]
    assert [r.url.path for r in seen] == ["/invocations", "/invocations"]
    assert json.loads(seen[0].content) == {"inputs": "Hi", "parameters": {"seed": 3}}
    assert json.loads(seen[1].content) == {"inputs": "Hi", "parameters": {}, "stream": True}
    assert seen[1].headers["accept"] == "application/jsonlines"


def test_an_error_line_in_band_stops_the_stream() -> None:
    wire = b'{"token": {"id": 1, "text": "a"}}\n{"error": "generation failed: boom", "code": 500}\n'
    stream = _mocked(lambda request: httpx.Response(200, content=wire)).stream("Hi")
    assert next(stream) == "a"
    with pytest.raises(InvocationError, match="boom") as caught:
        next(stream)
    assert caught.value.status == 500


def test_an_answer_without_generated_text_is_an_invocation_error() -> None:
    with pytest.raises(InvocationError, match="generated_text"):
        _mocked(lambda request: httpx.Response(200, json={"text": "x"})).generate("Hi")
