"""What a deploy takes and gives back: its options, the staged artifact, the rollout, the deployment.

The :class:`~inf2_deploy.aws.deployer.Deployer` steps pass these between them; callers see
:class:`Deployment` (and :class:`WaitInterrupted` on Ctrl-C while waiting).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..artifact.manifest import Artifact
from ..status import DeploymentStatus
from .endpoint import DEFAULT_POLL_SECONDS
from .reconcile import Reconciliation
from .requests import DeployRequests
from .resources import Resource
from .session import Session, make_session
from .tags import TagChanges
from .teardown import Teardown, delete_deployment
from .upload import UploadResult

__all__ = ["DeployOptions", "Deployment", "Rollout", "StagedArtifact", "WaitInterrupted"]


class WaitInterrupted(KeyboardInterrupt):
    """Ctrl-C while waiting: the endpoint keeps going; the message says how to follow or delete it."""

    def __init__(self, endpoint_name: str, status: DeploymentStatus | None) -> None:
        state = status.value if status else "being created"
        super().__init__(
            f"stopped waiting; endpoint {endpoint_name} is still {state} and keeps going. "
            f"Wait for it with `inf2-deploy wait {endpoint_name}`, check it with `inf2-deploy status "
            f"{endpoint_name}`, or delete it with `inf2-deploy delete {endpoint_name}`."
        )
        self.endpoint_name = endpoint_name
        self.status = status


@dataclass
class Deployment:
    """A SageMaker endpoint that ``deploy`` created, updated or found unchanged."""

    endpoint_name: str
    region: str
    artifact_s3_uri: str
    model_name: str
    endpoint_config_name: str
    status: DeploymentStatus | None = None
    #: False when the endpoint already ran this artifact and these settings
    changed: bool = True
    #: one line on what happened, for people
    message: str = ""
    #: bytes this deploy sent to S3 (0 when the artifact was already there)
    bytes_uploaded: int = 0
    session: Session | None = field(default=None, repr=False, compare=False)

    @property
    def predictor(self) -> Any:
        """A :class:`~inf2_deploy.client.predictor.Predictor` for this endpoint."""
        from ..client.predictor import Predictor

        boto_session = self.session.boto_session if self.session else None
        return Predictor(self.endpoint_name, region=self.region, session=boto_session)

    def delete(self, *, purge_artifacts: bool = False, dry_run: bool = False, wait: bool = False) -> Teardown:
        """Delete the endpoint, its config and its model (see ``delete_deployment``)."""
        return delete_deployment(self.endpoint_name, purge_artifacts=purge_artifacts, dry_run=dry_run, wait=wait,
                                 session=self.session or make_session(self.region))


@dataclass(frozen=True)
class DeployOptions:
    """How one deploy runs, beyond what its spec says."""

    endpoint_name: str
    #: the S3 key prefix the artifact's own prefix goes under, e.g. ``inf2-deploy/gpt-j-6b``
    prefix_root: str
    #: the folder to package into when no packaged artifact is given
    output: Path | None = None
    #: ``s3://bucket/prefix/`` of an artifact already in S3, deployed as it is (nothing packaged or uploaded)
    model_data: str | None = None
    #: wait until the endpoint is InService (tailing its logs)
    wait: bool = True
    #: keep the model, config and endpoint when the endpoint fails
    keep_on_failure: bool = False
    #: passed to the container as HF_TOKEN (never logged); only for gated models
    hf_token: str | None = field(default=None, repr=False)
    #: seconds to wait before giving up (the endpoint keeps going)
    timeout: float | None = None
    #: seconds between status polls
    poll: float = DEFAULT_POLL_SECONDS


@dataclass(frozen=True)
class StagedArtifact:
    """An artifact and where it lies in S3."""

    artifact: Artifact
    upload: UploadResult

    @property
    def s3_uri(self) -> str:
        """The artifact's ``s3://bucket/prefix/``."""
        return self.upload.s3_uri


@dataclass(frozen=True)
class Rollout:
    """What :meth:`Deployer.apply` asked SageMaker for, the resources it created (oldest first) and the
    tag changes it made (undone with the resources when the rollout fails)."""

    requests: DeployRequests
    reconciliation: Reconciliation
    created: tuple[Resource, ...]
    retagged: tuple[TagChanges, ...] = ()
