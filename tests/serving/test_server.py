"""The local server: DJL's HTTP contract over the handler, in-process and on a real socket."""
from __future__ import annotations

import asyncio
import json
import threading
import time

import httpx
import pytest
from inf2_deploy.local.server import create_app, main
from inf2_serving.handler import ModelHandler
from starlette.testclient import TestClient


@pytest.fixture(scope="module")
def client(artifact, cpu_handler):
    with TestClient(create_app(artifact, backend=None, handler=cpu_handler, body_limit_bytes=4096)) as test_client:
        yield test_client


def test_ping_and_invocations(client, reference) -> None:
    assert client.get("/ping").json() == {"status": "Healthy"}
    response = client.post("/invocations", json={"inputs": "Hello world", "parameters": {"max_new_tokens": 6}})
    assert response.status_code == 200
    assert response.json() == {"generated_text": reference("Hello world", 6)}


def test_predictions_route_checks_the_model_name(client, artifact, reference) -> None:
    ok = client.post(f"/predictions/{artifact.name}", json={"inputs": "Hi", "parameters": {"max_new_tokens": 3}})
    assert ok.json() == {"generated_text": reference("Hi", 3)}
    missing = client.post("/predictions/other", json={"inputs": "Hi"})
    assert missing.status_code == 404 and artifact.name in missing.json()["error"]


@pytest.mark.parametrize(("body", "needle"), [
    (b"{oops", "not valid JSON"),
    (b'{"parameters": {}}', "inputs"),
    (b'{"inputs": 5}', "inputs"),
    (b'{"inputs": "x", "parameters": {"foo": 1}}', "foo"),
    (b'{"inputs": "x", "parameters": {"max_new_tokens": 0}}', "max_new_tokens"),
    (b'{"inputs": "x", "parameters": {"temperature": -1}}', "temperature"),
    (b'{"inputs": "x", "parameters": {"top_p": 2}}', "top_p"),
    (b'{"inputs": "x", "stream": 1}', "stream"),
    (b'{"inputs": "word word word", "parameters": {"max_new_tokens": 126}}', "n_positions 128"),
    (b'{"inputs": "word word word", "stream": true, "parameters": {"max_new_tokens": 126}}', "n_positions"),
])
def test_bad_requests_get_400_json(client, body: bytes, needle: str) -> None:
    response = client.post("/invocations", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400
    payload = response.json()
    assert payload["code"] == 400 and needle in payload["error"]


def test_body_over_the_limit_gets_413(client) -> None:
    big = json.dumps({"inputs": "x" * 5000}).encode()
    declared = client.post("/invocations", content=big)
    assert declared.status_code == 413 and declared.json()["code"] == 413

    def chunks():  # no content-length: the limit is enforced while reading
        for start in range(0, len(big), 1000):
            yield big[start:start + 1000]

    chunked = client.post("/invocations", content=chunks())
    assert chunked.status_code == 413 and "4096 bytes" in chunked.json()["error"]


def test_ping_is_503_until_ready(artifact, monkeypatch) -> None:
    import inf2_serving.handler as handler_module

    release = threading.Event()
    real_load = handler_module.load_engine
    ready = []

    def slow_load(config):
        release.wait(30)
        return real_load(config)

    monkeypatch.setattr(handler_module, "load_engine", slow_load)
    app = create_app(artifact, backend=None, handler=ModelHandler(), ready_callback=lambda: ready.append(True))
    with TestClient(app) as test_client:
        for _ in range(100):
            loading = test_client.get("/ping")
            if loading.json()["status"] == "LOADING":
                break
            time.sleep(0.02)
        assert loading.status_code == 503 and loading.json()["status"] == "LOADING"
        early = test_client.post("/invocations", json={"inputs": "Hi"})
        assert early.status_code == 503 and "loading" in early.json()["error"]
        release.set()
        for _ in range(300):
            if test_client.get("/ping").status_code == 200:
                break
            time.sleep(0.05)
        assert test_client.get("/ping").status_code == 200 and ready == [True]


def test_failed_load_is_reported_by_ping(tmp_path) -> None:
    (tmp_path / "serving.properties").write_text("engine=Python\noption.dtype=int3\n")
    with TestClient(create_app(tmp_path, backend="cpu")) as test_client:
        for _ in range(100):
            response = test_client.get("/ping")
            if response.json()["status"] == "FAILED":
                break
            time.sleep(0.05)
        assert response.status_code == 503 and "dtype" in response.json()["error"]


def test_missing_serving_properties_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="serving.properties"):
        create_app(tmp_path)


@pytest.mark.slow
def test_real_socket_greedy_equals_generate(live_server, reference) -> None:
    response = httpx.post(f"{live_server}/invocations", json={"inputs": "The capital of France is",
                                                               "parameters": {"max_new_tokens": 12}})
    assert response.json() == {"generated_text": reference("The capital of France is", 12)}


@pytest.mark.slow
def test_concurrent_requests_are_batched(live_server, cpu_handler, reference, monkeypatch) -> None:
    backend = cpu_handler.engine.backend
    rows_seen = []
    original = backend.generate

    def spy(input_ids, *args):
        rows_seen.append(input_ids.shape[0])
        return original(input_ids, *args)

    monkeypatch.setattr(backend, "generate", spy)
    prompts = ["Hello world, my name is", "The capital of France is", "One two three", "Good"]

    async def send_all():
        async with httpx.AsyncClient(base_url=live_server, timeout=30) as http:
            calls = [http.post("/invocations", json={"inputs": p, "parameters": {"max_new_tokens": 8}})
                     for p in prompts]
            return await asyncio.gather(*calls)

    responses = asyncio.run(send_all())
    assert rows_seen == [4]  # batch_size is 4: one batch for the four requests
    assert [r.json()["generated_text"] for r in responses] == [reference(p, 8) for p in prompts]


@pytest.mark.slow
def test_streaming_is_chunked_jsonlines(live_server, reference) -> None:
    body = {"inputs": "Once upon a time", "stream": True, "parameters": {"max_new_tokens": 7}}
    with httpx.stream("POST", f"{live_server}/invocations", json=body) as response:
        assert response.headers["content-type"].startswith("application/jsonlines")
        assert response.headers.get("transfer-encoding") == "chunked"
        lines = [json.loads(line) for line in response.iter_lines() if line]
    assert len(lines) == 7
    assert lines[-1]["generated_text"] == "".join(line["token"]["text"] for line in lines)
    assert lines[-1]["generated_text"] == reference("Once upon a time", 7)


def test_main_rejects_unknown_backend(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["somewhere", "--backend", "tpu"])
    assert info.value.code == 2 and "tpu" in capsys.readouterr().err
