"""Predictor against the SageMaker runtime API: botocore Stubber and real event-stream wire bytes."""
from __future__ import annotations

import io
import json
from typing import Any

import boto3
import pytest
from botocore.response import StreamingBody
from botocore.stub import Stubber
from inf2_deploy.client.invocation import GENERATION_PARAMETERS, check_parameters
from inf2_deploy.client.predictor import Predictor
from inf2_deploy.errors import ConfigError, CredentialsError, EndpointNotFoundError, InvocationError
from sagemaker_eventstream import payload_part, serve_event_stream, stream_exception


def _body(data: Any) -> StreamingBody:
    raw = json.dumps(data).encode()
    return StreamingBody(io.BytesIO(raw), len(raw))


def _expected(payload: dict[str, Any], accept: str = "application/json") -> dict[str, Any]:
    return {"EndpointName": "gptj-prod", "Body": json.dumps(payload).encode(), "ContentType": "application/json",
            "Accept": accept}


def test_generate_sends_the_lmi_request_and_returns_the_text(runtime: Any) -> None:
    with Stubber(runtime) as stub:
        stub.add_response(
            "invoke_endpoint", {"Body": _body({"generated_text": " world"}), "ContentType": "application/json"},
            _expected({"inputs": "Hello", "parameters": {"max_new_tokens": 5, "stop": ["\n"]}}))
        text = Predictor("gptj-prod", client=runtime).generate("Hello", max_new_tokens=5, stop="\n")
        stub.assert_no_pending_responses()
    assert text == " world"


def test_generate_with_details_returns_the_whole_response(runtime: Any) -> None:
    answer = {"generated_text": " world", "details": {"finish_reason": "length", "generated_tokens": 1}}
    with Stubber(runtime) as stub:
        stub.add_response("invoke_endpoint", {"Body": _body([answer])},
                          _expected({"inputs": "Hello", "parameters": {"details": True}}))
        assert Predictor("gptj-prod", client=runtime).generate("Hello", details=True) == answer


def test_generate_batch_sends_a_list_and_keeps_the_order(runtime: Any) -> None:
    with Stubber(runtime) as stub:
        stub.add_response("invoke_endpoint", {"Body": _body([{"generated_text": "1"}, {"generated_text": "2"}])},
                          _expected({"inputs": ["a", "b"], "parameters": {}}))
        assert Predictor("gptj-prod", client=runtime).generate_batch(["a", "b"]) == ["1", "2"]


def test_generate_batch_with_a_wrong_count_is_an_invocation_error(runtime: Any) -> None:
    with Stubber(runtime) as stub:
        stub.add_response("invoke_endpoint", {"Body": _body([{"generated_text": "1"}])}, None)
        with pytest.raises(InvocationError, match="2 prompts"):
            Predictor("gptj-prod", client=runtime).generate_batch(["a", "b"])


def test_model_error_carries_the_container_status_and_message(runtime: Any) -> None:
    original = json.dumps({"error": "parameters.top_p must be a number in (0, 1], got 2", "code": 400})
    with Stubber(runtime) as stub:
        stub.add_client_error(
            "invoke_endpoint", service_error_code="ModelError", http_status_code=424,
            service_message=f"Received client error (400) from primary with message \"{original}\"",
            modeled_fields={"OriginalStatusCode": 400, "OriginalMessage": original,
                            "LogStreamArn": "arn:aws:logs:us-east-1:123456789012:log-group:x"},
            response_meta={"RequestId": "req-42"})
        with pytest.raises(InvocationError) as caught:
            Predictor("gptj-prod", client=runtime).generate("Hello")
    error = caught.value
    assert error.status == 400
    assert error.message == "gptj-prod: parameters.top_p must be a number in (0, 1], got 2"
    assert error.request_id == "req-42"


def test_validation_error_for_a_missing_endpoint(runtime: Any) -> None:
    with Stubber(runtime) as stub:
        stub.add_client_error("invoke_endpoint", service_error_code="ValidationError", http_status_code=400,
                              service_message="Endpoint gptj-prod of account 123456789012 not found.")
        with pytest.raises(EndpointNotFoundError) as caught:
            Predictor("gptj-prod", client=runtime).generate("Hello")
    assert caught.value.field == "name" and caught.value.value == "gptj-prod" and caught.value.exit_code == 2
    assert "not found" in str(caught.value) and "inf2-deploy list" in str(caught.value)


def test_typos_and_bad_values_fail_before_any_call(runtime: Any) -> None:
    predictor = Predictor("gptj-prod", client=runtime)
    with Stubber(runtime):  # no responses queued: any call would fail the stub
        with pytest.raises(ConfigError) as caught:
            predictor.generate("Hello", max_new_token=5)
        assert caught.value.field == "max_new_token" and "max_new_tokens" in str(caught.value)
        with pytest.raises(ConfigError, match="top_p"):
            predictor.stream("Hello", top_p=1.5)
        with pytest.raises(ConfigError, match="prompt"):
            predictor.generate("   ")
        with pytest.raises(ConfigError, match="do_sample"):
            predictor.generate_batch(["a"], do_sample="yes")


