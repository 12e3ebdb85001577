"""bench's SageMaker side on moto: endpoint -> instance type, count, price and the tokenizer from S3."""
from __future__ import annotations

from pathlib import Path

import boto3
import pytest
from inf2_deploy.benchmarking.prompts import load_tokenizer
from inf2_deploy.benchmarking.runner import bench_target
from inf2_deploy.client.predictor import Predictor
from inf2_deploy.errors import AwsError, ModelSourceError
from moto import mock_aws
from support.aws import IMAGE, REGION

BUCKET = "bench-models"
PREFIX = "gptj/0123abcd/"
ROLE = "arn:aws:iam::123456789012:role/SageMakerExecution"


@pytest.fixture(autouse=True)
def aws_on_moto(fake_aws_env: None, moto_accepts_inf2: None) -> None:
    """Fake credentials, and moto extended for ml.inf2 (tests/conftest.py)."""


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
    predictor, info = bench_target(endpoint, region=REGION)
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
        bench_target("no-such-endpoint", region=REGION)
