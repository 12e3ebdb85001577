"""iam-policy: well-formed least-privilege JSON that covers exactly what a real deploy calls.

A full tiny-gptj deploy, redeploy (update), status, logs, list, invoke, stream
and delete run against moto while every AWS call is recorded; each call must
be allowed by the deployer policy on its own resource ARN, and every action in
the policy must have been used (or be on the short list explained below).
"""
from __future__ import annotations

import json
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import pytest
from inf2_deploy.aws.iam import (
    RoleArn,
    action_for,
    deployer_policy,
    execution_role_policy,
    execution_role_trust_policy,
    iam_policies,
    parse_role_arn,
)
from inf2_deploy.cli import main
from inf2_deploy.errors import ConfigError
from support.aws import ACCOUNT, REGION

ROLE_NAME = "SageMakerRole"
BUCKET = f"sagemaker-{REGION}-{ACCOUNT}"

#: actions in the deployer policy that the happy path never calls, and why they are there
UNUSED_ON_PURPOSE = {
    "s3:AbortMultipartUpload": "s3transfer aborts a multipart upload that fails part-way, and an upload "
                               "aborts stale ones a killed uploader left; a clean deploy leaves neither",
    "iam:CreateServiceLinkedRole": "Application Auto Scaling creates its SageMaker role on the first "
                                   "RegisterScalableTarget of an account, as the caller; no boto3 call of ours",
}
#: a scalable target's ARN: the service names it with an id of its own, not the endpoint's name
SCALABLE_TARGET = f"arn:aws:application-autoscaling:{REGION}:{ACCOUNT}:scalable-target/056c4a6fd0a5f7b3"


def _statements(policy: dict[str, Any]) -> list[dict[str, Any]]:
    assert policy["Version"] == "2012-10-17"
    return policy["Statement"]


