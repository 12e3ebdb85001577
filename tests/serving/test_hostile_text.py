"""Text no tokenizer can encode (lone UTF-16 surrogates, invalid UTF-8) is a 400 naming the field on every route."""
from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from botocore.exceptions import ClientError
from inf2_serving.schema import InvalidRequest, lone_surrogate_at, parse_body

# (raw body, the field the error must name); each reached the tokenizer and came back as a 500 before.
HOSTILE = [
    (b'{"inputs": "\\ud800"}', "inputs"),
    (b'{"inputs": "caf\xed\xa0\x80"}', "inputs"),  # the UTF-8 bytes of U+D800, which json decodes with surrogatepass
    (b'{"inputs": ["fine", "x\\udc00y"]}', "inputs[1]"),
    (b'{"inputs": "fine", "parameters": {"stop": ["ok", "\\ud83d"]}}', "parameters.stop[1]"),
    (b'{"inputs": "fine", "parameters": {"stop": "\\udfff"}}', "parameters.stop[0]"),
]
STREAMED = [(body.replace(b'{"inputs": "', b'{"stream": true, "inputs": "', 1), field)
            for body, field in HOSTILE if b"[" not in body[:14]]


def test_lone_surrogates_are_found_where_they_are() -> None:
    assert lone_surrogate_at("fine, \U0001F600 and é") is None  # a real pair is not lone
    assert lone_surrogate_at("ab\ud800") == 2 and lone_surrogate_at("\udc00") == 0


@pytest.mark.parametrize(("body", "field"), HOSTILE + STREAMED)
def test_the_parser_names_the_field(body: bytes, field: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_body(body)
    assert info.value.field == field and info.value.code == 400
    assert field in str(info.value) and "surrogate" in str(info.value)


def test_invalid_utf8_says_so() -> None:
    with pytest.raises(InvalidRequest, match="not valid UTF-8"):
        parse_body(b'{"inputs": "a\xff"}')


@pytest.mark.parametrize("route", ["/invocations", "/predictions/{name}"])
@pytest.mark.parametrize(("body", "field"), HOSTILE + STREAMED)
def test_http_routes_answer_400(live_server: str, artifact, route: str, body: bytes, field: str) -> None:
    response = httpx.post(live_server + route.format(name=artifact.name), content=body,
                          headers={"content-type": "application/json"}, timeout=30)
    assert response.status_code == 400, response.text
    assert response.json()["code"] == 400 and field in response.json()["error"]


@pytest.fixture
def runtime(live_server: str, fake_aws_env: None, monkeypatch: pytest.MonkeyPatch) -> Any:
    import boto3

    monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", live_server)
    client = boto3.client("sagemaker-runtime")
    yield client
    client.close()


@pytest.mark.parametrize("operation", ["invoke_endpoint", "invoke_endpoint_with_response_stream"])
@pytest.mark.parametrize(("body", "field"), HOSTILE)
def test_the_runtime_api_answers_a_model_error_carrying_the_400(runtime, operation: str, body: bytes,
                                                                field: str) -> None:
    with pytest.raises(ClientError) as caught:
        getattr(runtime, operation)(EndpointName="tiny", Body=body, ContentType="application/json")
    error = caught.value.response
    assert error["Error"]["Code"] == "ModelError" and error["OriginalStatusCode"] == 400
    assert field in json.loads(error["OriginalMessage"])["error"]


@pytest.mark.parametrize(("body", "field"), HOSTILE + STREAMED)
def test_djl_handle_answers_400(standins, cpu_handler, monkeypatch: pytest.MonkeyPatch, body: bytes,
                                field: str) -> None:
    from djl_python.inputs import Input
    from inf2_serving import djl

    monkeypatch.setattr(djl, "handler", cpu_handler)
    item = Input()
    item.properties = {"content-type": "application/json"}
    item.content.add("data", body)
    output = djl.handle(item)
    answer = json.loads(bytes(output.content.value_at(0)))
    assert answer["code"] == 400 and field in answer["error"]
