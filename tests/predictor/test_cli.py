"""The invoke, chat and serve commands: output, piped chat, exit codes and one-line errors."""
from __future__ import annotations

import io
import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from botocore.response import StreamingBody
from botocore.stub import Stubber
from inf2_deploy.cli import build_parser, main
from inf2_deploy.client.predictor import LocalPredictor


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


def test_invoke_a_sagemaker_endpoint_by_name(stubbed_runtime: Stubber, capsys: pytest.CaptureFixture[str]) -> None:
    raw = json.dumps({"generated_text": " there"}).encode()
    stubbed_runtime.add_response(
        "invoke_endpoint", {"Body": StreamingBody(io.BytesIO(raw), len(raw))},
        {"EndpointName": "gptj-prod", "ContentType": "application/json", "Accept": "application/json",
         "Body": json.dumps({"inputs": "Hi", "parameters": {"max_new_tokens": 7, "temperature": 0.5,
                                                             "do_sample": True, "stop": ["a", "b"]}}).encode()})
    code = main(["invoke", "gptj-prod", "Hi", "--max-new-tokens", "7", "--temperature", "0.5", "--do-sample",
                 "--stop", "a", "b"])
    assert code == 0 and capsys.readouterr().out == " there\n"


def test_invoke_an_unknown_endpoint_is_one_line_exit_2(stubbed_runtime: Stubber,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    stubbed_runtime.add_client_error("invoke_endpoint", service_error_code="ValidationError",
                                     service_message="Endpoint nope of account 123456789012 not found.",
                                     http_status_code=400)
    assert main(["invoke", "nope", "Hi"]) == 2  # a name that names nothing is a usage error
    err = _one_line_error(capsys)
    assert err.startswith("error: name: nope: ") and "not found" in err and "inf2-deploy list" in err


@pytest.mark.parametrize(
    ("argv", "field"),
    [(["invoke", "bad_name!", "Hi"], "name"), (["invoke", "gptj-prod", "Hi", "--top-p", "1.5"], "top_p"),
     (["invoke", "gptj-prod", "Hi", "--max-new-tokens", "0"], "max_new_tokens"),
     (["chat", "gptj-prod", "--seed", "-1"], "seed"), (["invoke", "Hi", "--url", "localhost:8080"], "url"),
     (["invoke", "x", "Hi", "--url", "http://127.0.0.1:9"], "url"),
     (["invoke", "--url", "http://127.0.0.1:9"], "prompt"), (["invoke"], "name")],
)
def test_config_errors_exit_2_before_any_call(stubbed_runtime: Stubber, capsys: pytest.CaptureFixture[str],
                                              argv: list[str], field: str) -> None:
    assert main(argv) == 2  # the stub has no responses: a call would have failed differently
    assert _one_line_error(capsys).startswith(f"error: {field}: ")


def test_invoke_and_chat_share_the_generation_flags() -> None:
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command").choices

    def flags(command: str) -> set[str]:
        group = next(g for g in subparsers[command]._action_groups if g.title == "generation")
        return {option for action in group._group_actions for option in action.option_strings}

    assert flags("invoke") == flags("chat") == {
        "--max-new-tokens", "--temperature", "--top-k", "--top-p", "--do-sample", "--repetition-penalty",
        "--stop", "--seed"}


def test_chat_reports_each_failed_prompt_and_exits_1(unused_port: int, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("first\nsecond\n"))
    assert main(["chat", "--url", f"http://127.0.0.1:{unused_port}"]) == 1
    err = capsys.readouterr().err
    assert err.count("error: cannot reach") == 2


@pytest.mark.slow
def test_chat_with_piped_stdin_streams_each_answer(server_url: str, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    with LocalPredictor(server_url) as predictor:
        expected = [predictor.generate(p, max_new_tokens=5) for p in ("Hello world", "One two three")]
    monkeypatch.setattr("sys.stdin", io.StringIO("Hello world\n\n  \nOne two three\nquit\nnever sent\n"))
    assert main(["chat", "--url", server_url, "--max-new-tokens", "5"]) == 0
    assert capsys.readouterr().out == "".join(text + "\n" for text in expected)


@pytest.mark.slow
def test_invoke_details_prints_the_response_json(server_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["invoke", "--url", server_url, "Hello", "--details", "--max-new-tokens", "3"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert body["details"]["generated_tokens"] == 3 and isinstance(body["generated_text"], str)


def test_serve_without_an_artifact_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", str(tmp_path)]) == 2
    assert "has no serving.properties" in _one_line_error(capsys)


@pytest.mark.slow
def test_serve_runs_the_server_in_the_foreground(tiny_artifact_dir: Path, unused_port: int, tmp_path: Path) -> None:
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "inf2_deploy.cli", "serve", str(tiny_artifact_dir),
                                    "--port", str(unused_port), "--backend", "cpu"],
                                   stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{unused_port}"
    try:
        deadline = time.monotonic() + 120
        while "ready:" not in log.read_text():
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        assert httpx.get(f"{url}/ping").status_code == 200
        with LocalPredictor(url) as predictor:
            assert list(predictor.stream("Hello", max_new_tokens=2))
    finally:
        process.terminate()
        # uvicorn shuts down, then re-raises the SIGTERM it caught, so -15 is a clean stop too.
        assert process.wait(timeout=15) in (0, -15)
