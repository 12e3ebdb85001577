"""The DJL entry point with the djl_python stand-in, fed the way DJL's test_model.py does."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import inf2_serving
import pytest
from inf2_deploy.artifact.djl_properties import handler_properties, read_properties
from inf2_serving.handler import ModelHandler, ReadinessState
from support import standin_packages


@pytest.fixture
def djl(standins, monkeypatch):
    """inf2_serving.djl with a fresh, uninitialized handler."""
    from inf2_serving import djl as module

    monkeypatch.setattr(module, "handler", ModelHandler())
    return module


def _properties(artifact: Path) -> dict:
    return handler_properties(read_properties(artifact / "serving.properties"), artifact)


def _request(payload):
    from djl_python.inputs import Input

    request = Input()
    request.properties["content-type"] = "application/json"
    request.content.add(key="data", value=json.dumps(payload).encode("utf-8"))
    return request


def _batch_request(payloads):
    # Mirrors djl_python.test_model.create_concurrent_batch_request.
    from djl_python.inputs import Input

    request = Input()
    for index, payload in enumerate(payloads):
        request.properties[f"batch_{index:03d}_content-type"] = "application/json"
        request.content.add(f"batch_{index:03d}_data", json.dumps(payload).encode("utf-8"))
    request.properties["batch_size"] = len(payloads)
    return request


def _jsonlines(output, index):
    """A batch item's body as jsonlines, checking it is typed so, the way DJL's handlers type items."""
    assert output.properties[f"batch_{index}_Content-Type"] == "application/jsonlines"
    (body,) = _values(output, f"batch_{index}.")
    return [json.loads(line) for line in bytes(body).decode("utf-8").splitlines()]


def _values(output, key):
    """The contents added under ``key`` (``Output.content`` is DJL's PairList: parallel keys and values)."""
    return [output.content.value_at(i) for i in range(output.content.size()) if output.content.key_at(i) == key]


def _json(output, key=None):
    values = _values(output, key)
    assert len(values) == 1, output.content.get_keys()
    return json.loads(bytes(values[0]))


@pytest.fixture
def ready_djl(djl, artifact, cpu_handler, monkeypatch):
    """The adapter after DJL's empty warm-up call, sharing the session's loaded handler."""
    from djl_python.inputs import Input

    monkeypatch.setattr(djl, "handler", cpu_handler)
    warm_up = Input()
    warm_up.properties.update(_properties(artifact))
    assert djl.handle(warm_up) is None
    return djl


def test_empty_warm_up_call_initializes(djl, artifact) -> None:
    from djl_python.inputs import Input

    warm_up = Input()
    warm_up.properties.update(_properties(artifact))
    assert djl.handle(warm_up) is None
    assert djl.handler.state is ReadinessState.READY
    assert djl.handler.config.batch_size == 4 and djl.handler.config.backend == "cpu"


def test_single_request(ready_djl, reference) -> None:
    output = ready_djl.handle(_request({"inputs": "Hello world", "parameters": {"max_new_tokens": 5}}))
    assert output.code == 200 and output.properties["content-type"] == "application/json"
    assert _json(output) == {"generated_text": reference("Hello world", 5)}


def test_invalid_request_gets_a_400_error(ready_djl) -> None:
    output = ready_djl.handle(_request({"inputs": "Hi", "parameters": {"top_p": 7}}))
    assert output.code == 400
    body = _json(output)
    assert body["code"] == 400 and "top_p" in body["error"]


def test_batches_answer_by_batch_index(ready_djl, reference) -> None:
    payloads = [
        {"inputs": "Hello world", "parameters": {"max_new_tokens": 4}},
        {"inputs": "Hi", "parameters": {"max_new_tokens": -1}},
        {"inputs": ["A", "The capital of France is"], "parameters": {"max_new_tokens": 4}},
        {"inputs": "Streamed", "stream": True},
    ]
    output = ready_djl.handle(_batch_request(payloads))
    assert output.code == 200
    assert _json(output, "batch_0.") == {"generated_text": reference("Hello world", 4)}
    assert _json(output, "batch_1.")["code"] == 400 and "max_new_tokens" in _json(output, "batch_1.")["error"]
    assert [b["generated_text"] for b in _json(output, "batch_2.")] == [
        reference("A", 4), reference("The capital of France is", 4)]
    streamed = _jsonlines(output, 3)
    assert streamed[-1]["generated_text"] == reference("Streamed", 30)


def test_streams_in_a_batch_get_whole_jsonlines_bodies(ready_djl, reference) -> None:
    prompts = ["Once upon a time", "The capital of France is", "Hello world"]
    payloads = [{"inputs": prompts[0], "stream": True, "parameters": {"max_new_tokens": 6, "details": True}},
                {"inputs": prompts[1], "parameters": {"max_new_tokens": 5}},
                {"inputs": prompts[2], "stream": True, "parameters": {"max_new_tokens": 4}},
                {"inputs": "word" * 200, "stream": True}]
    output = ready_djl.handle(_batch_request(payloads))
    assert output.code == 200 and output.stream_content is None
    for index, new_tokens in ((0, 6), (2, 4)):
        lines = _jsonlines(output, index)
        assert len(lines) == new_tokens
        assert all(set(line["token"]) == {"id", "text"} for line in lines)
        assert all("generated_text" not in line for line in lines[:-1])
        assert lines[-1]["generated_text"] == "".join(line["token"]["text"] for line in lines)
        assert lines[-1]["generated_text"] == reference(prompts[index], new_tokens)
    assert _jsonlines(output, 0)[-1]["details"]["generated_tokens"] == 6
    assert _json(output, "batch_1.") == {"generated_text": reference(prompts[1], 5)}
    assert "batch_1_Content-Type" not in output.properties
    assert _json(output, "batch_3.")["code"] == 400 and "n_positions" in _json(output, "batch_3.")["error"]


def test_a_stream_alone_in_a_batch_streams_live(ready_djl, reference) -> None:
    output = ready_djl.handle(_batch_request([{"inputs": "Once upon a time", "stream": True,
                                               "parameters": {"max_new_tokens": 5}}]))
    assert output.properties["content-type"] == "application/jsonlines" and output.content.is_empty()
    lines = [json.loads(line) for line in output.stream_bytes().decode("utf-8").splitlines()]
    assert lines[-1]["generated_text"] == reference("Once upon a time", 5)


def test_streaming_uses_stream_content(ready_djl, reference) -> None:
    output = ready_djl.handle(_request({"inputs": "Once upon a time", "stream": True,
                                        "parameters": {"max_new_tokens": 6}}))
    assert output.properties["content-type"] == "application/jsonlines"
    lines = [json.loads(line) for line in output.stream_bytes().decode("utf-8").splitlines()]
    assert len(lines) == 6
    assert lines[-1]["generated_text"] == "".join(line["token"]["text"] for line in lines)
    assert lines[-1]["generated_text"] == reference("Once upon a time", 6)


@pytest.mark.slow
def test_shipped_model_py_runs_from_an_artifact_root(tmp_path, artifact, reference) -> None:
    """The artifact layout the packager builds: model.py next to inf2_serving/, loaded by path."""
    package = Path(inf2_serving.__file__).parent
    root = tmp_path / "artifact"
    shutil.copytree(package, root / "inf2_serving", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(package / "model.py", root / "model.py")
    shutil.copy(artifact / "serving.properties", root / "serving.properties")
    script = textwrap.dedent(f"""
        import importlib.util, json
        from djl_python.inputs import Input
        spec = importlib.util.spec_from_file_location("model", {str(root / "model.py")!r})
        model = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(model)
        import inf2_serving
        from inf2_deploy.artifact.djl_properties import handler_properties, read_properties
        warm_up = Input()
        warm_up.properties.update(handler_properties(read_properties({str(root / "serving.properties")!r}),
                                                     {str(root)!r}))
        assert model.handle(warm_up) is None
        request = Input()
        request.properties["content-type"] = "application/json"
        request.content.add("data", b'{{"inputs": "Hello world", "parameters": {{"max_new_tokens": 4}}}}')
        output = model.handle(request)
        print(json.dumps({{"package": inf2_serving.__file__, "body": json.loads(bytes(output.content.value_at(0)))}}))
    """)
    env_path = str(standin_packages.ROOT)
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True,
                            env={"PYTHONPATH": env_path, "PATH": "/usr/bin:/bin"}, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["package"].startswith(str(root))
    assert report["body"] == {"generated_text": reference("Hello world", 4)}
