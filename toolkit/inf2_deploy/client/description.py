"""What ``status`` reports about a deployment, local or on SageMaker."""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from ..status import DeploymentStatus

__all__ = ["TargetDescription"]


@dataclass(frozen=True)
class TargetDescription:
    """What is known about a deployment; fields that do not apply to its kind are None (or empty)."""

    name: str
    kind: str  # "local" or "sagemaker"
    status: DeploymentStatus
    region: str | None = None
    url: str | None = None
    pid: int | None = None
    endpoint_config: str | None = None
    model: str | None = None
    instance_type: str | None = None
    instance_count: int | None = None
    #: instances running now, and those SageMaker is moving to (they differ while scaling)
    current_instances: int | None = None
    desired_instances: int | None = None
    #: ``MIN..MAX instances`` when autoscaling is registered
    autoscaling: str | None = None
    #: ``NAME: METRIC target VALUE`` of each scaling policy
    scaling_policies: tuple[str, ...] = ()
    #: the last scaling activities, newest first: ``START STATUS: DESCRIPTION``
    scaling_activities: tuple[str, ...] = ()
    #: the artifact the deployment serves: a local folder or an s3:// prefix
    artifact: str | None = None
    failure_reason: str | None = None
    created: str | None = None
    modified: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The known fields, in declaration order, the status as its string value."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values["status"] = self.status.value
        return {key: list(value) if isinstance(value, tuple) else value
                for key, value in values.items() if value is not None and value != ()}
