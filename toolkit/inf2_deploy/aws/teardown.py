"""Delete a deployment: its endpoint, endpoint config and models, and on request the artifact in S3.

A delete that stopped midway (a lost connection, Ctrl-C) may leave a config
or a model without its endpoint; deleting the same name again finds those by
their tags and finishes the job.
"""
from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from ..clock import Clock
from ..errors import AwsError
from ..status import DeploymentStatus
from .endpoint import Endpoint, find_endpoint, missing_endpoint
from .requests import TAG_ENDPOINT, TAG_MANAGED
from .resources import Resource, delete_resources, describe_config, tags_of
from .s3 import delete_prefix, split_s3_uri
from .session import Session, aws_errors, is_not_found, make_session

__all__ = ["delete_deployment"]

# (kind, list operation, answer key, name key, ARN key) of what a deploy leaves besides its endpoint
_LEFTOVER_KINDS = (
    ("endpoint config", "list_endpoint_configs", "EndpointConfigs", "EndpointConfigName", "EndpointConfigArn"),
    ("model", "list_models", "Models", "ModelName", "ModelArn"),
)


def delete_deployment(
    name: str,
    *,
    purge_artifacts: bool = False,
    wait: bool = False,
    session: Session | None = None,
    clock: Clock | None = None,
) -> list[str]:
    """Delete endpoint ``name``, its endpoint config and its model(s).

    Args:
        name: the endpoint name.
        purge_artifacts: also delete the artifact objects the model read from S3.
        wait: when the endpoint is still Creating or Updating, wait for it to settle, then delete.
        session: AWS session; default: the standard resolution.
        clock: time source for the wait.

    Returns:
        What was deleted, e.g. ``["endpoint E", "endpoint config C", "model M", "3 S3 objects under s3://..."]``.

    When the endpoint is gone but configs or models this toolkit made for it remain (an
    earlier delete stopped midway), those are deleted.

    Raises:
        EndpointNotFoundError: no such endpoint and nothing left of one (exit code 2).
        AwsError: the endpoint is still being created and ``wait`` is false (code
            ``EndpointBusy``), or a call failed.
    """
    session = session or make_session()
    sagemaker = session.client("sagemaker")
    endpoint = find_endpoint(sagemaker, name)
    if endpoint is None:
        # An earlier delete (or deploy) may have stopped after the endpoint went, leaving its
        # config and model behind: finish the job instead of saying there is nothing.
        leftovers = _leftovers(sagemaker, name)
        if not leftovers:
            raise missing_endpoint(sagemaker, name, session.region)
        return delete_resources(sagemaker, leftovers)
    _settle(endpoint, wait=wait, clock=clock)
    config = describe_config(sagemaker, endpoint.config_name or "")
    model_names = [variant["ModelName"] for variant in config["ProductionVariants"]] if config else []
    artifact_uris = _artifact_uris(sagemaker, model_names) if purge_artifacts else []
    resources: list[Resource] = [("endpoint", name)]
    if config:
        resources.append(("endpoint config", config["EndpointConfigName"]))
    resources += [("model", model_name) for model_name in model_names]
    deleted = delete_resources(sagemaker, resources)
    for uri in artifact_uris:
        bucket, prefix = split_s3_uri(uri)
        deleted.append(f"{delete_prefix(session.client('s3'), bucket, prefix)} S3 objects under {uri}")
    return deleted


def _settle(endpoint: Endpoint, *, wait: bool, clock: Clock | None) -> None:
    """Return once SageMaker would accept a delete: at once, or after waiting out Creating/Updating."""
    if endpoint.status not in (DeploymentStatus.CREATING, DeploymentStatus.UPDATING):
        return
    if not wait:
        state = endpoint.status.value
        raise AwsError(
            f"endpoint {endpoint.name} is {state}: SageMaker refuses to delete it until it leaves {state}",
            code="EndpointBusy", hint=f"run `inf2-deploy delete {endpoint.name} --wait` to wait for that and then "
                                      "delete it")
    endpoint.wait(clock=clock, raise_on_failure=False)


def _artifact_uris(sagemaker: Any, model_names: list[str]) -> list[str]:
    """The S3 prefixes the models read their artifact from (models already gone are skipped)."""
    uris = []
    for model_name in model_names:
        with aws_errors(f"sagemaker:DescribeModel {model_name}"):
            try:
                described = sagemaker.describe_model(ModelName=model_name)
            except ClientError as exc:
                if not is_not_found(exc):
                    raise
                continue
        source = described.get("PrimaryContainer", {}).get("ModelDataSource", {}).get("S3DataSource", {})
        if source.get("S3Uri"):
            uris.append(source["S3Uri"])
    return uris


def _leftovers(sagemaker: Any, name: str) -> list[Resource]:
    """Endpoint configs, then models, that this toolkit made for endpoint ``name``."""
    found: list[Resource] = []
    for kind, operation, key, name_key, arn_key in _LEFTOVER_KINDS:
        with aws_errors(f"sagemaker:{operation} {name}-*"):
            items = [item for page in sagemaker.get_paginator(operation).paginate(NameContains=name)
                     for item in page.get(key, []) if item[name_key].startswith(f"{name}-")]
        for item in items:
            tags = tags_of(sagemaker, item[arn_key])
            if tags.get(TAG_MANAGED) == "true" and tags.get(TAG_ENDPOINT) == name:
                found.append((kind, item[name_key]))
    return found
