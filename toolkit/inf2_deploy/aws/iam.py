"""Least-privilege IAM policies for deploying with inf2-deploy and for the endpoint it creates.

Three documents:

- the **deployer** policy, for whoever runs ``inf2-deploy deploy/status/logs/
  invoke/list/scale/delete``: exactly the API actions the toolkit calls, on the
  resources its names allow (the endpoint, and models and endpoint configs
  named ``<endpoint>-<fingerprint>-<time>``), S3 on the artifact prefix, log
  reading, ``iam:PassRole`` of the execution role to SageMaker only, and the
  endpoint's autoscaling (with the creation of its service-linked role);
- the **execution role** policy, for the role the endpoint runs as: read the
  artifact prefix, read and write the Neuron compile cache, pull the LMI image
  from ECR, write logs and metrics;
- the execution role's **trust** policy: SageMaker (``sagemaker.amazonaws.com``)
  may assume the role.

:data:`OPERATION_ACTIONS` maps the boto3 operations the toolkit makes to the IAM
action that authorizes each; tests record the operations of a full deploy and
check the deployer policy against it in both directions.
"""
from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Any, NamedTuple

from inf2_serving.contract import ENDPOINT_NAME

from ..errors import ConfigError
from ..spec.validators import BUCKET_NAME, REGION_NAME
from .requests import resource_name

__all__ = [
    "DEFAULT_ROLE_NAME",
    "OPERATION_ACTIONS",
    "RoleArn",
    "action_for",
    "deployer_policy",
    "execution_role_policy",
    "execution_role_trust_policy",
    "iam_policies",
    "parse_role_arn",
]

POLICY_VERSION = "2012-10-17"
DEFAULT_ROLE_NAME = "inf2-deploy-endpoint"
LOG_GROUP_PREFIX = "/aws/sagemaker/Endpoints/"
#: the service-linked role Application Auto Scaling scales SageMaker endpoints as, and its service
AUTOSCALING_ROLE = "AWSServiceRoleForApplicationAutoScaling_SageMakerEndpoint"
AUTOSCALING_SERVICE = "sagemaker.application-autoscaling.amazonaws.com"
# The LMI images live in an AWS-owned ECR account that differs between regions.
LMI_REPOSITORY = "djl-inference"

#: (boto3 service, operation) -> IAM action, where the action is not simply "<service>:<operation>"
OPERATION_ACTIONS: dict[tuple[str, str], str] = {
    ("s3", "HeadBucket"): "s3:ListBucket",
    ("s3", "ListObjectsV2"): "s3:ListBucket",
    ("s3", "ListMultipartUploads"): "s3:ListBucketMultipartUploads",
    ("s3", "HeadObject"): "s3:GetObject",
    ("s3", "CreateMultipartUpload"): "s3:PutObject",
    ("s3", "UploadPart"): "s3:PutObject",
    ("s3", "CompleteMultipartUpload"): "s3:PutObject",
    # A copy inside S3 writes the destination (and reads the source, s3:GetObject on the same prefix).
    ("s3", "CopyObject"): "s3:PutObject",
    ("s3", "UploadPartCopy"): "s3:PutObject",
    ("s3", "DeleteObjects"): "s3:DeleteObject",
    ("s3", "PutPublicAccessBlock"): "s3:PutBucketPublicAccessBlock",
    ("s3", "PutBucketEncryption"): "s3:PutEncryptionConfiguration",
    ("s3", "PutBucketLifecycleConfiguration"): "s3:PutLifecycleConfiguration",
    ("sagemaker-runtime", "InvokeEndpoint"): "sagemaker:InvokeEndpoint",
    ("sagemaker-runtime", "InvokeEndpointWithResponseStream"): "sagemaker:InvokeEndpointWithResponseStream",
}

_ACCOUNT = re.compile(r"^\d{12}$")
_ROLE_NAME = re.compile(r"^[\w+=,.@-]{1,64}$")
# IAM's role ARN: arn:PARTITION:iam::ACCOUNT:role/PATH/NAME, where the path is optional.
_ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::(\d{12}):role(/(?:[\w+=,.@-]+/)*)([\w+=,.@-]{1,64})$")
_ROLE_PATH = re.compile(r"^/(?:[\w+=,.@-]+/)*$")


class RoleArn(NamedTuple):
    """The parts of an IAM role ARN that the policies use."""

    account: str
    #: the role's IAM path, ``/`` unless it was created with one (e.g. ``/service-role/``)
    path: str
    name: str


