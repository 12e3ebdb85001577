"""The SageMaker SDK's Predictor verbs: ``predict(dict) -> dict`` (Stubber, an httpx mock transport, the local
server) and ``delete_endpoint()`` (moto), which is the teardown of ``inf2-deploy delete``."""
from __future__ import annotations

import io
import json
from typing import Any

import boto3
import httpx
import pytest
from botocore.response import StreamingBody
from botocore.stub import Stubber
from inf2_deploy.cli import main
from inf2_deploy.client.predictor import LocalPredictor, Predictor
from inf2_deploy.errors import ConfigError, EndpointNotFoundError
from support.aws import REGION, ROLE


def _body(data: Any) -> StreamingBody:
    raw = json.dumps(data).encode()
    return StreamingBody(io.BytesIO(raw), len(raw))


def _json_request(data: dict[str, Any]) -> dict[str, Any]:
    return {"EndpointName": "gptj-prod", "Body": json.dumps(data).encode(), "ContentType": "application/json",
            "Accept": "application/json"}


def test_predict_sends_the_dict_as_json_and_returns_the_answer(runtime: Any) -> None:
    request = {"inputs": "Hello", "parameters": {"max_new_tokens": 4, "details": True}}
    answer = {"generated_text": " world", "details": {"finish_reason": "length", "generated_tokens": 4}}
    with Stubber(runtime) as stub:
        stub.add_response("invoke_endpoint", {"Body": _body(answer)}, _json_request(request))
        assert Predictor("gptj-prod", client=runtime).predict(request) == answer
        stub.assert_no_pending_responses()


def test_predict_with_a_list_of_prompts_returns_the_list(runtime: Any) -> None:
    request = {"inputs": ["a", "b"]}
    answer = [{"generated_text": "1"}, {"generated_text": "2"}]
    with Stubber(runtime) as stub:
        stub.add_response("invoke_endpoint", {"Body": _body(answer)}, _json_request(request))
        assert Predictor("gptj-prod", client=runtime).predict(request) == answer


@pytest.mark.parametrize(("data", "field"), [
    ("Hello", "data"),
    ({"inputs": "Hello", "prompt": "x"}, "prompt"),
    ({"parameters": {}}, "inputs"),
    ({"inputs": ""}, "inputs"),
    ({"inputs": ["ok", ""]}, "inputs[1]"),
    ({"inputs": "Hello", "stream": True}, "stream"),
    ({"inputs": "Hello", "parameters": ["max_new_tokens"]}, "parameters"),
    ({"inputs": "Hello", "parameters": {"max_tokens": 5}}, "max_tokens"),
    ({"inputs": "Hello", "parameters": {"top_p": 2}}, "top_p"),
])
def test_predict_refuses_what_the_server_would_before_any_call(runtime: Any, data: Any, field: str) -> None:
    with Stubber(runtime) as stub, pytest.raises(ConfigError) as caught:  # no responses: a call would fail
        Predictor("gptj-prod", client=runtime).predict(data)
    stub.assert_no_pending_responses()
    assert caught.value.field == field


def test_local_predict_posts_the_dict() -> None:
    seen: list[bytes] = []

    def server(request: httpx.Request) -> httpx.Response:
        seen.append(request.content)
        return httpx.Response(200, json={"generated_text": "!"})

    request = {"inputs": "Hi", "parameters": {"seed": 3}}
    with LocalPredictor("http://local.test", client=httpx.Client(transport=httpx.MockTransport(server))) as predictor:
        assert predictor.predict(request) == {"generated_text": "!"}
    assert [json.loads(body) for body in seen] == [request]


@pytest.mark.slow
def test_local_predict_matches_generate(server_url: str) -> None:
    with LocalPredictor(server_url) as predictor:
        answer = predictor.predict({"inputs": "Hello world", "parameters": {"max_new_tokens": 3}})
        assert answer == {"generated_text": predictor.generate("Hello world", max_new_tokens=3)}


def _endpoint(name: str) -> None:
    """An endpoint with its config and model in moto, named after ``name``."""
    sagemaker = boto3.client("sagemaker", region_name=REGION)
    sagemaker.create_model(ModelName=f"{name}-model", ExecutionRoleArn=ROLE, PrimaryContainer={"Image": "image"})
    sagemaker.create_endpoint_config(EndpointConfigName=f"{name}-config", ProductionVariants=[
        {"VariantName": "AllTraffic", "ModelName": f"{name}-model", "InstanceType": "ml.inf2.xlarge",
         "InitialInstanceCount": 1}])
    sagemaker.create_endpoint(EndpointName=name, EndpointConfigName=f"{name}-config")


def test_delete_endpoint_removes_what_inf2_deploy_delete_removes(moto_server: str,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    _endpoint("by-cli")
    _endpoint("by-sdk")
    assert main(["delete", "by-cli", "--region", REGION]) == 0
    by_cli = capsys.readouterr().out.replace("by-cli", "NAME")
    with Predictor("by-sdk", region=REGION) as predictor:
        deleted = predictor.delete_endpoint()
    assert deleted == ["endpoint by-sdk", "endpoint config by-sdk-config", "model by-sdk-model"]
    assert by_cli == "".join(f"deleted {item.replace('by-sdk', 'NAME')}\n" for item in deleted)
    sagemaker = boto3.client("sagemaker", region_name=REGION)
    assert sagemaker.list_endpoints()["Endpoints"] == sagemaker.list_models()["Models"] == []
    assert sagemaker.list_endpoint_configs()["EndpointConfigs"] == []


def test_delete_endpoint_uses_the_session_it_was_given(moto_server: str) -> None:
    _endpoint("gptj-prod")
    predictor = Predictor("gptj-prod", session=boto3.Session(region_name=REGION))
    assert predictor.delete_endpoint()[0] == "endpoint gptj-prod"
    with pytest.raises(EndpointNotFoundError):  # nothing left of it
        predictor.delete_endpoint()
