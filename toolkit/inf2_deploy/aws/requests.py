"""The SageMaker requests of one deploy, as pure functions of the spec: no client, no clock.

Tests assert the exact CreateModel and CreateEndpointConfig requests from
these. :func:`build_requests` puts them together with the names and tags one
deploy uses; the time that makes the names unique is passed in.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from inf2_serving.contract import VARIANT_NAME

from ..spec.deployment_spec import DeploymentSpec
from ..spec.planner import Plan
from ..spec.scaling import ScalingSpec
from ..version import __version__

__all__ = [
    "TAG_MANAGED",
    "TAG_VERSION",
    "TAG_FINGERPRINT",
    "TAG_SETTINGS",
    "TAG_MODEL_SETTINGS",
    "TAG_ENDPOINT",
    "CAPTURED_JSON_TYPES",
    "DEFAULT_CAPTURE_PERCENT",
    "DeployRequests",
    "build_requests",
    "data_capture_config",
    "endpoint_config_request",
    "model_request",
    "resource_name",
    "resource_tags",
    "settings_digest",
    "model_digest",
    "config_for_model",
    "volume_size_gb",
]

TAG_MANAGED = "inf2-deploy:managed"
TAG_VERSION = "inf2-deploy:version"
TAG_FINGERPRINT = "inf2-deploy:fingerprint"
TAG_SETTINGS = "inf2-deploy:settings"
#: the model request's own digest: an update that changes only the endpoint config keeps the model
TAG_MODEL_SETTINGS = "inf2-deploy:model-settings"
TAG_ENDPOINT = "inf2-deploy:endpoint"
MAX_NAME = 63
#: InitialSamplingPercentage without ``capture_percent``: the SageMaker SDK's DataCaptureConfig default
DEFAULT_CAPTURE_PERCENT = 20
#: content types data capture stores as text: LMI's request and response, and its streamed lines
CAPTURED_JSON_TYPES = ("application/json", "application/jsonlines")


def resource_name(endpoint_name: str, fingerprint: str, now: datetime) -> str:
    """``<endpoint>-<fingerprint[:8]>-<UTC yyyymmddHHMMSSmmm>``, cut to SageMaker's 63 characters.

    Models and endpoint configs get such names, unique per deploy, so a new
    config can be created while the old one still serves traffic. Milliseconds
    keep two deploys started within one second apart.
    """
    short = re.sub(r"[^a-zA-Z0-9]", "", fingerprint)[:8] or "0"
    utc = now.astimezone(timezone.utc)
    suffix = f"-{short}-{utc:%Y%m%d%H%M%S}{utc.microsecond // 1000:03d}"
    base = endpoint_name[: MAX_NAME - len(suffix)].rstrip("-")
    return base + suffix


def volume_size_gb(artifact_bytes: int) -> int:
    """The endpoint's EBS volume for an artifact of ``artifact_bytes``.

    The volume holds the downloaded weights (1x), the copy transformers-neuronx
    writes while splitting them per layer for loading (about 1x), and the
    compiled graphs plus the local Neuron compile cache (up to about 1x for
    GPT-J's buckets): 3x the artifact, plus 10 GB for the container's logs and
    scratch, and never under 30 GB.
    """
    return max(30, math.ceil(3 * artifact_bytes / 1e9) + 10)


def resource_tags(spec: DeploymentSpec, *, endpoint_name: str, fingerprint: str, settings: str,
                  model_settings: str) -> list[dict]:
    """The tags every resource of one deploy carries: ours first, then the spec's."""
    ours = {
        TAG_MANAGED: "true",
        TAG_VERSION: __version__,
        TAG_FINGERPRINT: fingerprint,
        TAG_SETTINGS: settings,
        TAG_MODEL_SETTINGS: model_settings,
        TAG_ENDPOINT: endpoint_name,
    }
    extra = {key: value for key, value in spec.tags.items() if key not in ours}
    return [{"Key": key, "Value": value} for key, value in {**ours, **extra}.items()]


def model_request(
    spec: DeploymentSpec,
    *,
    name: str,
    image_uri: str,
    model_data_uri: str,
    compile_cache_url: str,
    hf_token: str | None = None,
) -> dict[str, Any]:
    """The CreateModel request, without tags.

    Args:
        spec: the deployment.
        name: the model name (see ``resource_name``).
        image_uri: the LMI djl-neuronx image.
        model_data_uri: the artifact's S3 prefix; a trailing slash is added if missing.
        compile_cache_url: NEURON_COMPILE_CACHE_URL for the container.
        hf_token: passed as HF_TOKEN only when given. DescribeModel shows it to
            anyone with read access, so pass it only for gated weights.
    """
    environment = {"NEURON_COMPILE_CACHE_URL": compile_cache_url}
    if spec.neuron_cc_flags:
        environment["NEURON_CC_FLAGS"] = spec.neuron_cc_flags
    environment.update(spec.env)
    if hf_token:
        environment["HF_TOKEN"] = hf_token
    request: dict[str, Any] = {
        "ModelName": name,
        "PrimaryContainer": {
            "Image": image_uri,
            "ModelDataSource": {
                "S3DataSource": {
                    "S3Uri": model_data_uri.rstrip("/") + "/",
                    "S3DataType": "S3Prefix",
                    "CompressionType": "None",
                }
            },
            "Environment": environment,
        },
        "ExecutionRoleArn": spec.role_arn,
    }
    if spec.subnets or spec.security_group_ids:
        request["VpcConfig"] = {"Subnets": list(spec.subnets), "SecurityGroupIds": list(spec.security_group_ids)}
    if spec.enable_network_isolation:
        request["EnableNetworkIsolation"] = True
    return request


def endpoint_config_request(
    spec: DeploymentSpec, *, name: str, model_name: str, instance_type: str, artifact_bytes: int
) -> dict[str, Any]:
    """The CreateEndpointConfig request, without tags: one variant taking all traffic (routed to the least
    busy instance when there may be several), the spec's KMS key on its storage volume, and data capture
    when the spec asks for it."""
    variant: dict[str, Any] = {
        "VariantName": VARIANT_NAME,
        "ModelName": model_name,
        "InstanceType": instance_type,
        "InitialInstanceCount": spec.instance_count,
        # Neuron compilation runs inside the container before /ping turns healthy.
        "ContainerStartupHealthCheckTimeoutInSeconds": spec.startup_health_check_timeout,
        "ModelDataDownloadTimeoutInSeconds": spec.model_download_timeout,
        "VolumeSizeInGB": spec.volume_size_gb or volume_size_gb(artifact_bytes),
    }
    if spec.inference_ami_version:
        variant["InferenceAmiVersion"] = spec.inference_ami_version
    if (spec.scaling.max_instances if spec.scaling else spec.instance_count) > 1:
        # A long generation holds an instance for seconds: send each request to the least busy one.
        variant["RoutingConfig"] = {"RoutingStrategy": "LEAST_OUTSTANDING_REQUESTS"}
    request: dict[str, Any] = {"EndpointConfigName": name, "ProductionVariants": [variant]}
    if spec.kms_key_id:
        # The ML storage volume, where the weights and compiled graphs land (inf2 has no local NVMe).
        request["KmsKeyId"] = spec.kms_key_id
    capture = data_capture_config(spec)
    if capture is not None:
        request["DataCaptureConfig"] = capture
    return request


def data_capture_config(spec: DeploymentSpec) -> dict[str, Any] | None:
    """The endpoint config's DataCaptureConfig, or None without ``spec.data_capture_uri``.

    Requests and responses are both captured; LMI's JSON and JSON lines are
    captured as text rather than base64. The spec's KMS key, when given, also
    encrypts what is captured.
    """
    if spec.data_capture_uri is None:
        return None
    capture: dict[str, Any] = {
        "EnableCapture": True,
        "InitialSamplingPercentage": spec.capture_percent or DEFAULT_CAPTURE_PERCENT,
        "DestinationS3Uri": spec.data_capture_uri,
        "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
        "CaptureContentTypeHeader": {"JsonContentTypes": list(CAPTURED_JSON_TYPES)},
    }
    if spec.kms_key_id:
        capture["KmsKeyId"] = spec.kms_key_id
    return capture


def _model_payload(model: dict[str, Any]) -> dict[str, Any]:
    """The model request without its name, and with HF_TOKEN's presence but not its value."""
    container = dict(model["PrimaryContainer"])
    environment = dict(container["Environment"])
    if "HF_TOKEN" in environment:  # a token's presence matters, its value must not leave a trace
        environment["HF_TOKEN"] = "<set>"
    container["Environment"] = environment
    return {**{k: v for k, v in model.items() if k != "ModelName"}, "PrimaryContainer": container}


def _digest(payload: dict[str, Any]) -> str:
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def model_digest(model: dict[str, Any]) -> str:
    """A short hash of what the model request configures (image, artifact, environment, role),
    names and secrets aside: equal digests mean the running model can serve the new config."""
    return _digest(_model_payload(model))


def settings_digest(model: dict[str, Any], config: dict[str, Any]) -> str:
    """A short hash of what the model and config requests configure, names and secrets aside.

    Two deploys with the same fingerprint and digest would run the same thing,
    so the second one is a no-op.
    """
    variants = [{k: v for k, v in variant.items() if k != "ModelName"} for variant in config["ProductionVariants"]]
    return _digest({
        "model": _model_payload(model),
        "config": {**{k: v for k, v in config.items() if k != "EndpointConfigName"},
                   "ProductionVariants": variants},
    })


@dataclass(frozen=True)
class DeployRequests:
    """Everything one deploy asks SageMaker for, before any call is made."""

    endpoint_name: str
    #: the model's and the endpoint config's name (see ``resource_name``)
    name: str
    fingerprint: str
    #: ``settings_digest`` of the two requests
    settings: str
    #: ``model_digest`` of the model request
    model_settings: str
    #: CreateModel and CreateEndpointConfig, without tags (the model holds HF_TOKEN when given)
    model: dict[str, Any] = field(repr=False)
    config: dict[str, Any] = field(repr=False)
    tags: list[dict] = field(repr=False)
    #: the autoscaling to apply once the endpoint is InService, its target resolved; None: a fixed count
    scaling: ScalingSpec | None = None


def build_requests(
    spec: DeploymentSpec,
    plan: Plan,
    *,
    endpoint_name: str,
    fingerprint: str,
    artifact_bytes: int,
    model_data_uri: str,
    bucket: str,
    now: datetime,
    hf_token: str | None = None,
) -> DeployRequests:
    """The requests for deploying the artifact at ``model_data_uri`` as ``endpoint_name``.

    Args:
        spec: the deployment.
        plan: its checked plan (the image and the instance type).
        endpoint_name: the endpoint to create or update.
        fingerprint: the artifact's fingerprint, tagged and part of the names.
        artifact_bytes: the artifact's size, for the volume.
        model_data_uri: the artifact's S3 prefix.
        bucket: the artifact bucket; the Neuron compile cache defaults to ``s3://bucket/<prefix>/neuron-cache/``.
        now: the deploy's start, for the names.
        hf_token: see ``model_request``.
    """
    name = resource_name(endpoint_name, fingerprint, now)
    model = model_request(spec, name=name, image_uri=plan.image_uri or "", model_data_uri=model_data_uri,
                          compile_cache_url=spec.compile_cache_url or f"s3://{bucket}/{spec.prefix}/neuron-cache/",
                          hf_token=hf_token)
    config = endpoint_config_request(spec, name=name, model_name=name,
                                     instance_type=plan.instance.name if plan.instance else "",
                                     artifact_bytes=artifact_bytes)
    digest, model_settings = settings_digest(model, config), model_digest(model)
    tags = resource_tags(spec, endpoint_name=endpoint_name, fingerprint=fingerprint, settings=digest,
                         model_settings=model_settings)
    scaling = spec.scaling and spec.scaling.model_copy(update={"target": spec.scaling.target_for(spec.batch_size)})
    return DeployRequests(endpoint_name, name, fingerprint, digest, model_settings, model, config, tags, scaling)


def config_for_model(config: dict[str, Any], model_name: str) -> dict[str, Any]:
    """``config`` (a CreateEndpointConfig request) with every variant serving ``model_name``."""
    return {**config, "ProductionVariants": [{**variant, "ModelName": model_name}
                                             for variant in config["ProductionVariants"]]}
