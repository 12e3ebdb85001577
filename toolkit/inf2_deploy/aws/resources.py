"""SageMaker models, endpoint configs and endpoints by name: tags, describe, create and delete.

Shared by the deployer, delete and list. Every call turns botocore's errors
into ours, and "not found" is an answer here, not a failure: a delete of
something already gone is a no-op, so a rollback or a rerun of an interrupted
delete can go by name alone.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from botocore.exceptions import ClientError

from .session import aws_errors, error_code, is_not_found

__all__ = ["Resource", "create_resource", "delete_resource", "delete_resources", "describe_config", "describe_model",
           "tags_of"]

#: ``(kind, name)``; kind is ``"model"``, ``"endpoint config"`` or ``"endpoint"``
Resource = tuple[str, str]

_DELETE_CALLS = {
    "endpoint": ("delete_endpoint", "EndpointName"),
    "endpoint config": ("delete_endpoint_config", "EndpointConfigName"),
    "model": ("delete_model", "ModelName"),
}


def tags_of(sagemaker: Any, arn: str) -> dict[str, str]:
    """The tags of the resource ``arn``, as a dict.

    Raises:
        AwsError: ListTags failed.
    """
    with aws_errors(f"sagemaker:ListTags {arn}"):
        tags = sagemaker.list_tags(ResourceArn=arn).get("Tags", [])
    return {tag["Key"]: tag["Value"] for tag in tags}


def _found(call: Callable[..., dict[str, Any]], operation: str, **request: str) -> dict[str, Any] | None:
    """``call(**request)``'s answer, or None when SageMaker says there is no such resource."""
    with aws_errors(f"sagemaker:{operation} {next(iter(request.values()))}"):
        try:
            return call(**request)
        except ClientError as exc:
            if is_not_found(exc):
                return None
            raise


def describe_config(sagemaker: Any, name: str) -> dict[str, Any] | None:
    """DescribeEndpointConfig's answer for ``name``, or None when there is no such config.

    Raises:
        AwsError: the call failed for another reason.
    """
    return _found(sagemaker.describe_endpoint_config, "DescribeEndpointConfig", EndpointConfigName=name)


def describe_model(sagemaker: Any, name: str) -> dict[str, Any] | None:
    """DescribeModel's answer for ``name``, or None when there is no such model (or it just went).

    Raises:
        AwsError: the call failed for another reason.
    """
    return _found(sagemaker.describe_model, "DescribeModel", ModelName=name)


def delete_resource(sagemaker: Any, kind: str, name: str) -> bool:
    """Delete one SageMaker resource; False when it was already gone.

    Raises:
        AwsError: the delete failed for another reason.
    """
    operation, key = _DELETE_CALLS[kind]
    with aws_errors(f"sagemaker:{operation} {name}"):
        try:
            getattr(sagemaker, operation)(**{key: name})
        except ClientError as exc:
            if is_not_found(exc):
                return False
            raise
    return True


def delete_resources(sagemaker: Any, resources: Iterable[Resource]) -> list[str]:
    """Delete ``resources`` in the order given; returns ``"<kind> <name>"`` of each that existed."""
    return [f"{kind} {name}" for kind, name in resources if delete_resource(sagemaker, kind, name)]


def create_resource(call: Callable[..., Any], operation: str, name: str, *,
                    ours: Callable[[], bool] | None = None, **request: Any) -> None:
    """One create call, e.g. ``create_resource(sagemaker.create_model, "CreateModel", name, **request)``.

    "Already existing" after botocore retried means the first attempt succeeded
    and its answer was lost: the resource is ours when its name is new to this
    deploy, or when ``ours()`` says so.

    Raises:
        AwsError: the call failed.
    """
    with aws_errors(f"sagemaker:{operation} {name}"):
        try:
            call(**request)
        except ClientError as exc:
            message = str(exc.response.get("Error", {}).get("Message", ""))
            retried = exc.response.get("ResponseMetadata", {}).get("RetryAttempts", 0) > 0
            if not (error_code(exc) == "ValidationException" and "already exist" in message and retried
                    and (ours is None or ours())):
                raise
