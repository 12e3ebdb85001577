"""Exit codes: a missing endpoint is a usage error (2) that names what exists; AWS and network failures are 1."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from inf2_deploy.cli import main
from inf2_deploy.errors import AwsError
from support.aws import REGION


@pytest.fixture
def one_endpoint(moto_server: str) -> str:
    """moto with one endpoint, "kept", for the not-found hint to name."""
    import boto3

    sagemaker = boto3.client("sagemaker", region_name=REGION)
    sagemaker.create_model(ModelName="m", ExecutionRoleArn="arn:aws:iam::123456789012:role/R",
                           PrimaryContainer={"Image": "image"})
    sagemaker.create_endpoint_config(EndpointConfigName="c", ProductionVariants=[
        {"VariantName": "AllTraffic", "ModelName": "m", "InstanceType": "ml.inf2.xlarge",
         "InitialInstanceCount": 1}])
    sagemaker.create_endpoint(EndpointName="kept", EndpointConfigName="c")
    return "kept"


@pytest.mark.parametrize("argv", [["status", "gone"], ["logs", "gone"], ["delete", "gone"],
                                  ["bench", "gone", "--requests", "1"], ["verify", "gone"]])
def test_a_missing_endpoint_is_exit_2_naming_those_that_exist(one_endpoint: str, argv: list[str],
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*argv, "--region", REGION]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == (f"error: name: no endpoint named gone in {REGION} (endpoints there: {one_endpoint}) "
                   "(see `inf2-deploy list`)")


def test_network_failures_are_exit_1_and_debug_shows_the_cause(fake_aws_env: None, unused_port: int,
                                                               monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    from botocore.config import Config
    from botocore.exceptions import EndpointConnectionError
    from inf2_deploy.aws import session as aws
    monkeypatch.setattr(aws, "CLIENT_CONFIG", Config(retries={"mode": "standard", "max_attempts": 1}))
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{unused_port}")
    assert main(["status", "x", "--region", REGION]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: sagemaker:DescribeEndpoint x failed: Could not connect") and err.count("\n") == 1
    with pytest.raises(AwsError) as raised:
        main(["--debug", "status", "x", "--region", REGION])
    assert isinstance(raised.value.__cause__, EndpointConnectionError)


def test_a_botocore_error_outside_any_translation_is_one_line(fake_aws_env: None, monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    from botocore.exceptions import ReadTimeoutError
    from inf2_deploy.aws.session import make_session
    from inf2_deploy.cli import status_cmd

    def timed_out(args):  # noqa: ANN001, ANN202 - a boto3 call with no aws_errors block around it
        client = make_session(REGION).client("sagemaker")
        operation = client.meta.service_model.operation_model("DescribeEndpoint")
        client.meta.events.emit("before-call.sagemaker.DescribeEndpoint", model=operation, params={},
                                request_signer=None, context={})  # what botocore emits as the call starts
        raise ReadTimeoutError(endpoint_url="https://api.sagemaker.us-east-1.amazonaws.com")

    monkeypatch.setattr(status_cmd, "run", timed_out)
    monkeypatch.setattr("sys.argv", ["inf2-deploy"])
    parser_run = main(["status", "x"])
    err = capsys.readouterr().err
    assert parser_run == 1 and err.count("\n") == 1
    assert err.startswith("error: sagemaker:DescribeEndpoint failed: ReadTimeoutError: Read timeout on endpoint")


def test_bench_exits_1_when_every_request_fails_and_prints_the_first_error(
        fake_aws_env: None, unused_port: int, tiny_gptj: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench.json"
    assert main(["bench", "--url", f"http://127.0.0.1:{unused_port}", "--requests", "3", "--concurrency", "1",
                 "--prompt-tokens", "8", "--max-new-tokens", "2", "--tokenizer", str(tiny_gptj),
                 "--out", str(out)]) == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("error: every request failed; the first: InvocationError: ")
    assert "127.0.0.1" in last
    timings = json.loads(out.read_text())["levels"][0]["request_timings"]
    assert all(t["error"] == "InvocationError" and t["message"] for t in timings)
