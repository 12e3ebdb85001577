"""Every example runs: locally for real, and the AWS ones against an in-process moto server."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
ROLE = "arn:aws:iam::123456789012:role/SageMakerInf2"


def run_example(name: str, *args: str, stdin: str | None = None, **env: str) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, str(EXAMPLES / name), *args], capture_output=True, text=True,
                            input=stdin, env={**os.environ, **env}, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result


def queue_endpoint_results(moto_url: str, *bodies: dict) -> None:
    """moto's sagemaker-runtime answers invoke_endpoint from this queue (it runs no model)."""
    results = [{"Body": json.dumps(body), "ContentType": "application/json"} for body in bodies]
    httpx.post(f"{moto_url}/moto-api/static/sagemaker/endpoint-results", json={"results": results}).raise_for_status()


@pytest.mark.slow
def test_local_quickstart(tmp_path):
    result = run_example("local_quickstart.py", INF2_DEPLOY_HOME=str(tmp_path))
    assert "generate:" in result.stdout and "stream:" in result.stdout
    assert "'generated_tokens': 8" in result.stdout
    assert not list((tmp_path / "local").glob("*.json"))  # deleted


@pytest.mark.slow
def test_deploy_gptj_against_moto(moto_server):
    import boto3

    queue_endpoint_results(moto_server, {"generated_text": " Paris."})
    result = run_example("deploy_gptj.py", INF2_ROLE_ARN=ROLE, MODEL="tiny-gptj", ENDPOINT_NAME="example-tiny",
                         INSTANCE_TYPE="ml.inf2.xlarge", TP_DEGREE="2", KEEP_ENDPOINT="1")
    assert "endpoint example-tiny is InService" in result.stdout
    assert "generate:  Paris." in result.stdout
    sagemaker = boto3.client("sagemaker", region_name="us-east-1", endpoint_url=moto_server)
    config_name = sagemaker.describe_endpoint(EndpointName="example-tiny")["EndpointConfigName"]
    variant = sagemaker.describe_endpoint_config(EndpointConfigName=config_name)["ProductionVariants"][0]
    assert variant["InstanceType"] == "ml.inf2.xlarge"


def test_deploy_gptj_without_role_exits_2():
    result = subprocess.run([sys.executable, str(EXAMPLES / "deploy_gptj.py")], capture_output=True, text=True,
                            env={k: v for k, v in os.environ.items() if k != "INF2_ROLE_ARN"}, timeout=120)
    assert result.returncode == 2 and "INF2_ROLE_ARN" in result.stderr


@pytest.mark.slow
def test_invoke_boto3_against_moto(moto_server):
    import boto3

    # moto creates endpoints InService at once and answers invoke_endpoint from its queue; it has no
    # invoke_endpoint_with_response_stream, so only the buffered call is exercised here.
    sagemaker = boto3.client("sagemaker", region_name="us-east-1", endpoint_url=moto_server)
    sagemaker.create_model(ModelName="m", ExecutionRoleArn=ROLE, PrimaryContainer={"Image": "image"})
    sagemaker.create_endpoint_config(EndpointConfigName="c", ProductionVariants=[{
        "VariantName": "AllTraffic", "ModelName": "m", "InstanceType": "ml.inf2.xlarge",
        "InitialInstanceCount": 1}])
    sagemaker.create_endpoint(EndpointName="raw", EndpointConfigName="c")
    queue_endpoint_results(moto_server, {"generated_text": " Paris."})
    result = run_example("invoke_boto3.py", "raw", "The capital of France is", "--no-stream")
    assert "invoke_endpoint:  Paris." in result.stdout


@pytest.mark.slow
def test_invoke_boto3_streams_from_a_local_deployment(fake_aws_env, capsys):
    from inf2_deploy.cli import main
    from inf2_deploy.local.records import default_store

    # The local server speaks the SageMaker runtime API, so the example runs unchanged with streaming
    # (which moto lacks); fake_aws_env supplies fake credentials and the region.
    assert main(["deploy", "--local", "--model", "tiny-gptj", "--tp-degree", "2", "--batch-size", "2",
                 "--n-positions", "256", "--region", "us-east-1", "--endpoint-name", "ex-boto3"]) == 0
    try:
        deployment = default_store().get("ex-boto3")
        assert f"AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME={deployment.url}" in capsys.readouterr().out
        prompt = "The capital of France is"
        with deployment.predictor as predictor:
            expected = predictor.generate(prompt, max_new_tokens=32)
        assert expected
        result = run_example("invoke_boto3.py", "my-endpoint", prompt,
                             AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME=deployment.url)
        assert f"invoke_endpoint: {expected}\n" in result.stdout
        assert f"invoke_endpoint_with_response_stream: {expected}\n" in result.stdout
    finally:
        main(["delete", "ex-boto3"])


@pytest.mark.slow
def test_chat_and_bench_against_a_local_deployment(tmp_path):
    env = {"INF2_DEPLOY_HOME": str(tmp_path)}
    from inf2_deploy.cli import main

    os.environ.update(env)
    try:
        assert main(["deploy", "--local", "--model", "tiny-gptj", "--tp-degree", "2", "--batch-size", "2",
                     "--n-positions", "256", "--region", "us-east-1", "--endpoint-name", "ex"]) == 0
        chat = run_example("chat.py", "ex", "--max-new-tokens", "8", stdin="Hello there\n\nexit\n", **env)
        assert chat.stdout.count("> ") == 3  # one prompt answered, the blank line skipped, then exit
        out = tmp_path / "bench.json"
        run_example("bench_endpoint.py", "ex", "--concurrency", "1,2", "--requests", "4", "--max-new-tokens", "8",
                    "--price-per-hour", "1.0", "--out", str(out), **env)
        data = json.loads(out.read_text())
        assert [level["concurrency"] for level in data["levels"]] == [1, 2]
        assert all(level["errors"] == 0 and level["output_tokens_per_second"] > 0 for level in data["levels"])
    finally:
        main(["delete", "ex"])
        os.environ.pop("INF2_DEPLOY_HOME", None)
