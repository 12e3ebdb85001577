"""The one status of a deployment, local or on SageMaker."""
from __future__ import annotations

from enum import Enum

__all__ = ["DeploymentStatus"]


class DeploymentStatus(str, Enum):
    """SageMaker's ``EndpointStatus`` values, plus ``Stopped`` for a local server that has exited.

    A running local server is ``InService``, so one check ("is it InService?")
    answers for both kinds of deployment.
    """

    CREATING = "Creating"
    UPDATING = "Updating"
    IN_SERVICE = "InService"
    FAILED = "Failed"
    DELETING = "Deleting"
    OUT_OF_SERVICE = "OutOfService"
    ROLLING_BACK = "RollingBack"
    SYSTEM_UPDATING = "SystemUpdating"
    UPDATE_ROLLBACK_FAILED = "UpdateRollbackFailed"
    STOPPED = "Stopped"

    def __str__(self) -> str:
        return self.value

    @property
    def transitional(self) -> bool:
        """True while SageMaker is still working on the endpoint."""
        return self in _TRANSITIONAL

    @property
    def failed(self) -> bool:
        return self in (DeploymentStatus.FAILED, DeploymentStatus.UPDATE_ROLLBACK_FAILED)


_TRANSITIONAL = frozenset({
    DeploymentStatus.CREATING, DeploymentStatus.UPDATING, DeploymentStatus.DELETING,
    DeploymentStatus.ROLLING_BACK, DeploymentStatus.SYSTEM_UPDATING,
})