def parse_role_arn(arn: str) -> RoleArn:
    """The account, path and name of an IAM role ARN such as ``arn:aws:iam::123456789012:role/Inf2``.

    Raises:
        ConfigError: ``arn`` is not an IAM role ARN (field ``role``).
    """
    match = _ROLE_ARN.match(arn) if isinstance(arn, str) else None
    if match is None:
        raise ConfigError("must be an IAM role ARN like arn:aws:iam::123456789012:role/NAME", field="role",
                          value=arn)
    return RoleArn(*match.groups())
_PREFIX = re.compile(r"^[A-Za-z0-9!_.*'()/-]{1,512}$")


def action_for(service: str, operation: str) -> str:
    """The IAM action that authorizes boto3 ``service``'s ``operation`` (e.g. ``s3``, ``HeadObject``)."""
    prefix = "sagemaker" if service.startswith("sagemaker") else service
    return OPERATION_ACTIONS.get((service, operation), f"{prefix}:{operation}")


def _statement(sid: str, actions: list[str], resources: list[str] | str,
               condition: dict[str, Any] | None = None) -> dict[str, Any]:
    statement: dict[str, Any] = {"Sid": sid, "Effect": "Allow", "Action": sorted(actions),
                                 "Resource": resources}
    if condition:
        statement["Condition"] = condition
    return statement


def _check(bucket: str, region: str, account: str, prefix: str, role_name: str,
           endpoint_name: str | None, role_path: str = "/") -> str:
    checks = (
        ("bucket", bucket, BUCKET_NAME.match(bucket) is not None),
        ("region", region, region == "*" or REGION_NAME.match(region) is not None),
        ("account", account, account == "*" or _ACCOUNT.match(account) is not None),
        ("role_name", role_name, _ROLE_NAME.match(role_name) is not None),
        ("role_path", role_path, _ROLE_PATH.match(role_path) is not None),
        ("endpoint_name", endpoint_name, endpoint_name is None or ENDPOINT_NAME.match(endpoint_name) is not None),
    )
    for field, value, ok in checks:
        if not ok:
            raise ConfigError(f"{value!r} is not a valid {field.replace('_', ' ')}", field=field, value=value)
    cleaned = prefix.strip("/")
    if not _PREFIX.match(cleaned) or ".." in cleaned.split("/") or "*" in cleaned:
        raise ConfigError(f"{prefix!r} is not a plain S3 key prefix", field="prefix", value=prefix)
    return cleaned


def _name_patterns(endpoint_name: str | None) -> tuple[str, str]:
    """(endpoint pattern, model/config pattern) for ARNs, from the toolkit's own naming rule."""
    if endpoint_name is None:
        return "*", "*"
    sample = resource_name(endpoint_name, "0" * 8, datetime(2000, 1, 1, tzinfo=timezone.utc))
    # resource_name appends "-<fingerprint>-<time>"; keep what precedes those two parts.
    return endpoint_name, sample.rsplit("-", 2)[0] + "-*"