@pytest.mark.parametrize(
    ("parameters", "sent"),
    [
        ({"max_new_tokens": 3, "temperature": None}, {"max_new_tokens": 3}),
        ({"stop": ("a", "b"), "seed": 0}, {"stop": ["a", "b"], "seed": 0}),
        ({"top_k": 0, "top_p": 1, "do_sample": True, "repetition_penalty": 1.2},
         {"top_k": 0, "top_p": 1, "do_sample": True, "repetition_penalty": 1.2}),
    ],
)
def test_check_parameters_accepts_tgi_values(parameters: dict, sent: dict) -> None:
    assert check_parameters(parameters) == sent


@pytest.mark.parametrize("name", ["max_new_tokens", "top_k", "seed"])
def test_check_parameters_rejects_booleans_as_numbers(name: str) -> None:
    with pytest.raises(ConfigError, match=name):
        check_parameters({name: True})


def test_the_tgi_parameter_list() -> None:
    assert set(GENERATION_PARAMETERS) == {"max_new_tokens", "temperature", "top_k", "top_p", "do_sample",
                                          "repetition_penalty", "stop", "seed", "return_full_text", "details"}


def test_invalid_endpoint_name_fails_before_a_client_is_made() -> None:
    with pytest.raises(ConfigError) as caught:
        Predictor("not_valid!")
    assert caught.value.field == "endpoint_name"


LINES = [{"token": {"id": 1, "text": " caf\u00e9"}}, {"token": {"id": 2, "text": " \U0001f642"}},
         {"token": {"id": 3, "text": "!"}, "generated_text": " caf\u00e9 \U0001f642!"}]


def _parts(lines: list[dict], sizes: list[int]) -> list[bytes]:
    """The JSON lines cut into PayloadParts of the given sizes (the last part takes the rest)."""
    wire = "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines).encode()
    parts, start = [], 0
    for size in sizes:
        parts.append(wire[start:start + size])
        start += size
    return [payload_part(part) for part in parts + [wire[start:]] if part]


@pytest.mark.parametrize("sizes", [[], [1, 1, 1], [14, 3], [9, 13, 1, 2, 50], [30, 30, 1]])
def test_stream_parses_lines_split_anywhere_across_parts(runtime: Any, sizes: list[int]) -> None:
    # Cuts at 14 and 9+13+1 land inside "é" and "🙂"; [30, 30, 1] packs several lines in a part.
    sent = serve_event_stream(runtime, _parts(LINES, sizes))
    predictor = Predictor("gptj-prod", client=runtime)
    assert list(predictor.stream("Hi", max_new_tokens=3)) == [" caf\u00e9", " \U0001f642", "!"]
    request = sent[0]
    assert request.url.endswith("/endpoints/gptj-prod/invocations-response-stream")
    assert request.headers["X-Amzn-SageMaker-Accept"] == b"application/jsonlines"
    assert json.loads(request.body) == {"inputs": "Hi", "parameters": {"max_new_tokens": 3}, "stream": True}


def test_stream_events_yields_every_line_including_the_final_text(runtime: Any) -> None:
    serve_event_stream(runtime, _parts(LINES, [5, 5, 5]))
    events = list(Predictor("gptj-prod", client=runtime).stream_events("Hi"))
    assert events == LINES and events[-1]["generated_text"] == " caf\u00e9 \U0001f642!"


def test_stopping_a_stream_early_closes_the_connection(runtime: Any) -> None:
    sent = serve_event_stream(runtime, _parts(LINES, [5]))
    stream = Predictor("gptj-prod", client=runtime).stream("Hi")
    assert next(stream) == " caf\u00e9"
    raw = sent[1]
    assert not raw.closed
    stream.close()
    assert raw.closed


@pytest.mark.parametrize("kind", ["ModelStreamError", "InternalStreamFailure"])
def test_an_error_inside_the_stream_is_an_invocation_error(runtime: Any, kind: str) -> None:
    serve_event_stream(runtime, _parts(LINES[:1], [4]) + [stream_exception(kind, "worker died", "Unknown")])
    stream = Predictor("gptj-prod", client=runtime).stream("Hi")
    assert next(stream) == " caf\u00e9"
    with pytest.raises(InvocationError) as caught:
        next(stream)
    assert kind in str(caught.value) and "worker died" in str(caught.value)
    assert caught.value.status and caught.value.status >= 500


def test_an_error_line_from_the_model_is_an_invocation_error(runtime: Any) -> None:
    error_line = {"error": "generation failed: out of memory", "code": 500}
    serve_event_stream(runtime, _parts(LINES[:1] + [error_line], [3]))
    with pytest.raises(InvocationError) as caught:
        list(Predictor("gptj-prod", client=runtime).stream("Hi"))
    assert caught.value.status == 500 and "out of memory" in str(caught.value)


def test_the_client_honours_aws_endpoint_url(fake_aws_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    from inf2_deploy.client.predictor import runtime_client

    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:5999")
    client = runtime_client()
    assert client.meta.endpoint_url == "http://127.0.0.1:5999"
    assert client.meta.config.retries["mode"] == "adaptive"


def test_a_boto3_session_without_a_region_is_a_credentials_error(fake_aws_env: None,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    monkeypatch.delenv("AWS_REGION", raising=False)  # fake_aws_env sets only AWS_DEFAULT_REGION
    with pytest.raises(CredentialsError, match="region"):
        Predictor("gptj-prod", session=boto3.Session())
    assert Predictor("gptj-prod", region="eu-west-1", session=boto3.Session())._client.meta.region_name == \
        "eu-west-1"


def test_missing_credentials_is_a_credentials_error(fake_aws_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(CredentialsError):
        Predictor("gptj-prod")
