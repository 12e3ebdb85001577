"""Raw invocation: ``Predictor.invoke`` and ``inf2-deploy invoke --body`` send a file's bytes as InvokeEndpoint
does (Stubber, moto's runtime, an httpx mock transport and the real local server)."""
from __future__ import annotations

import io
import json
import urllib.request
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from botocore.response import StreamingBody
from botocore.stub import Stubber
from inf2_deploy.cli import main
from inf2_deploy.client.invocation import MAX_BODY_BYTES, InvokeResponse
from inf2_deploy.client.predictor import LocalPredictor, Predictor
from inf2_deploy.errors import ConfigError, InvocationError
from support.aws import REGION

CSV = b"a,b\n1,2\n"


def _answer(body: bytes, **fields: str) -> dict[str, Any]:
    return {"Body": StreamingBody(io.BytesIO(body), len(body)), **fields}


def test_invoke_sends_every_field_and_returns_the_raw_answer(runtime: Any) -> None:
    with Stubber(runtime) as stub:
        stub.add_response(
            "invoke_endpoint",
            _answer(b"\x00\x01binary", ContentType="application/octet-stream", CustomAttributes="trace=7",
                    InvokedProductionVariant="Blue"),
            {"EndpointName": "gptj-prod", "Body": CSV, "ContentType": "text/csv", "Accept": "text/plain",
             "CustomAttributes": "trace=7", "TargetVariant": "Blue"})
        answer = Predictor("gptj-prod", client=runtime).invoke(
            CSV, content_type="text/csv", accept="text/plain", custom_attributes="trace=7", target_variant="Blue")
        stub.assert_no_pending_responses()
    assert answer == InvokeResponse(b"\x00\x01binary", "application/octet-stream", "trace=7", "Blue")


def test_invoke_sends_only_the_fields_given(runtime: Any) -> None:
    with Stubber(runtime) as stub:
        stub.add_response("invoke_endpoint", _answer(b"{}"),
                          {"EndpointName": "gptj-prod", "Body": b"{}", "ContentType": "application/json"})
        assert Predictor("gptj-prod", client=runtime).invoke(b"{}").body == b"{}"


def test_every_bad_field_is_named_before_any_call(runtime: Any) -> None:
    with Stubber(runtime) as stub, pytest.raises(ConfigError) as caught:  # no responses: a call would fail
        Predictor("gptj-prod", client=runtime).invoke(
            b"x" * (MAX_BODY_BYTES + 1), content_type="t\u00e9xt/csv", accept="a\nb", custom_attributes="c" * 1025,
            target_variant="bad_variant")
        stub.assert_no_pending_responses()
    fields = [field for field, _ in caught.value.problems]
    assert fields == ["body", "content_type", "accept", "custom_attributes", "target_variant"]
    assert f"InvokeEndpoint takes at most {MAX_BODY_BYTES}" in caught.value.problems[0][1]
    assert len(str(caught.value).splitlines()) == 5


def test_a_model_error_from_a_raw_invoke_is_an_invocation_error(runtime: Any) -> None:
    with Stubber(runtime) as stub:
        stub.add_client_error("invoke_endpoint", service_error_code="ModelError", http_status_code=424,
                              service_message="Received client error (415) from primary",
                              modeled_fields={"OriginalStatusCode": 415, "OriginalMessage": "unsupported media type"})
        with pytest.raises(InvocationError) as caught:
            Predictor("gptj-prod", client=runtime).invoke(CSV, content_type="text/csv")
    assert caught.value.status == 415 and "unsupported media type" in str(caught.value)


def test_cli_body_prints_the_answer_bytes_unchanged(stubbed_runtime: Stubber, tmp_path: Path,
                                                    capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    body = tmp_path / "request.csv"
    body.write_bytes(CSV)
    stubbed_runtime.add_response(
        "invoke_endpoint", _answer(b"label,score\ncat,0.9", ContentType="text/csv"),
        {"EndpointName": "gptj-prod", "Body": CSV, "ContentType": "text/csv", "CustomAttributes": "k=v",
         "TargetVariant": "Blue"})
    assert main(["invoke", "gptj-prod", "--body", str(body), "--content-type", "text/csv",
                 "--custom-attributes", "k=v", "--target-variant", "Blue"]) == 0
    assert capsysbinary.readouterr().out == b"label,score\ncat,0.9"


def test_cli_body_from_stdin_defaults_to_json(stubbed_runtime: Stubber, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    request = b'{"inputs": "Hi"}'
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(request)))
    stubbed_runtime.add_response("invoke_endpoint", _answer(b'{"generated_text": "!"}'),
                                 {"EndpointName": "gptj-prod", "Body": request, "ContentType": "application/json"})
    assert main(["invoke", "gptj-prod", "--body", "-"]) == 0
    assert json.loads(capsys.readouterr().out) == {"generated_text": "!"}


