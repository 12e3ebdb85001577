"""A CloudFormation template of one deployment, from a spec or from a deployed endpoint.

The template holds ``AWS::SageMaker::Model``, ``EndpointConfig`` and ``Endpoint``
(``RetainAllVariantProperties: true``, so that a stack update keeps a scaled-out
instance count), plus an ``AWS::ApplicationAutoScaling::ScalableTarget`` and a
target-tracking ``ScalingPolicy`` when there is scaling. Its properties come from
the CreateModel and CreateEndpointConfig requests a deploy sends
(``requests.model_request`` and ``requests.endpoint_config_request``), whose keys
are CloudFormation's property names for these resources, so the two cannot
drift. The role, the artifact bucket and prefix, the image and the endpoint's
name are template parameters. Building the template is pure; only
:func:`endpoint_template` reads AWS, through the clients it is given.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from inf2_serving.contract import DTYPES, ENDPOINT_NAME

from ..spec.deployment_spec import DeploymentSpec
from ..spec.planner import Plan
from .requests import endpoint_config_request, model_request
from .scaling import DIMENSION, NAMESPACE, find_target, resource_id, target_tracking

__all__ = [
    "MODEL_KEYS",
    "VARIANT_KEYS",
    "CONFIG_KEYS",
    "build_template",
    "spec_template",
    "endpoint_template",
]

#: What the template keeps of a CreateModel request or a DescribeModel answer: the settings a deploy makes.
MODEL_KEYS = ("PrimaryContainer", "ExecutionRoleArn", "VpcConfig", "EnableNetworkIsolation")
#: Likewise for a production variant (RoutingConfig is set when the endpoint may scale out).
VARIANT_KEYS = ("VariantName", "InstanceType", "InitialInstanceCount", "ContainerStartupHealthCheckTimeoutInSeconds",
                "ModelDataDownloadTimeoutInSeconds", "VolumeSizeInGB", "InferenceAmiVersion", "RoutingConfig")
#: Likewise for the endpoint config.
CONFIG_KEYS = ("KmsKeyId", "DataCaptureConfig")
_CONTAINER_KEYS = ("Image", "ModelDataSource", "Environment")
_CACHE_ENV = "NEURON_COMPILE_CACHE_URL"
_BUCKET_PARAM = "${ArtifactBucket}"
# Tags under these prefixes are not carried over: ours record what an inf2-deploy deploy made (a stack's
# resources belong to CloudFormation; `list` and delete's leftover sweep go by them), aws: ones are reserved.
_DROPPED_TAG_PREFIXES = ("inf2-deploy:", "aws:")


def _parameters(*, role: str | None, bucket: str | None, model_data_uri: str | None, image: str | None,
                endpoint_name: str) -> dict[str, Any]:
    def parameter(description: str, default: str | None, **extra: str) -> dict[str, Any]:
        found = {"Type": "String", "Description": description, **extra}
        return {**found, "Default": default} if default else found

    return {
        "ExecutionRoleArn": parameter("IAM role SageMaker assumes to read the artifact and the image", role,
                                      AllowedPattern=r"^arn:aws[a-z-]*:iam::\d{12}:role/.+$"),
        "ArtifactBucket": parameter("S3 bucket of the artifact and of the Neuron compile cache", bucket),
        "ModelDataUri": parameter("S3 prefix of the packaged artifact (s3://BUCKET/PREFIX/, ending in /)",
                                  model_data_uri, AllowedPattern=r"^s3://.+/$"),
        "ImageUri": parameter("LMI djl-neuronx container image", image),
        "EndpointName": parameter("SageMaker endpoint name", endpoint_name,
                                  AllowedPattern=ENDPOINT_NAME.pattern),
    }


def _cache_url(url: str, bucket: str | None) -> Any:
    """The compile cache URL, on the ArtifactBucket parameter when it lies in the artifact's bucket."""
    if _BUCKET_PARAM in url:
        return {"Fn::Sub": url}
    if bucket and url.startswith(f"s3://{bucket}/"):
        return {"Fn::Sub": f"s3://{_BUCKET_PARAM}/" + url.removeprefix(f"s3://{bucket}/")}
    return url


