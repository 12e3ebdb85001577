"""deploy_gptj(): spec building, role checks before any AWS call, local vs SageMaker dispatch."""
from __future__ import annotations

import boto3
import pytest
from inf2_deploy import deploy_gptj
from inf2_deploy.aws.deployment import Deployment
from inf2_deploy.errors import ConfigError
from support.aws import REGION, ROLE


@pytest.fixture
def no_aws(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("an AWS client was created")

    monkeypatch.setattr(boto3.session.Session, "client", refuse)


def test_missing_role_fails_before_any_aws_call(no_aws):
    with pytest.raises(ConfigError) as missing:
        deploy_gptj()
    assert missing.value.field == "role_arn"
    assert "--role arn:aws:iam::ACCOUNT:role/NAME" in str(missing.value)


@pytest.mark.parametrize("role", ["", "arn:aws:iam::123:user/me", "arn:aws:iam::123456789012:user/me"])
def test_malformed_role_fails_before_any_aws_call(no_aws, role):
    with pytest.raises(ConfigError) as bad:
        deploy_gptj("tiny-gptj", role=role)
    assert bad.value.field == "role_arn"
    assert "must be an IAM role ARN" in str(bad.value)


def test_unknown_setting_is_named(no_aws):
    with pytest.raises(ConfigError, match="unknown setting"):
        deploy_gptj("tiny-gptj", role=ROLE, instance_cuont=2)


@pytest.mark.parametrize("how", [{"local": True}, {"instance_type": "local"}])
def test_local_goes_to_the_local_server_with_the_same_spec(no_aws, monkeypatch, how):
    calls = []

    def serve_local(spec, **kwargs):
        calls.append((spec, kwargs))
        return "local deployment"

    monkeypatch.setattr("inf2_deploy.local.deploy.serve_local", serve_local)
    result = deploy_gptj("tiny-gptj", endpoint_name="demo", n_positions=256, port=8123, **how)
    assert result == "local deployment"
    spec, kwargs = calls[0]
    assert (spec.model, spec.n_positions, spec.dtype, spec.endpoint_name) == ("tiny-gptj", 256, "fp16", "demo")
    assert kwargs == {"name": "demo", "port": 8123, "progress": None, "wait": True}


def test_port_without_local_is_rejected(no_aws):
    with pytest.raises(ConfigError, match="local deployments only"):
        deploy_gptj("tiny-gptj", role=ROLE, port=8000)


def test_sagemaker_deploy_returns_a_deployment_with_predictor_and_delete(session, monkeypatch):
    # deploy_gptj builds its own session from the environment; moto's mock (from `session`) serves it.
    deployment = deploy_gptj("tiny-gptj", role=ROLE, instance_type="ml.inf2.xlarge", endpoint_name="api-test",
                             region=REGION, image_uri="123456789012.dkr.ecr.us-east-1.amazonaws.com/lmi:1",
                             env={"OPTION_ROLLING_BATCH": "disable"})
    assert isinstance(deployment, Deployment)
    assert deployment.endpoint_name == "api-test" and deployment.changed
    described = session.client("sagemaker").describe_model(ModelName=deployment.model_name)
    assert described["PrimaryContainer"]["Environment"]["OPTION_ROLLING_BATCH"] == "disable"
    predictor = deployment.predictor
    assert predictor.endpoint_name == "api-test"
    assert deployment.delete()[0] == "endpoint api-test"
    assert session.client("sagemaker").list_endpoints()["Endpoints"] == []