def _listify(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else value


def _allowed(policy: dict[str, Any], action: str, resource: str) -> bool:
    return any(
        action in _listify(s["Action"]) and any(fnmatchcase(resource, p) for p in _listify(s["Resource"]))
        for s in _statements(policy)
    )


def _checks(service: str, operation: str, params: dict[str, Any]) -> list[tuple[str, str]]:
    """(IAM action, resource ARN) pairs that AWS authorizes for one call."""
    action = action_for(service, operation)
    if service.startswith("sagemaker"):
        arn = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}"
        kinds = (("EndpointName", "endpoint"), ("EndpointConfigName", "endpoint-config"), ("ModelName", "model"))
        resources = [f"{arn}:{kind}/{params[key].lower()}" for key, kind in kinds if key in params]
        if "ResourceArn" in params:
            resources.append(params["ResourceArn"].lower())
        checks = [(action, resource) for resource in resources or ["*"]]
        if operation.startswith("Create") and params.get("Tags"):  # tagging on create needs AddTags
            checks.append(("sagemaker:AddTags", resources[0]))
        if "ExecutionRoleArn" in params:
            checks.append(("iam:PassRole", params["ExecutionRoleArn"]))
        return checks
    if service == "s3":
        bucket = f"arn:aws:s3:::{params['Bucket']}"
        if operation == "DeleteObjects":  # authorized key by key
            return [(action, f"{bucket}/{item['Key']}") for item in params["Delete"]["Objects"]]
        return [(action, f"{bucket}/{params['Key']}" if "Key" in params else bucket)]
    if service == "logs":
        return [(action, f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{params['logGroupName']}")]
    if service == "application-autoscaling" and not operation.startswith("Describe"):
        return [(action, SCALABLE_TARGET)]
    return [(action, "*")]


def test_policies_are_well_formed_and_scoped() -> None:
    policies = iam_policies(BUCKET, region=REGION, account=ACCOUNT, role_name=ROLE_NAME, endpoint_name="tiny")
    text = json.dumps(policies)
    assert json.loads(text) == policies
    assert policies.pop("execution_role_trust") == execution_role_trust_policy()
    for policy in policies.values():
        sids = [s["Sid"] for s in _statements(policy)]
        assert len(sids) == len(set(sids))
        for statement in _statements(policy):
            assert statement["Effect"] == "Allow"
            assert all(":" in a and "*" not in a for a in _listify(statement["Action"])), statement
            resources = _listify(statement["Resource"])
            if resources == ["*"]:  # only actions without resource-level permissions may use "*"
                assert set(_listify(statement["Action"])) <= {
                    "sagemaker:ListEndpoints", "sagemaker:ListEndpointConfigs", "sagemaker:ListModels",
                    "sts:GetCallerIdentity", "ecr:GetAuthorizationToken", "cloudwatch:PutMetricData",
                    "application-autoscaling:DescribeScalableTargets",
                    "application-autoscaling:DescribeScalingPolicies",
                    "application-autoscaling:DescribeScalingActivities"}, statement
            else:
                assert all(r.startswith("arn:aws:") for r in resources)
    deployer = policies["deployer"]
    assert _allowed(deployer, "s3:PutObject", f"arn:aws:s3:::{BUCKET}/inf2-deploy/tiny-gptj/abc/model.safetensors")
    assert not _allowed(deployer, "s3:PutObject", f"arn:aws:s3:::{BUCKET}/elsewhere/x")
    assert not _allowed(deployer, "s3:PutObject", "arn:aws:s3:::other-bucket/inf2-deploy/x")
    assert not _allowed(deployer, "sagemaker:DeleteEndpoint", f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:endpoint/other")
    assert not _allowed(deployer, "sagemaker:DeleteModel", f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:model/other-1")
    (passrole,) = [s for s in _statements(deployer) if "iam:PassRole" in s["Action"]]
    assert passrole["Resource"] == [f"arn:aws:iam::{ACCOUNT}:role/{ROLE_NAME}"]
    assert passrole["Condition"] == {"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}}
    assert not _allowed(deployer, "sagemaker:UpdateEndpointWeightsAndCapacities",
                        f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:endpoint/other")
    (linked,) = [s for s in _statements(deployer) if "iam:CreateServiceLinkedRole" in s["Action"]]
    assert linked["Resource"] == [f"arn:aws:iam::{ACCOUNT}:role/aws-service-role/sagemaker.application-autoscaling."
                                  "amazonaws.com/AWSServiceRoleForApplicationAutoScaling_SageMakerEndpoint"]
    assert linked["Condition"] == {
        "StringLike": {"iam:AWSServiceName": "sagemaker.application-autoscaling.amazonaws.com"}}

    role = policies["execution_role"]
    cache = f"arn:aws:s3:::{BUCKET}/inf2-deploy/neuron-cache/neff/x.neff"
    assert _allowed(role, "s3:GetObject", f"arn:aws:s3:::{BUCKET}/inf2-deploy/tiny-gptj/abc/model.safetensors")
    assert _allowed(role, "s3:PutObject", cache)
    assert not _allowed(role, "s3:PutObject", f"arn:aws:s3:::{BUCKET}/inf2-deploy/tiny-gptj/abc/model.safetensors")
    assert not _allowed(role, "s3:DeleteObject", cache)
    for action in ("ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"):
        assert _allowed(role, action, f"arn:aws:ecr:{REGION}:763104351884:repository/djl-inference")
    assert _allowed(role, "logs:PutLogEvents", f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/aws/sagemaker/Endpoints/x")
    assert _allowed(role, "cloudwatch:PutMetricData", "*")


def test_named_bucket_gets_no_create_rights_unless_asked() -> None:
    def actions(policy: dict[str, Any]) -> set[str]:
        return {a for s in _statements(policy) for a in _listify(s["Action"])}

    bucket_setup = {"s3:CreateBucket", "s3:PutBucketPublicAccessBlock", "s3:PutEncryptionConfiguration",
                    "s3:PutLifecycleConfiguration"}
    assert not bucket_setup & actions(deployer_policy("my-artifacts"))
    assert bucket_setup <= actions(deployer_policy("my-artifacts", create_bucket=True))
    assert bucket_setup <= actions(deployer_policy(BUCKET))


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"bucket": "Bad_Bucket"}, "bucket"), ({"region": "mars"}, "region"), ({"account": "12"}, "account"),
    ({"prefix": "../x"}, "prefix"), ({"prefix": "a/*"}, "prefix"), ({"role_name": "a b"}, "role_name"),
    ({"endpoint_name": "-x"}, "endpoint_name"), ({"role_path": "service-role"}, "role_path"),
    ({"role_path": "/a b/"}, "role_path"),
])
def test_bad_arguments_name_the_field(kwargs: dict[str, str], field: str) -> None:
    arguments = {"bucket": BUCKET, **kwargs}
    with pytest.raises(ConfigError) as error:
        iam_policies(arguments.pop("bucket"), **arguments)
    assert error.value.field == field and field in str(error.value)


def test_execution_role_policy_refuses_an_unsafe_prefix() -> None:
    with pytest.raises(ConfigError) as error:
        execution_role_policy(BUCKET, prefix="a/../b")
    assert error.value.field == "prefix"


def test_cli_prints_all_three_documents(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["iam-policy", "--bucket", "my-artifacts", "--region", REGION, "--account", ACCOUNT,
                 "--role-name", ROLE_NAME]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == iam_policies("my-artifacts", region=REGION, account=ACCOUNT, role_name=ROLE_NAME)
    assert list(printed) == ["deployer", "execution_role", "execution_role_trust"]
    assert main(["iam-policy", "--bucket", "Not_A_Bucket"]) == 2
    assert capsys.readouterr().err.startswith("error: bucket: ")


def test_the_trust_policy_lets_only_sagemaker_assume_the_role() -> None:
    (statement,) = _statements(execution_role_trust_policy())
    assert statement == {"Sid": "SageMakerAssumesRole", "Effect": "Allow",
                         "Principal": {"Service": "sagemaker.amazonaws.com"}, "Action": "sts:AssumeRole"}


@pytest.mark.parametrize(("arn", "role"), [
    (f"arn:aws:iam::{ACCOUNT}:role/{ROLE_NAME}", RoleArn(ACCOUNT, "/", ROLE_NAME)),
    (f"arn:aws:iam::{ACCOUNT}:role/service-role/AmazonSageMaker-ExecutionRole-1",
     RoleArn(ACCOUNT, "/service-role/", "AmazonSageMaker-ExecutionRole-1")),
    ("arn:aws-cn:iam::210987654321:role/a/b/R+=,.@-", RoleArn("210987654321", "/a/b/", "R+=,.@-")),
])
def test_a_role_arn_gives_account_path_and_name(arn: str, role: RoleArn) -> None:
    assert parse_role_arn(arn) == role


@pytest.mark.parametrize("arn", ["SageMakerRole", f"arn:aws:iam::{ACCOUNT}:user/me", "arn:aws:iam::12:role/R",
                                 f"arn:aws:iam::{ACCOUNT}:role/", f"arn:aws:iam::{ACCOUNT}:role/{'r' * 65}"])
def test_a_bad_role_arn_names_the_role(arn: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_role_arn(arn)
    assert error.value.field == "role"


def test_cli_out_dir_writes_one_file_per_document(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    role = f"arn:aws:iam::{ACCOUNT}:role/service-role/Inf2Endpoint"
    out = tmp_path / "iam"
    assert main(["iam-policy", "--bucket", BUCKET, "--role", role, "--region", REGION, "--out-dir", str(out)]) == 0
    files = {name: json.loads((out / name).read_text()) for name in sorted(p.name for p in out.iterdir())}
    assert sorted(files) == ["deployer-policy.json", "execution-role-policy.json", "execution-role-trust-policy.json"]
    expected = iam_policies(BUCKET, region=REGION, account=ACCOUNT, role_name="Inf2Endpoint",
                            role_path="/service-role/")
    assert files["deployer-policy.json"] == expected["deployer"]
    assert files["execution-role-policy.json"] == expected["execution_role"]
    assert files["execution-role-trust-policy.json"] == execution_role_trust_policy()
    (passrole,) = [s for s in _statements(files["deployer-policy.json"]) if "iam:PassRole" in s["Action"]]
    assert passrole["Resource"] == [role]  # the role's own ARN, path included, from --role
    printed = capsys.readouterr().out
    assert f"wrote {out / 'execution-role-trust-policy.json'}" in printed
    assert (f"aws iam create-role --role-name Inf2Endpoint --path /service-role/ --assume-role-policy-document "
            f"file://{out / 'execution-role-trust-policy.json'}") in printed


@pytest.mark.parametrize(("argv", "field"), [
    (["--role", f"arn:aws:iam::{ACCOUNT}:role/R", "--account", "210987654321"], "account"),
    (["--role", "R"], "role"),
    (["--out-dir", "FILE"], "out_dir"),
])
def test_cli_role_and_out_dir_errors_name_the_field(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                    argv: list[str], field: str) -> None:
    (tmp_path / "file").write_text("not a folder")
    argv = [str(tmp_path / "file") if item == "FILE" else item for item in argv]
    assert main(["iam-policy", "--bucket", BUCKET, *argv]) == 2
    assert capsys.readouterr().err.startswith(f"error: {field}: ")


def test_cli_role_and_role_name_are_one_or_the_other(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["iam-policy", "--bucket", BUCKET, "--role", f"arn:aws:iam::{ACCOUNT}:role/R", "--role-name", "R"])
    assert exited.value.code == 2
    assert "argument --role-name: not allowed with argument --role" in capsys.readouterr().err


@pytest.mark.slow
def test_deployer_policy_covers_exactly_what_a_full_deploy_calls(
        moto_server: str, record_aws_calls, capsys: pytest.CaptureFixture[str],  # noqa: ANN001
        monkeypatch: pytest.MonkeyPatch) -> None:
    import boto3
    from support.aws import add_scaling_activities

    add_scaling_activities(monkeypatch)  # moto lacks DescribeScalingActivities, which status calls
    from inf2_deploy.client.predictor import Predictor
    from inf2_deploy.errors import InvocationError

    role = f"arn:aws:iam::{ACCOUNT}:role/{ROLE_NAME}"
    deploy = ["deploy", "--model", "tiny-gptj", "--instance-type", "ml.inf2.xlarge", "--endpoint-name", "tiny",
              "--region", REGION, "--role", role]
    # Two instances on a cold compile cache: one starts, the cache is marked warm, then the count rises.
    assert main([*deploy, "--tag", "team=ml", "--instance-count", "2"]) == 0
    # Changed settings: UpdateEndpoint; the endpoint's tags follow the deploy (team goes: DeleteTags).
    assert main([*deploy, "--volume-size-gb", "40"]) == 0
    # A new serving.properties: a new artifact, whose other files S3 copies from the first one.
    assert main([*deploy, "--volume-size-gb", "40", "--batch-size", "2"]) == 0
    # Autoscaling: registered after InService, then kept through an update (RetainAllVariantProperties),
    # switched to another metric (the old policy deleted), and scaled by hand.
    assert main([*deploy, "--volume-size-gb", "40", "--batch-size", "2", "--max-instances", "2"]) == 0
    assert main([*deploy, "--volume-size-gb", "50", "--batch-size", "2", "--max-instances", "2",
                 "--scale-metric", "invocations", "--scale-target", "60"]) == 0
    assert main(["scale", "tiny", "2", "--region", REGION]) == 0
    assert main(["status", "tiny", "--region", REGION]) == 0
    assert main(["logs", "tiny", "--region", REGION]) == 0
    assert main(["list", "--region", REGION]) == 0
    predictor = Predictor("tiny", region=REGION)
    try:
        predictor.generate("Hello")  # moto answers with a canned body that is not LMI JSON
    except InvocationError:
        pass
    with pytest.raises(InvocationError):  # moto has no InvokeEndpointWithResponseStream
        list(predictor.stream("Hello"))
    # Someone else's model (made outside the recording): a purge reads every model's data before deleting.
    recorded = len(record_aws_calls.calls)
    boto3.client("sagemaker", region_name=REGION).create_model(
        ModelName="someone-else", ExecutionRoleArn=role, PrimaryContainer={"Image": "example"})
    del record_aws_calls.calls[recorded:]
    assert main(["delete", "tiny", "--purge-artifacts", "--region", REGION]) == 0
    assert main(["delete", "tiny", "--region", REGION]) == 2  # nothing left: looks for leftovers, then says so
    capsys.readouterr()

    policy = deployer_policy(BUCKET, region=REGION, account=ACCOUNT, role_name=ROLE_NAME, endpoint_name="tiny")
    used = set()
    for service, operation, params in record_aws_calls.calls:
        for action, resource in _checks(service, operation, params):
            assert _allowed(policy, action, resource), f"{service}.{operation} needs {action} on {resource}"
            used.add(action)
    granted = {a for s in _statements(policy) for a in _listify(s["Action"])}
    assert granted - used == set(UNUSED_ON_PURPOSE)
    assert {"sagemaker:UpdateEndpoint", "sagemaker:InvokeEndpointWithResponseStream", "s3:CreateBucket",
            "s3:PutLifecycleConfiguration", "s3:ListBucketMultipartUploads", "iam:PassRole",
            "s3:DeleteObject", "application-autoscaling:RegisterScalableTarget",
            "application-autoscaling:DeregisterScalableTarget", "sagemaker:UpdateEndpointWeightsAndCapacities"} <= used
    assert any(operation == "PutObject" and "/neuron-cache-warm/" in params["Key"]
               for _, operation, params in record_aws_calls.calls)  # the staged start marked the cache warm
    update = [params for _, operation, params in record_aws_calls.calls if operation == "UpdateEndpoint"][-1]
    assert update["RetainAllVariantProperties"] is True
    made = {(operation, params.get("ModelName")) for _, operation, params in record_aws_calls.calls}
    assert {("CopyObject", None), ("DescribeModel", "someone-else")} <= made