def _model_properties(model: Mapping[str, Any], bucket: str | None) -> dict[str, Any]:
    container = {key: model["PrimaryContainer"][key] for key in _CONTAINER_KEYS if key in model["PrimaryContainer"]}
    environment = dict(container.get("Environment", {}))
    if _CACHE_ENV in environment:
        environment[_CACHE_ENV] = _cache_url(environment[_CACHE_ENV], bucket)
    source = container["ModelDataSource"]["S3DataSource"]
    container.update(Image={"Ref": "ImageUri"}, Environment=environment,
                     ModelDataSource={"S3DataSource": {**source, "S3Uri": {"Ref": "ModelDataUri"}}})
    properties = {key: model[key] for key in MODEL_KEYS if model.get(key)}
    return {**properties, "PrimaryContainer": container, "ExecutionRoleArn": {"Ref": "ExecutionRoleArn"}}


def _config_properties(config: Mapping[str, Any]) -> dict[str, Any]:
    variants = [{**{key: variant[key] for key in VARIANT_KEYS if key in variant},
                 "ModelName": {"Fn::GetAtt": ["Model", "ModelName"]}} for variant in config["ProductionVariants"]]
    return {**{key: config[key] for key in CONFIG_KEYS if config.get(key)}, "ProductionVariants": variants}


def _scaling_resources(target: Mapping[str, Any], policy: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "ScalableTarget": {"Type": "AWS::ApplicationAutoScaling::ScalableTarget", "Properties": {
            "ServiceNamespace": NAMESPACE, "ScalableDimension": DIMENSION,
            "ResourceId": {"Fn::Sub": resource_id("${Endpoint.EndpointName}")},
            "MinCapacity": target["MinCapacity"], "MaxCapacity": target["MaxCapacity"]}},
        "ScalingPolicy": {"Type": "AWS::ApplicationAutoScaling::ScalingPolicy", "Properties": {
            "PolicyName": {"Fn::Sub": "${Endpoint.EndpointName}-target-tracking"},
            "PolicyType": "TargetTrackingScaling", "ScalingTargetId": {"Ref": "ScalableTarget"},
            "TargetTrackingScalingPolicyConfiguration": dict(policy)}},
    }


def build_template(model: Mapping[str, Any], config: Mapping[str, Any], *, endpoint_name: str,
                   bucket: str | None, model_data_uri: str | None, tags: Mapping[str, str],
                   scaling: tuple[Mapping[str, Any], Mapping[str, Any]] | None = None,
                   description: str = "") -> dict[str, Any]:
    """The template, as a dict ready for YAML or JSON.

    Args:
        model: a CreateModel request or a DescribeModel answer.
        config: a CreateEndpointConfig request or a DescribeEndpointConfig answer.
        endpoint_name: the EndpointName parameter's default.
        bucket: the ArtifactBucket parameter's default; None leaves it to whoever creates the stack.
        model_data_uri: the ModelDataUri parameter's default; likewise.
        tags: tags of all three SageMaker resources (inf2-deploy's own and ``aws:`` ones are dropped).
        scaling: the scalable target's MinCapacity and MaxCapacity, and the policy's
            TargetTrackingScalingPolicyConfiguration; None for a fixed instance count.
        description: the template's Description.
    """
    kept = [{"Key": key, "Value": value} for key, value in tags.items() if not key.startswith(_DROPPED_TAG_PREFIXES)]
    tagged = {"Tags": kept} if kept else {}
    resources: dict[str, Any] = {
        "Model": {"Type": "AWS::SageMaker::Model", "Properties": {**_model_properties(model, bucket), **tagged}},
        "EndpointConfig": {"Type": "AWS::SageMaker::EndpointConfig",
                           "Properties": {**_config_properties(config), **tagged}},
        "Endpoint": {"Type": "AWS::SageMaker::Endpoint", "Properties": {
            "EndpointName": {"Ref": "EndpointName"},
            "EndpointConfigName": {"Fn::GetAtt": ["EndpointConfig", "EndpointConfigName"]},
            "RetainAllVariantProperties": True, **tagged}},
    }
    if scaling is not None:
        resources.update(_scaling_resources(*scaling))
    parameters = _parameters(role=model.get("ExecutionRoleArn"), bucket=bucket, model_data_uri=model_data_uri,
                             image=model["PrimaryContainer"].get("Image"), endpoint_name=endpoint_name)
    return {
        "AWSTemplateFormatVersion": "2010-09-09",
        **({"Description": description} if description else {}),
        "Parameters": parameters,
        "Resources": resources,
        "Outputs": {"EndpointName": {"Value": {"Fn::GetAtt": ["Endpoint", "EndpointName"]}}},
    }


