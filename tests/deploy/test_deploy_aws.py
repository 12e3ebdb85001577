"""AWS sessions: retries, credentials and region resolution, AWS_ENDPOINT_URL, error translation."""
from __future__ import annotations

import pytest
from botocore.exceptions import ClientError
from inf2_deploy.aws.session import aws_errors, make_session
from inf2_deploy.errors import AwsError, CredentialsError
from support.aws import ACCOUNT, REGION


def test_clients_use_adaptive_retries_and_the_session_region():
    client = make_session().client("sagemaker")
    # botocore counts max_attempts as retries after the first try
    assert client.meta.config.retries == {"mode": "adaptive", "total_max_attempts": 11}
    assert client.meta.region_name == REGION
    session = make_session("eu-west-1")
    assert session.client("s3") is session.client("s3")
    assert session.client("s3").meta.region_name == "eu-west-1"


def test_aws_endpoint_url_is_honoured(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:4566")
    assert make_session().client("sagemaker").meta.endpoint_url == "http://127.0.0.1:4566"


def test_missing_region_is_one_clear_line(monkeypatch):
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    with pytest.raises(CredentialsError) as missing:
        make_session()
    assert str(missing.value) == "region: no AWS region configured (pass --region or set AWS_REGION)"
    assert missing.value.exit_code == 2


def test_missing_credentials_is_one_clear_line(monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(CredentialsError) as missing:
        make_session()
    assert "\n" not in str(missing.value)
    assert str(missing.value).startswith("no AWS credentials found (configure credentials with `aws configure`")


def test_account_and_default_bucket_come_from_sts(session):
    assert session.account_id == ACCOUNT
    assert session.default_bucket() == f"sagemaker-{REGION}-{ACCOUNT}"


def test_client_errors_become_aws_errors_with_code_and_request_id():
    error = ClientError({"Error": {"Code": "AccessDeniedException", "Message": "not allowed"},
                         "ResponseMetadata": {"RequestId": "req-123"}}, "CreateModel")
    with pytest.raises(AwsError) as translated:
        with aws_errors("sagemaker:CreateModel m"):
            raise error
    assert translated.value.code == "AccessDeniedException"
    assert translated.value.request_id == "req-123"
    assert str(translated.value) == ("sagemaker:CreateModel m failed: AccessDeniedException: not allowed "
                                     "[request id req-123]")
    assert translated.value.__cause__ is error
