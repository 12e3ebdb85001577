"""Delete a deployment: its endpoint, endpoint config and models, and on request its artifacts in S3.

A delete that stopped midway (a lost connection, Ctrl-C) may leave a config
or a model without its endpoint; deleting the same name again finds those by
their tags and finishes the job.

Purging deletes every artifact prefix the endpoint deployed, as its models and
its artifact index (:class:`~inf2_deploy.aws.artifact_store.ArtifactIndex`)
name them, except those another live model still reads: two endpoints deployed
with the same settings share one prefix (see
:func:`~inf2_deploy.aws.artifact_store.purge_unused`).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..clock import Clock
from ..errors import AwsError
from ..status import DeploymentStatus
from .artifact_store import ArtifactIndex, model_data_uris, purge_unused
from .endpoint import Endpoint, find_endpoint, missing_endpoint
from .requests import TAG_ENDPOINT, TAG_MANAGED
from .resources import Resource, delete_resources, describe_config, describe_model, tags_of
from .scaling import deregister, find_target, resource_id
from .session import Session, aws_errors, make_session

__all__ = ["Teardown", "delete_deployment"]

# (kind, list operation, answer key, name key, ARN key) of what a deploy leaves besides its endpoint
_LEFTOVER_KINDS = (
    ("endpoint config", "list_endpoint_configs", "EndpointConfigs", "EndpointConfigName", "EndpointConfigArn"),
    ("model", "list_models", "Models", "ModelName", "ModelArn"),
)


@dataclass(frozen=True)
class Teardown(Sequence[str]):
    """What a delete removed (or, in a dry run, would remove) and what it kept.

    As a sequence it is ``deleted``: ``teardown[0] == "endpoint E"`` when E was not autoscaled.
    """

    #: ``"scalable target endpoint/E/variant/AllTraffic"``, ``"endpoint E"``, ``"endpoint config C"``,
    #: ``"model M"``, ``"N S3 objects under s3://..."``,
    #: ``"artifact index s3://..."``, in the order they go
    deleted: tuple[str, ...]
    #: artifact prefixes left in place, each with the live models that read it
    kept: tuple[str, ...] = ()
    #: nothing was deleted: ``deleted`` is what would have been
    dry_run: bool = False

    def __getitem__(self, index: int | slice) -> str | tuple[str, ...]:  # type: ignore[override]
        return self.deleted[index]

    def __len__(self) -> int:
        return len(self.deleted)


def delete_deployment(
    name: str,
    *,
    purge_artifacts: bool = False,
    dry_run: bool = False,
    wait: bool = False,
    session: Session | None = None,
    clock: Clock | None = None,
) -> Teardown:
    """Delete endpoint ``name``'s scalable target, then the endpoint, its endpoint config and its model(s).

    Args:
        name: the endpoint name.
        purge_artifacts: also delete every artifact prefix the endpoint deployed (its models' and
            those its artifact index records) that no other model reads; the others are kept
            and named in ``Teardown.kept``.
        dry_run: delete nothing; ``Teardown.deleted`` lists what would go.
        wait: when the endpoint is still Creating or Updating, wait for it to settle, then delete.
        session: AWS session; default: the standard resolution.
        clock: time source for the wait.

    Returns:
        What was deleted and what was kept, e.g. deleted ``("endpoint E", "endpoint config C",
        "model M", "3 S3 objects under s3://...")``.

    When the endpoint is gone but configs or models this toolkit made for it remain (an
    earlier delete stopped midway), those are deleted.

    Raises:
        EndpointNotFoundError: no such endpoint and nothing left of one (exit code 2).
        AwsError: the endpoint is still being created and neither ``wait`` nor ``dry_run`` is set
            (code ``EndpointBusy``), or a call failed.
    """
    session = session or make_session()
    sagemaker = session.client("sagemaker")
    endpoint = find_endpoint(sagemaker, name)
    if endpoint is None:
        # An earlier delete (or deploy) may have stopped after the endpoint went, leaving its
        # config and model behind: finish the job instead of saying there is nothing.
        resources = _leftovers(sagemaker, name)
        if not resources:
            raise missing_endpoint(sagemaker, name, session.region)
    else:
        if not dry_run:
            _settle(endpoint, wait=wait, clock=clock)
        resources = _resources(sagemaker, endpoint)
    models = [resource_name for kind, resource_name in resources if kind == "model"]
    s3 = session.client("s3")
    # Read before the models go: they say where the artifacts and the index are.
    artifacts, indexes = _artifacts(s3, sagemaker, name, models) if purge_artifacts else ([], [])
    # Deregistered first: no scalable target may outlive its endpoint (its policies go with it).
    autoscaling = session.client("application-autoscaling")
    target = [f"scalable target {resource_id(name)}"]
    if dry_run:
        deleted = target * (find_target(autoscaling, name) is not None)
        deleted += [f"{kind} {resource_name}" for kind, resource_name in resources]
    else:
        deleted = target * deregister(autoscaling, name) + delete_resources(sagemaker, resources)
    if not purge_artifacts:
        return Teardown(tuple(deleted), dry_run=dry_run)
    # The models just deleted do not count as users (a dry run still sees them; the listing may too).
    purge = purge_unused(s3, sagemaker, artifacts, ignore_models=models, dry_run=dry_run)
    # The index goes even when a prefix is kept: its readers are other endpoints' models, which their
    # own indexes record, or models of this one that a delete left, which name the prefix themselves.
    if not dry_run:
        for index in indexes:
            index.delete()
    kept = tuple(f"{uri} (used by model {', '.join(users)})" for uri, users in purge.kept.items())
    return Teardown((*deleted, *purge.deleted, *(f"artifact index {index.uri}" for index in indexes)), kept, dry_run)


def _resources(sagemaker: Any, endpoint: Endpoint) -> list[Resource]:
    """The endpoint, then its current config, then the config's models."""
    config = describe_config(sagemaker, endpoint.config_name or "")
    resources: list[Resource] = [("endpoint", endpoint.name)]
    if config:
        resources.append(("endpoint config", config["EndpointConfigName"]))
        resources += [("model", variant["ModelName"]) for variant in config["ProductionVariants"]]
    return resources


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


def _artifacts(s3: Any, sagemaker: Any, name: str, models: list[str]) -> tuple[list[str], list[ArtifactIndex]]:
    """The artifact prefixes endpoint ``name`` deployed, and the indexes that recorded some.

    The models name their prefixes; beside each, under the same prefix root, the endpoint's
    index names those of its earlier deploys.
    """
    uris = _artifact_uris(sagemaker, models)
    found, indexes = [], []
    for uri in uris:
        index = ArtifactIndex.beside(s3, uri, name)
        if index not in indexes and (recorded := index.read()):
            indexes.append(index)
            found += recorded
    return list(dict.fromkeys([*found, *uris])), indexes  # oldest first, as the indexes list them


def _artifact_uris(sagemaker: Any, model_names: list[str]) -> list[str]:
    """The S3 prefixes the models read their artifact from (models already gone are skipped)."""
    uris = []
    for model_name in model_names:
        uris += model_data_uris(describe_model(sagemaker, model_name) or {})
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
