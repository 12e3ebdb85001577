"""What a deploy has to do to the endpoint of its name: nothing, retag, create or update.

The endpoint's current config records the last deploy: its fingerprint and
settings tags say what it runs, and its user tags which tags that deploy put on
(see ``tags``). Comparing them with this deploy's requests gives the action:

- no endpoint: create it;
- another artifact or other settings: update it (a new model and config), and
  bring the endpoint's tags to this deploy's;
- the same artifact and settings, other tags: retag the endpoint and its config
  in place (AddTags/DeleteTags), nothing created, nothing uploaded;
- all the same: nothing to do.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

from ..errors import AwsError
from ..status import DeploymentStatus
from .endpoint import Endpoint, find_endpoint
from .requests import TAG_FINGERPRINT, TAG_MANAGED, TAG_MODEL_SETTINGS, TAG_SETTINGS, DeployRequests
from .resources import Resource, describe_config, tags_of
from .tags import TagChanges, declared_user_tags, plan_tags

__all__ = ["Action", "Reconciliation", "check_updatable", "reconcile"]


class Action(str, Enum):
    """What a deploy has to do to the endpoint of its name."""

    NOTHING = "nothing"
    #: same artifact and settings, other tags: AddTags/DeleteTags only
    RETAG = "retag"
    CREATE = "create"
    UPDATE = "update"


@dataclass(frozen=True)
class Reconciliation:
    """What exists under the endpoint's name, and what to do about it."""

    action: Action
    #: the endpoint as found (None when there is none)
    endpoint: Endpoint | None = None
    #: the model the endpoint runs, when there is nothing to do but perhaps retag
    running_model: str | None = None
    #: the config and models an update replaces, deleted once the update is InService
    superseded: tuple[Resource, ...] = ()
    #: tag changes for the endpoint (and, on a retag, its config), applied in this order
    retag: tuple[TagChanges, ...] = ()
    #: on an update that changes only the endpoint config, the running model the new config serves
    reused_model: str | None = None


def reconcile(sagemaker: Any, requests: DeployRequests) -> Reconciliation:
    """Decide from the endpoint named ``requests.endpoint_name``: nothing, retag, create or update.

    Raises:
        AwsError: the endpoint is busy (code ``EndpointBusy``) or failed (``EndpointNotUpdatable``),
            or a call failed.
    """
    existing = find_endpoint(sagemaker, requests.endpoint_name)
    if existing is None:
        return Reconciliation(Action.CREATE)
    check_updatable(existing)
    current = describe_config(sagemaker, existing.config_name or "")
    config_tags = tags_of(sagemaker, current["EndpointConfigArn"]) if current else {}
    managed = config_tags.get(TAG_MANAGED) == "true"
    # Only a config this toolkit made records which user tags the last deploy put on.
    declared = declared_user_tags(config_tags) if managed else set()
    endpoint_tags = plan_tags(existing.arn or "", tags_of(sagemaker, existing.arn or ""), requests.tags,
                              declared=declared)
    same = (config_tags.get(TAG_FINGERPRINT) == requests.fingerprint
            and config_tags.get(TAG_SETTINGS) == requests.settings)
    if current and same:
        running = current["ProductionVariants"][0]["ModelName"]
        config = plan_tags(current["EndpointConfigArn"], config_tags, requests.tags, declared=declared)
        if endpoint_tags.significant or config.significant:
            return Reconciliation(Action.RETAG, existing, running, retag=(endpoint_tags, config))
        return Reconciliation(Action.NOTHING, existing, running_model=running)
    superseded: tuple[Resource, ...] = ()
    reused = None
    if current and managed:
        models = [variant["ModelName"] for variant in current["ProductionVariants"]]
        # Instance type or count, timeouts, KMS, data capture: the model (artifact, image, env) stays.
        if len(models) == 1 and config_tags.get(TAG_MODEL_SETTINGS) == requests.model_settings:
            reused = models[0]
        superseded = (("endpoint config", current["EndpointConfigName"]),
                      *(("model", model) for model in models if model != reused))
    return Reconciliation(Action.UPDATE, existing, superseded=superseded, retag=(endpoint_tags,),
                          reused_model=reused)


def check_updatable(endpoint: Endpoint) -> None:
    """Raise unless SageMaker would accept an UpdateEndpoint of ``endpoint`` now.

    Raises:
        AwsError: the endpoint is busy (code ``EndpointBusy``) or cannot be updated (``EndpointNotUpdatable``).
    """
    name, status = endpoint.name, endpoint.status
    if status is not None and status.transitional:
        raise AwsError(f"endpoint {name} is {status.value}; SageMaker accepts no update until it settles",
                       code="EndpointBusy", hint=f"wait with `inf2-deploy wait {name}`, then deploy again")
    if status is not DeploymentStatus.IN_SERVICE:
        raise AwsError(f"endpoint {name} is {status.value if status else '?'} and cannot be updated",
                       code="EndpointNotUpdatable",
                       hint=f"delete it with `inf2-deploy delete {name}`, then deploy again")