def spec_template(spec: DeploymentSpec, plan: Plan, *, endpoint_name: str) -> dict[str, Any]:
    """The template of what deploying ``spec`` would create.

    The artifact is not built: ModelDataUri has no default, and without ``spec.volume_size_gb``
    the volume is sized from the weights' bytes in the spec's dtype, as a deploy sizes it from
    the artifact.
    """
    cache = spec.compile_cache_url or f"s3://{_BUCKET_PARAM}/{spec.prefix}/neuron-cache/"
    model = model_request(spec, name="", image_uri=plan.image_uri or "", model_data_uri="s3://unknown/",
                          compile_cache_url=cache)
    weights = plan.model.parameters * DTYPES[spec.dtype].itemsize
    config = endpoint_config_request(spec, name="", model_name="", artifact_bytes=weights,
                                     instance_type=plan.instance.name if plan.instance else "")
    scaling = None
    if spec.scaling is not None:
        scaling = ({"MinCapacity": spec.scaling.min_instances, "MaxCapacity": spec.scaling.max_instances},
                   target_tracking(spec.scaling, spec.batch_size))
    return build_template(model, config, endpoint_name=endpoint_name, bucket=spec.bucket, model_data_uri=None,
                          tags=spec.tags, scaling=scaling,
                          description=f"inf2-deploy: {spec.model} on {plan.instance.name if plan.instance else '?'}")


def _described_scaling(autoscaling: Any, endpoint_name: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The endpoint variant's scalable target and its first target-tracking policy, or None."""
    from .session import aws_errors

    target = find_target(autoscaling, endpoint_name)
    if target is None:
        return None
    with aws_errors(f"application-autoscaling:DescribeScalingPolicies {endpoint_name}"):
        pages = autoscaling.get_paginator("describe_scaling_policies").paginate(
            ServiceNamespace=NAMESPACE, ResourceId=resource_id(endpoint_name), ScalableDimension=DIMENSION)
        policies = [policy for page in pages for policy in page["ScalingPolicies"]
                    if policy["PolicyType"] == "TargetTrackingScaling"]
    return (target, policies[0]["TargetTrackingScalingPolicyConfiguration"]) if policies else None


def endpoint_template(sagemaker: Any, autoscaling: Any, endpoint_name: str, *, region: str) -> dict[str, Any]:
    """The template of the deployed endpoint ``endpoint_name``: its config, model, tags and scaling.

    Args:
        sagemaker: a SageMaker client of the endpoint's region.
        autoscaling: an Application Auto Scaling client of the same region.
        endpoint_name: the endpoint.
        region: its region, for the error naming the endpoints there.

    Raises:
        EndpointNotFoundError: there is no such endpoint (exit 2).
        AwsError: a describe call failed, or the endpoint's config or model is gone.
    """
    from ..errors import AwsError
    from .endpoint import find_endpoint, missing_endpoint
    from .resources import describe_config, describe_model, tags_of

    endpoint = find_endpoint(sagemaker, endpoint_name)
    if endpoint is None:
        raise missing_endpoint(sagemaker, endpoint_name, region)
    config = describe_config(sagemaker, endpoint.config_name or "")
    model_name = config["ProductionVariants"][0]["ModelName"] if config else ""
    model = describe_model(sagemaker, model_name) if config else None
    if config is None or model is None:
        missing = f"model {model_name}" if config else f"endpoint config {endpoint.config_name}"
        raise AwsError(f"endpoint {endpoint_name}'s {missing} no longer exists; redeploy it to export it")
    model_data_uri = model["PrimaryContainer"]["ModelDataSource"]["S3DataSource"]["S3Uri"]
    bucket = model_data_uri.removeprefix("s3://").partition("/")[0]
    return build_template(model, config, endpoint_name=endpoint_name, bucket=bucket, model_data_uri=model_data_uri,
                          tags=tags_of(sagemaker, endpoint.arn or ""),
                          scaling=_described_scaling(autoscaling, endpoint_name),
                          description=f"inf2-deploy: endpoint {endpoint_name} as deployed in {region}")