def deployer_policy(
    bucket: str,
    *,
    region: str = "*",
    account: str = "*",
    prefix: str = "inf2-deploy",
    role_name: str = DEFAULT_ROLE_NAME,
    role_path: str = "/",
    endpoint_name: str | None = None,
    create_bucket: bool | None = None,
) -> dict[str, Any]:
    """The policy for the person or CI job that runs inf2-deploy.

    Args:
        bucket: the artifact bucket (``--bucket``).
        region: the region, or ``*`` for any.
        account: the 12-digit account id, or ``*`` for any.
        prefix: the S3 key prefix (``--prefix``).
        role_name: the endpoint's execution role, the only role that may be passed.
        role_path: that role's IAM path (``/service-role/`` for roles the console made); part of its ARN.
        endpoint_name: restrict SageMaker resources to this endpoint's names.
        create_bucket: allow creating the bucket as private and encrypted, with a lifecycle
            rule that aborts incomplete multipart uploads; default:
            when ``bucket`` is the default ``sagemaker-REGION-ACCOUNT`` bucket.

    Returns:
        An IAM policy document (a JSON-ready dict).

    Raises:
        ConfigError: an argument is not a valid name, region, account or prefix.
    """
    prefix = _check(bucket, region, account, prefix, role_name, endpoint_name, role_path)
    if create_bucket is None:
        create_bucket = bucket.startswith("sagemaker-")
    endpoint, derived = _name_patterns(endpoint_name)
    statements = [
        *_sagemaker_statements(region, account, endpoint, derived),
        *_artifact_statements(bucket, prefix, create_bucket=create_bucket),
        # `logs` and the deploy wait read with FilterLogEvents only (across the group's streams).
        _statement("ReadEndpointLogs", ["logs:FilterLogEvents"],
                   [f"arn:aws:logs:{region}:{account}:log-group:{LOG_GROUP_PREFIX}{endpoint}",
                    f"arn:aws:logs:{region}:{account}:log-group:{LOG_GROUP_PREFIX}{endpoint}:*"]),
        # The account id for the default bucket name; GetCallerIdentity needs no permission
        # in practice, but explicit denies exist, so it is listed.
        _statement("WhoAmI", ["sts:GetCallerIdentity"], "*"),
        _statement("PassExecutionRoleToSageMaker", ["iam:PassRole"],
                   [f"arn:aws:iam::{account}:role{role_path}{role_name}"],
                   {"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}}),
        *_autoscaling_statements(region, account),
    ]
    return {"Version": POLICY_VERSION, "Statement": statements}


def _autoscaling_statements(region: str, account: str) -> list[dict[str, Any]]:
    """Register, scale and deregister the endpoint's variant with Application Auto Scaling."""
    return [
        # A scalable target's ARN ends in an id the service makes up, not the endpoint's name:
        # the region and account are as narrow as these actions can be scoped.
        _statement("AutoscaleEndpoint",
                   [f"application-autoscaling:{action}" for action in (
                       "RegisterScalableTarget", "DeregisterScalableTarget", "PutScalingPolicy",
                       "DeleteScalingPolicy")],
                   [f"arn:aws:application-autoscaling:{region}:{account}:scalable-target/*"]),
        # The Describe actions have no resource-level permissions.
        _statement("ReadAutoscaling",
                   [f"application-autoscaling:{action}" for action in (
                       "DescribeScalableTargets", "DescribeScalingPolicies", "DescribeScalingActivities")], "*"),
        # The first registration in an account creates Application Auto Scaling's role for SageMaker.
        _statement("AutoscalingServiceLinkedRole", ["iam:CreateServiceLinkedRole"],
                   [f"arn:aws:iam::{account}:role/aws-service-role/{AUTOSCALING_SERVICE}/{AUTOSCALING_ROLE}"],
                   {"StringLike": {"iam:AWSServiceName": AUTOSCALING_SERVICE}}),
    ]


def _sagemaker_statements(region: str, account: str, endpoint: str, derived: str) -> list[dict[str, Any]]:
    """Manage the endpoint and the models and configs named after it, invoke it, list what exists."""
    # SageMaker ARNs carry resource names in lower case; IAM matches against those ARNs.
    arn = f"arn:aws:sagemaker:{region}:{account}"
    sm_endpoint, sm_derived = endpoint.lower(), derived.lower()
    return [
        _statement(
            "ManageInf2DeployResources",
            ["sagemaker:CreateModel", "sagemaker:DescribeModel", "sagemaker:DeleteModel",
             "sagemaker:CreateEndpointConfig", "sagemaker:DescribeEndpointConfig", "sagemaker:DeleteEndpointConfig",
             "sagemaker:CreateEndpoint", "sagemaker:DescribeEndpoint", "sagemaker:UpdateEndpoint",
             "sagemaker:DeleteEndpoint", "sagemaker:AddTags", "sagemaker:DeleteTags", "sagemaker:ListTags"],
            [f"{arn}:model/{sm_derived}", f"{arn}:endpoint-config/{sm_derived}", f"{arn}:endpoint/{sm_endpoint}"],
        ),
        _statement("InvokeEndpoint", ["sagemaker:InvokeEndpoint", "sagemaker:InvokeEndpointWithResponseStream"],
                   [f"{arn}:endpoint/{sm_endpoint}"]),
        # `inf2-deploy scale` sets the instance count (autoscaling does it as its service-linked role).
        _statement("ScaleEndpoint", ["sagemaker:UpdateEndpointWeightsAndCapacities"],
                   [f"{arn}:endpoint/{sm_endpoint}"]),
        # The List actions have no resource-level permissions. `inf2-deploy list` and the not-found
        # hint need ListEndpoints; `delete` of an endpoint already gone lists the configs and models
        # an interrupted delete left.
        _statement("ListResources", ["sagemaker:ListEndpoints", "sagemaker:ListEndpointConfigs",
                                     "sagemaker:ListModels"], "*"),
        # Before a purge deletes an artifact, every model of the account is read for its model data:
        # another endpoint deployed with the same settings reads the same prefix. Read-only.
        _statement("FindArtifactReaders", ["sagemaker:DescribeModel"], [f"{arn}:model/*"]),
    ]


def _artifact_statements(bucket: str, prefix: str, *, create_bucket: bool) -> list[dict[str, Any]]:
    """Use the artifact bucket, create it private and encrypted when allowed, and write under the prefix."""
    statements = [
        # HeadBucket is authorized by s3:ListBucket and sends no prefix, so no s3:prefix condition.
        # ListBucketMultipartUploads finds uploads a killed uploader left under the artifact's prefix;
        # AbortMultipartUpload (below) removes them.
        _statement("ArtifactBucket", ["s3:ListBucket", "s3:ListBucketMultipartUploads"],
                   [f"arn:aws:s3:::{bucket}"]),
    ]
    if create_bucket:
        statements.append(_statement(
            "CreatePrivateEncryptedBucket",
            ["s3:CreateBucket", "s3:PutBucketPublicAccessBlock", "s3:PutEncryptionConfiguration",
             "s3:PutLifecycleConfiguration"],
            [f"arn:aws:s3:::{bucket}"]))
    statements.append(_statement(
        "ArtifactObjects", ["s3:PutObject", "s3:GetObject", "s3:DeleteObject", "s3:AbortMultipartUpload"],
        [f"arn:aws:s3:::{bucket}/{prefix}/*"]))
    return statements


def execution_role_policy(
    bucket: str,
    *,
    region: str = "*",
    account: str = "*",
    prefix: str = "inf2-deploy",
) -> dict[str, Any]:
    """The policy for the endpoint's execution role (the ``--role`` the container runs as).

    Args:
        bucket: the artifact bucket.
        region: the region, or ``*`` for any.
        account: the 12-digit account id, or ``*`` for any.
        prefix: the S3 key prefix; artifacts and ``neuron-cache/`` live under it.

    Returns:
        An IAM policy document (a JSON-ready dict).

    Raises:
        ConfigError: an argument is not a valid name, region, account or prefix.
    """
    prefix = _check(bucket, region, account, prefix, DEFAULT_ROLE_NAME, None)
    cache = f"arn:aws:s3:::{bucket}/{prefix}/neuron-cache/*"
    statements = [
        _statement("ListArtifactPrefix", ["s3:ListBucket"], [f"arn:aws:s3:::{bucket}"],
                   {"StringLike": {"s3:prefix": [f"{prefix}/*"]}}),
        _statement("ReadArtifacts", ["s3:GetObject"], [f"arn:aws:s3:::{bucket}/{prefix}/*"]),
        _statement("NeuronCompileCache", ["s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload"], [cache]),
        # GetAuthorizationToken has no resource-level permissions.
        _statement("EcrLogin", ["ecr:GetAuthorizationToken"], "*"),
        _statement("PullLmiImage", ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer",
                                    "ecr:BatchCheckLayerAvailability"],
                   [f"arn:aws:ecr:{region}:*:repository/{LMI_REPOSITORY}"]),
        _statement("WriteEndpointLogs", ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"],
                   [f"arn:aws:logs:{region}:{account}:log-group:{LOG_GROUP_PREFIX}*"]),
        # PutMetricData has no resource-level permissions.
        _statement("PublishMetrics", ["cloudwatch:PutMetricData"], "*"),
    ]
    return {"Version": POLICY_VERSION, "Statement": statements}


def execution_role_trust_policy() -> dict[str, Any]:
    """The execution role's trust policy: SageMaker may assume the role (``aws iam create-role
    --assume-role-policy-document``)."""
    return {"Version": POLICY_VERSION, "Statement": [{
        "Sid": "SageMakerAssumesRole", "Effect": "Allow", "Principal": {"Service": "sagemaker.amazonaws.com"},
        "Action": "sts:AssumeRole"}]}


def iam_policies(
    bucket: str,
    *,
    region: str = "*",
    account: str = "*",
    prefix: str = "inf2-deploy",
    role_name: str = DEFAULT_ROLE_NAME,
    role_path: str = "/",
    endpoint_name: str | None = None,
    create_bucket: bool | None = None,
) -> dict[str, Any]:
    """The three documents: ``{"deployer": ..., "execution_role": ..., "execution_role_trust": ...}``
    (see the builders).

    Raises:
        ConfigError: an argument is not a valid name, path, region, account or prefix.
    """
    return {
        "deployer": deployer_policy(bucket, region=region, account=account, prefix=prefix, role_name=role_name,
                                    role_path=role_path, endpoint_name=endpoint_name, create_bucket=create_bucket),
        "execution_role": execution_role_policy(bucket, region=region, account=account, prefix=prefix),
        "execution_role_trust": execution_role_trust_policy(),
    }
