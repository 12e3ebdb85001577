"""The deploy commands end to end, in process, against a moto server over real HTTP (AWS_ENDPOINT_URL)."""
from __future__ import annotations

import boto3
import pytest
from inf2_deploy.cli import main
from support.aws import ACCOUNT, REGION, ROLE

BUCKET = f"sagemaker-{REGION}-{ACCOUNT}"


def _deploy_argv(*extra: str) -> list[str]:
    return ["deploy", "--model", "tiny-gptj", "--instance-type", "ml.inf2.xlarge", "--endpoint-name", "tiny",
            "--region", REGION, *extra]


@pytest.mark.slow
def test_deploy_status_list_logs_redeploy_delete_over_http(moto_server, capsys):
    assert main(_deploy_argv("--role", ROLE)) == 0
    out = capsys.readouterr().out
    assert "endpoint tiny is InService" in out
    assert "inf2-deploy invoke tiny" in out

    # What the CLI created, read back over HTTP by a plain client.
    sagemaker = boto3.client("sagemaker", region_name=REGION, endpoint_url=moto_server)
    s3 = boto3.client("s3", region_name=REGION, endpoint_url=moto_server)
    endpoint = sagemaker.describe_endpoint(EndpointName="tiny")
    config = sagemaker.describe_endpoint_config(EndpointConfigName=endpoint["EndpointConfigName"])
    variant = config["ProductionVariants"][0]
    assert (variant["InstanceType"], variant["InitialInstanceCount"], variant["VolumeSizeInGB"]) == \
        ("ml.inf2.xlarge", 1, 30)
    assert variant["ContainerStartupHealthCheckTimeoutInSeconds"] == 3600
    model = sagemaker.describe_model(ModelName=variant["ModelName"])
    source = model["PrimaryContainer"]["ModelDataSource"]["S3DataSource"]
    assert source["S3DataType"] == "S3Prefix" and source["CompressionType"] == "None"
    assert source["S3Uri"].startswith(f"s3://{BUCKET}/inf2-deploy/tiny-gptj/") and source["S3Uri"].endswith("/")
    assert model["PrimaryContainer"]["Image"].endswith("djl-inference:0.29.0-neuronx-sdk2.19.1")
    assert model["ExecutionRoleArn"] == ROLE
    key_prefix = source["S3Uri"].removeprefix(f"s3://{BUCKET}/")
    objects = s3.list_objects_v2(Bucket=BUCKET, Prefix=key_prefix)["Contents"]
    assert any(o["Key"].endswith("/model.safetensors") for o in objects)
    assert any(o["Key"].endswith("/manifest.json") for o in objects)
    for obj in objects:
        head = s3.head_object(Bucket=BUCKET, Key=obj["Key"])
        assert head["ServerSideEncryption"] == "AES256" and len(head["Metadata"]["sha256"]) == 64
    assert all(s3.get_public_access_block(Bucket=BUCKET)["PublicAccessBlockConfiguration"].values())

    # The same deploy again changes nothing and uploads nothing.
    assert main(_deploy_argv("--role", ROLE)) == 0
    assert "nothing to do" in capsys.readouterr().out
    again = s3.list_objects_v2(Bucket=BUCKET, Prefix=key_prefix)["Contents"]
    assert [(o["Key"], o["LastModified"]) for o in again] == [(o["Key"], o["LastModified"]) for o in objects]
    assert len(sagemaker.list_models()["Models"]) == 1

    assert main(["status", "tiny", "--region", REGION]) == 0
    status = capsys.readouterr().out
    assert "InService" in status and "ml.inf2.xlarge" in status

    assert main(["list", "--region", REGION]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert listed[0].split() == ["NAME", "KIND", "STATUS", "INSTANCE", "AGE", "WHERE"]
    assert listed[1].split()[:4] == ["tiny", "sagemaker", "InService", "ml.inf2.xlarge"]

    assert main(["logs", "tiny", "--region", REGION]) == 0
    assert "no log lines in /aws/sagemaker/Endpoints/tiny" in capsys.readouterr().err

    assert main(["delete", "tiny", "--purge-artifacts", "--region", REGION]) == 0
    deleted = capsys.readouterr().out
    assert "deleted endpoint tiny" in deleted and "S3 objects under" in deleted
    assert sagemaker.list_endpoints()["Endpoints"] == []
    assert sagemaker.list_models()["Models"] == []
    assert "Contents" not in s3.list_objects_v2(Bucket=BUCKET, Prefix=key_prefix)


@pytest.mark.parametrize(("extra", "field"), [((), "role_arn"), (("--role", "not-an-arn"), "role_arn")])
def test_role_problems_exit_2_with_one_line_and_no_aws_call(extra, field, capsys, monkeypatch):
    def no_aws(*args: object, **kwargs: object) -> None:
        raise AssertionError("an AWS client was created")

    monkeypatch.setattr(boto3.session.Session, "client", no_aws)
    assert main(_deploy_argv(*extra)) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {field}: ") and err.count("\n") == 1


def test_missing_region_is_one_line(capsys, monkeypatch):
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    assert main(["status", "tiny"]) == 2
    assert capsys.readouterr().err == "error: region: no AWS region configured (pass --region or set AWS_REGION)\n"


def test_port_without_local_is_rejected(capsys):
    assert main(_deploy_argv("--role", ROLE, "--port", "8080")) == 2
    assert "--port applies to --local" in capsys.readouterr().err


@pytest.mark.slow
def test_no_wait_then_wait_then_a_tag_only_redeploy_over_http(moto_server, capsys):
    assert main(_deploy_argv("--role", ROLE, "--tag", "team=ml", "--no-wait")) == 0
    assert "inf2-deploy wait tiny" in capsys.readouterr().out
    assert main(["wait", "tiny", "--region", REGION, "--timeout", "60"]) == 0  # moto's endpoints start InService
    assert capsys.readouterr().out.startswith("endpoint tiny is InService")

    assert main(_deploy_argv("--role", ROLE, "--tag", "team=search")) == 0
    out = capsys.readouterr().out
    assert "updated its tags: set team=search" in out and "uploaded         nothing" in out
    sagemaker = boto3.client("sagemaker", region_name=REGION, endpoint_url=moto_server)
    arn = sagemaker.describe_endpoint(EndpointName="tiny")["EndpointArn"]
    tags = {tag["Key"]: tag["Value"] for tag in sagemaker.list_tags(ResourceArn=arn)["Tags"]}
    assert tags["team"] == "search" and tags["inf2-deploy:managed"] == "true"
    assert len(sagemaker.list_models()["Models"]) == 1

    assert main(["wait", "gone", "--region", REGION]) == 2
    assert "no endpoint named gone" in capsys.readouterr().err
