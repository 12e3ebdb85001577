"""The SageMaker runtime API on the local server: a real boto3 client, pointed at it by environment only."""
from __future__ import annotations

import asyncio
import json
from typing import Any

import boto3
import httpx
import pytest
from botocore.eventstream import EventStreamBuffer
from botocore.exceptions import ClientError
from inf2_deploy.local.runtime_api import event_message, event_stream, payload_part, stream_exception

ENDPOINT = "tiny-gptj-local"


@pytest.fixture
def runtime(live_server: str, fake_aws_env: None, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A plain boto3 sagemaker-runtime client with fake credentials; only the env var points it here."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", live_server)
    client = boto3.client("sagemaker-runtime")
    assert client.meta.endpoint_url == live_server  # botocore honours the service-specific variable
    yield client
    client.close()


def _decode(wire: bytes) -> list[tuple[dict[str, Any], bytes]]:
    buffer = EventStreamBuffer()
    buffer.add_data(wire)
    return [(message.headers, message.payload) for message in buffer]


def test_event_messages_decode_with_botocore() -> None:
    wire = payload_part(b'{"token": {"text": "a"}}\n') + stream_exception("ModelStreamError", "boom", "StreamBroken")
    (part_headers, part), (error_headers, error) = _decode(wire)  # botocore checks both CRCs
    assert part_headers == {":message-type": "event", ":event-type": "PayloadPart",
                            ":content-type": "application/octet-stream"}
    assert part == b'{"token": {"text": "a"}}\n'
    assert error_headers[":exception-type"] == "ModelStreamError"
    assert json.loads(error) == {"Message": "boom", "ErrorCode": "StreamBroken"}
    assert _decode(event_message({"k": "vé"}, b""))[0] == ({"k": "vé"}, b"")


def test_lines_split_across_chunks_go_out_whole_and_an_error_line_ends_the_stream() -> None:
    chunks = [b'{"token": 1', b'}\n{"tok', b'en": 2}\n{"token": 3}\n', b'{"error": "boom", "code": 500}\n',
              b'{"token": 4}\n']

    async def body():
        for chunk in chunks:
            yield chunk

    async def collect() -> bytes:
        return b"".join([frame async for frame in event_stream(body())])

    messages = _decode(asyncio.run(collect()))
    assert [payload for _, payload in messages[:2]] == [b'{"token": 1}\n', b'{"token": 2}\n{"token": 3}\n']
    headers, payload = messages[2]
    assert headers[":message-type"] == "exception" and json.loads(payload) == {"Message": "boom"}
    assert len(messages) == 3


def test_invoke_endpoint_answers_as_invocations_does(runtime, live_server, reference) -> None:
    body = {"inputs": "Hello world", "parameters": {"max_new_tokens": 6, "details": True}}
    response = runtime.invoke_endpoint(EndpointName=ENDPOINT, Body=json.dumps(body), ContentType="application/json")
    answer = json.loads(response["Body"].read())
    direct = httpx.post(f"{live_server}/invocations", json=body, timeout=60).json()
    assert answer["generated_text"] == direct["generated_text"] == reference("Hello world", 6)
    assert answer["details"]["generated_tokens"] == 6
    assert response["ContentType"] == "application/json"
    assert response["InvokedProductionVariant"] == "AllTraffic"
    assert response["ResponseMetadata"]["RequestId"]


def test_invoke_endpoint_with_stream_true_gets_the_whole_jsonlines_body(runtime, reference) -> None:
    body = {"inputs": "Hello world", "stream": True, "parameters": {"max_new_tokens": 4}}
    response = runtime.invoke_endpoint(EndpointName=ENDPOINT, Body=json.dumps(body), ContentType="application/json")
    lines = [json.loads(line) for line in response["Body"].read().splitlines()]
    assert response["ContentType"].startswith("application/jsonlines")
    assert len(lines) == 4 and lines[-1]["generated_text"] == reference("Hello world", 4)


def test_response_stream_yields_payload_parts_as_generated(runtime, reference) -> None:
    body = {"inputs": "Once upon a time", "parameters": {"max_new_tokens": 12}}  # no "stream": forced on
    response = runtime.invoke_endpoint_with_response_stream(
        EndpointName=ENDPOINT, Body=json.dumps(body), ContentType="application/json")
    events = list(response["Body"])
    assert response["ContentType"].startswith("application/jsonlines")
    assert response["InvokedProductionVariant"] == "AllTraffic"
    assert all(set(event) == {"PayloadPart"} for event in events)
    assert len(events) > 1  # parts leave as tokens are produced, not as one buffered answer
    lines = [json.loads(line) for line in b"".join(e["PayloadPart"]["Bytes"] for e in events).splitlines()]
    assert len(lines) == 12
    assert "".join(line["token"]["text"] for line in lines) == lines[-1]["generated_text"]
    assert lines[-1]["generated_text"] == reference("Once upon a time", 12)


@pytest.mark.parametrize("operation", ["invoke_endpoint", "invoke_endpoint_with_response_stream"])
def test_a_bad_request_is_a_model_error_carrying_the_400(runtime, operation: str) -> None:
    body = {"inputs": "Hello", "parameters": {"top_p": 2}}
    with pytest.raises(ClientError) as caught:
        getattr(runtime, operation)(EndpointName=ENDPOINT, Body=json.dumps(body), ContentType="application/json")
    error = caught.value.response
    assert error["Error"]["Code"] == "ModelError"
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 424
    assert error["OriginalStatusCode"] == 400
    original = json.loads(error["OriginalMessage"])
    assert original["code"] == 400 and "top_p" in original["error"]
    assert "Received client error (400)" in error["Error"]["Message"]


def test_an_invalid_endpoint_name_is_a_validation_error(runtime) -> None:
    with pytest.raises(ClientError) as caught:
        runtime.invoke_endpoint(EndpointName="not_valid", Body=b'{"inputs": "Hi"}', ContentType="application/json")
    assert caught.value.response["Error"]["Code"] == "ValidationError"
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert "not_valid" in caught.value.response["Error"]["Message"]


def test_a_generation_failing_mid_stream_ends_with_a_model_stream_error(
        runtime, cpu_handler, fail_mid_generation) -> None:
    fail_mid_generation(cpu_handler.engine.backend)  # two real steps reach the client
    response = runtime.invoke_endpoint_with_response_stream(
        EndpointName=ENDPOINT, Body=b'{"inputs": "Hi", "parameters": {"max_new_tokens": 8}}',
        ContentType="application/json")
    received = []
    with pytest.raises(ClientError) as caught:
        for event in response["Body"]:
            received.append(event["PayloadPart"]["Bytes"])
    lines = [json.loads(line) for line in b"".join(received).splitlines()]
    assert len(lines) == 2 and all("token" in line for line in lines)
    assert caught.value.response["Error"] == {"Code": "ModelStreamError", "Message": "generation failed: device lost"}


def test_predictor_matches_local_predictor(runtime, live_server) -> None:
    # The client SDK's own dependencies are not installed in the container-versions venv.
    pytest.importorskip("pydantic")
    from inf2_deploy.client.predictor import LocalPredictor, Predictor

    with Predictor(ENDPOINT, region="us-east-1") as remote, LocalPredictor(live_server) as local:
        assert remote.generate("The capital of France is", max_new_tokens=8) == \
            local.generate("The capital of France is", max_new_tokens=8)
        streamed = list(remote.stream("Hello world", max_new_tokens=10))
        assert streamed == list(local.stream("Hello world", max_new_tokens=10))
        assert len(streamed) == 10
