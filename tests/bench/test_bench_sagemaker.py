"""bench's SageMaker side on moto: endpoint -> instance type, count, price and the tokenizer from S3."""
from __future__ import annotations

from pathlib import Path

import boto3
import pytest
from inf2_deploy.benchmarking import load_tokenizer, resolve_target
from inf2_deploy.errors import AwsError, ModelSourceError
from inf2_deploy.predictor import Predictor
from inf2_deploy.spec import INSTANCE_TYPES
from moto import mock_aws
from moto.sagemaker import models as sagemaker_models

REGION = "us-east-1"
BUCKET = "bench-models"
PREFIX = "gptj/0123abcd/"
ROLE = "arn:aws:iam::123456789012:role/SageMakerExecution"
IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/djl-inference:0.29.0-neuronx-sdk2.19.1"


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL_SAGEMAKER",
                 "AWS_SESSION_TOKEN", "AWS_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "aws-credentials"))
    monkeypatch.setenv("INF2_DEPLOY_HOME", str(tmp_path / "home"))


@pytest.fixture(autouse=True)
def moto_inf2(monkeypatch: pytest.MonkeyPatch) -> None:
    """moto 5.2.5's CreateEndpointConfig rejects ml.inf2 types (its enum predates Inferentia2); admit only those."""
    original = sagemaker_models.FakeEndpointConfig.validate_instance_type

    def validate_instance_type(self, instance_type: str) -> None:
        if instance_type not in INSTANCE_TYPES:
            original(self, instance_type)

    monkeypatch.setattr(sagemaker_models.FakeEndpointConfig, "validate_instance_type", validate_instance_type)


@pytest.fixture
def endpoint(tiny_gptj: Path):
    with mock_aws():
        s3 = boto3.client("s3", region_name=REGION)
        s3.create_bucket(Bucket=BUCKET)
        # the artifact's tokenizer files (no tokenizer.json: bench must skip what is absent)
        for name in ("vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"):
            s3.put_object(Bucket=BUCKET, Key=PREFIX + name, Body=(tiny_gptj / name).read_bytes())
        sagemaker = boto3.client("sagemaker", region_name=REGION)
        sagemaker.create_model(
            ModelName="gptj-model", ExecutionRoleArn=ROLE,
            PrimaryContainer={"Image": IMAGE,
                              "ModelDataSource": {"S3DataSource": {"S3Uri": f"s3://{BUCKET}/{PREFIX}",
                                                                   "S3DataType": "S3Prefix",
                                                                   "CompressionType": "None"}}})
        sagemaker.create_endpoint_config(EndpointConfigName="gptj-config", ProductionVariants=[{
            "VariantName": "AllTraffic", "ModelName": "gptj-model", "InstanceType": "ml.inf2.8xlarge",
            "InitialInstanceCount": 2}])
        sagemaker.create_endpoint(EndpointName="gptj-endpoint", EndpointConfigName="gptj-config")
        yield "gptj-endpoint"


def test_endpoint_name_resolves_instance_and_model_data(endpoint):
    predictor, info = resolve_target(endpoint, region=REGION)
    assert isinstance(predictor, Predictor) and predictor.endpoint_name == endpoint
    assert (info.kind, info.instance_type, info.instance_count) == ("sagemaker", "ml.inf2.8xlarge", 2)
    assert info.tokenizer_source == f"s3://{BUCKET}/{PREFIX}"


@pytest.mark.slow  # building GPT-2's tokenizer from vocab.json and merges.txt takes seconds
def test_tokenizer_is_read_from_the_model_data_prefix(endpoint):
    tokenizer = load_tokenizer(f"s3://{BUCKET}/{PREFIX}", region=REGION)
    assert tokenizer("Hello world")["input_ids"] == [15496, 995]


def test_missing_tokenizer_and_missing_endpoint_are_clear_errors(endpoint):
    with pytest.raises(ModelSourceError, match="no tokenizer files"):
        load_tokenizer(f"s3://{BUCKET}/elsewhere/", region=REGION)
    with pytest.raises(AwsError):
        resolve_target("no-such-endpoint", region=REGION)