@pytest.mark.parametrize(("argv", "field", "fragment"), [
    (["invoke", "gptj-prod", "Hi", "--body", "REQUEST"], "body", "drop PROMPT"),
    (["invoke", "gptj-prod", "--body", "REQUEST", "--stream", "--max-new-tokens", "3"], "body",
     "drop --stream, the generation flags"),
    (["invoke", "gptj-prod", "Hi", "--content-type", "text/csv"], "content_type", "--body requests only"),
    (["invoke", "gptj-prod", "--body", "MISSING"], "body", "cannot read"),
    (["invoke", "gptj-prod", "--body", "REQUEST", "--target-variant", "no_underscores"], "target_variant",
     "letters, digits or hyphens"),
])
def test_cli_raw_usage_errors_exit_2_before_any_call(stubbed_runtime: Stubber, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str], argv: list[str],
                                                     field: str, fragment: str) -> None:
    (tmp_path / "request.json").write_text("{}")
    paths = {"REQUEST": str(tmp_path / "request.json"), "MISSING": str(tmp_path / "missing.json")}
    assert main([paths.get(item, item) for item in argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {field}: ") and fragment in err and err.count("\n") == 1, err


def test_cli_raw_invoke_against_moto(moto_server: str, tmp_path: Path,
                                     capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    results = {"region": REGION, "results": [{"Body": "cat,0.9", "ContentType": "text/csv",
                                              "InvokedProductionVariant": "AllTraffic", "CustomAttributes": "k=v"}]}
    request = urllib.request.Request(f"{moto_server}/moto-api/static/sagemaker/endpoint-results",
                                     data=json.dumps(results).encode(), method="POST")
    urllib.request.urlopen(request, timeout=30).close()
    body = tmp_path / "request.csv"
    body.write_bytes(CSV)
    assert main(["invoke", "gptj-prod", "--region", REGION, "--body", str(body), "--content-type", "text/csv"]) == 0
    assert capsysbinary.readouterr().out == b"cat,0.9"
    # the same request again gets the same answer, with its headers, through the library
    answer = Predictor("gptj-prod", session=boto3.Session(region_name=REGION)).invoke(CSV, content_type="text/csv")
    assert answer == InvokeResponse(b"cat,0.9", "text/csv", "k=v", "AllTraffic")


def test_local_invoke_posts_the_bytes_with_their_headers() -> None:
    seen: list[httpx.Request] = []

    def server(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=b"raw answer", headers={"Content-Type": "text/plain",
                                                                    "X-Amzn-SageMaker-Custom-Attributes": "echo"})

    with LocalPredictor("http://local.test", client=httpx.Client(transport=httpx.MockTransport(server))) as predictor:
        answer = predictor.invoke(CSV, content_type="text/csv", accept="text/plain", custom_attributes="k=v")
    (request,) = seen
    assert (request.method, str(request.url), request.content) == ("POST", "http://local.test/invocations", CSV)
    assert (request.headers["content-type"], request.headers["accept"]) == ("text/csv", "text/plain")
    assert request.headers["x-amzn-sagemaker-custom-attributes"] == "k=v"
    assert answer == InvokeResponse(b"raw answer", "text/plain", "echo")


def test_local_invoke_refuses_a_target_variant() -> None:
    def server(request: httpx.Request) -> httpx.Response:
        raise AssertionError("nothing may be sent")

    with LocalPredictor("http://local.test", client=httpx.Client(transport=httpx.MockTransport(server))) as predictor:
        with pytest.raises(ConfigError) as caught:
            predictor.invoke(b"{}", target_variant="Blue")
    assert caught.value.field == "target_variant"


@pytest.mark.slow
def test_cli_raw_invoke_against_the_local_server(server_url: str, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    body = tmp_path / "request.json"
    body.write_text(json.dumps({"inputs": "Hello", "parameters": {"max_new_tokens": 2, "details": True}}))
    assert main(["invoke", "--url", server_url, "--body", str(body), "--content-type", "application/json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["details"]["generated_tokens"] == 2 and isinstance(answer["generated_text"], str)

    body.write_text('{"inputs": ""}')  # the server's own 400, as InvokeEndpoint would pass it on
    assert main(["invoke", "--url", server_url, "--body", str(body)]) == 1
    assert "error: " in capsys.readouterr().err
    with LocalPredictor(server_url) as predictor, pytest.raises(InvocationError) as caught:
        predictor.invoke(b"not json")
    assert caught.value.status == 400
