"""Deploy, redeploy, delete and list GPT-J endpoints on SageMaker: the public verbs.

``deploy`` runs plan -> package and upload -> model -> endpoint config ->
endpoint, one :class:`~inf2_deploy.aws.deployer.Deployer` step at a time.
Packaging and upload overlap (``pipeline``): S3 receives each file, and each
shard part by part, while the converter still writes the rest. An endpoint
that already exists is updated in place (SageMaker moves traffic only once the
new config is InService) and the superseded model and config are removed
afterwards. A deploy whose artifact fingerprint and settings equal what the
endpoint runs changes nothing, or only the tags of the endpoint and its config
when the spec's tags changed. ``model_data`` deploys an artifact already in S3
as it is, once its manifest checks out. When the endpoint fails, what this deploy
created is rolled back so that nothing keeps billing. ``delete_deployment``
is in ``teardown``; ``Deployment`` and ``WaitInterrupted`` in ``deployer``.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from ..artifact.manifest import Artifact
from ..clock import Clock
from ..errors import ConfigError
from ..observer import DeployObserver, observer_of
from ..spec.deployment_spec import DeploymentSpec
from ..spec.model_ref import model_slug
from ..spec.planner import check_plan
from ..status import DeploymentStatus
from .deployer import Deployer
from .deployment import Deployment, DeployOptions
from .endpoint import DEFAULT_POLL_SECONDS, find_endpoint
from .logs import LogLine
from .model_data import check_model_data_uri
from .requests import TAG_MANAGED
from .resources import describe_config, tags_of
from .session import Session, aws_errors, make_session

__all__ = [
    "DeploymentInfo",
    "deploy",
    "list_deployments",
    "default_endpoint_name",
    "default_artifact_dir",
    "require_role",
]


@dataclass(frozen=True)
class DeploymentInfo:
    """One row of ``list_deployments``."""

    name: str
    kind: str  # "sagemaker" or "local"
    status: str
    instance_type: str | None
    created: datetime | None
    location: str  # the region, or the local URL

    def age_seconds(self, now: datetime | None = None) -> float | None:
        if self.created is None:
            return None
        return ((now or datetime.now(timezone.utc)) - self.created).total_seconds()


def default_endpoint_name(spec: DeploymentSpec) -> str:
    """``spec.endpoint_name``, else the model's slug."""
    return spec.endpoint_name or model_slug(spec.model)


def default_artifact_dir(spec: DeploymentSpec) -> Path:
    """Where ``deploy`` packages artifacts: one folder per model in the local deploys' artifact cache.

    The packager rebuilds the folder only when the source or the plan changed.
    """
    from ..local.paths import artifact_cache_dir

    return artifact_cache_dir() / f"sagemaker-{model_slug(spec.model)}"


def require_role(spec: DeploymentSpec) -> None:
    """Raise ``ConfigError`` (field ``role_arn``) when the spec has no execution role."""
    if not spec.role_arn:
        raise ConfigError(
            "an IAM execution role is required to deploy to SageMaker", field="role_arn",
            hint="pass --role arn:aws:iam::ACCOUNT:role/NAME, or role= in the API; the role needs "
                 "SageMaker access to the artifact bucket and to ECR",
        )


def deploy(
    spec: DeploymentSpec,
    *,
    artifact: Artifact | None = None,
    model_data: str | None = None,
    wait: bool = True,
    keep_on_failure: bool = False,
    observer: DeployObserver | None = None,
    progress: Callable[[int, int, str], None] | None = None,
    on_status: Callable[[DeploymentStatus, float], None] | None = None,
    on_log: Callable[[LogLine], None] | None = None,
    session: Session | None = None,
    clock: Clock | None = None,
    hf_token: str | None = None,
    output: Path | None = None,
    timeout: float | None = None,
    poll: float = DEFAULT_POLL_SECONDS,
) -> Deployment:
    """Deploy ``spec`` to a SageMaker endpoint, or update the endpoint that has its name.

    Args:
        spec: the deployment; ``role_arn`` is required.
        artifact: an already packaged artifact, uploaded under its fingerprint; default:
            package into ``output`` while uploading under the build key (see ``pipeline``).
        model_data: instead of ``artifact``: the ``s3://bucket/prefix/`` of an artifact already in S3,
            deployed without packaging or uploading once its manifest, its objects and its
            serving.properties check out (see ``model_data``); its bucket also holds the compile
            cache unless ``spec.bucket`` is set.
        wait: wait until the endpoint is InService (tailing its logs).
        keep_on_failure: keep the model, config and endpoint when the endpoint fails.
        observer: receives packaging and upload progress, the status after each poll, each
            new container log line and each step (see ``inf2_deploy.observer``).
        progress: instead of an observer: ``(done_bytes, total_bytes, label)`` for packaging and upload.
        on_status: instead of an observer: ``(status, seconds waited)`` after each poll while waiting.
        on_log: instead of an observer: each new container log line while waiting.
        session: AWS session; default: the standard resolution for the plan's region.
        clock: time source for names and waits.
        hf_token: passed to the container as HF_TOKEN (never logged); only for gated models.
        output: artifact folder; default ``default_artifact_dir(spec)``.
        timeout: seconds to wait before giving up (the endpoint keeps going).
        poll: seconds between status polls.

    Returns:
        The deployment; ``changed`` is False when nothing needed doing.

    Raises:
        ConfigError: no or bad role, the plan cannot work (``PlanError``), both an observer and
            callables were given, or a malformed ``model_data`` - before any AWS call; an artifact at
            ``model_data`` built for other settings - before any SageMaker call.
        ModelSourceError: ``model_data`` has no readable manifest.json, or files missing or of another size.
        CredentialsError: no AWS credentials or region.
        AwsError: an AWS call failed, or the endpoint is busy or failed before this deploy.
        EndpointFailedError: the endpoint failed; what this deploy made was rolled back.
        WaitInterrupted: Ctrl-C while waiting; the endpoint keeps being created.
    """
    require_role(spec)
    if model_data is not None:
        check_model_data_uri(model_data)
        if artifact is not None:
            raise ConfigError("pass a packaged artifact or model_data, not both", field="model_data")
    plan = check_plan(spec)
    reporter = observer_of(observer, progress=progress, on_status=on_status, on_log=on_log)
    if artifact is None and model_data is None:
        output = output or default_artifact_dir(spec)
    options = DeployOptions(
        endpoint_name=default_endpoint_name(spec), prefix_root=f"{spec.prefix}/{model_slug(spec.model)}",
        output=output, model_data=model_data, wait=wait, keep_on_failure=keep_on_failure, hf_token=hf_token,
        timeout=timeout, poll=poll)
    deployer = Deployer(session or make_session(plan.region), clock, reporter)
    return deployer.run(spec, plan, options, artifact=artifact)


def _sagemaker_deployments(session: Session) -> list[DeploymentInfo]:
    sagemaker = session.client("sagemaker")
    found = []
    with aws_errors("sagemaker:ListEndpoints"):
        pages = list(sagemaker.get_paginator("list_endpoints").paginate())
    for summary in (item for page in pages for item in page.get("Endpoints", [])):
        if tags_of(sagemaker, summary["EndpointArn"]).get(TAG_MANAGED) != "true":
            continue
        name = summary["EndpointName"]
        endpoint = find_endpoint(sagemaker, name)
        if endpoint is None:  # deleted between the listing and now
            continue
        config = describe_config(sagemaker, endpoint.config_name or "")
        variant = config["ProductionVariants"][0] if config else {}
        instance = variant.get("InstanceType")
        if instance and variant.get("InitialInstanceCount", 1) > 1:
            instance = f"{instance} x {variant['InitialInstanceCount']}"
        found.append(DeploymentInfo(name, "sagemaker", endpoint.status.value if endpoint.status else "?",
                                    instance, endpoint.created, session.region))
    return found


def _local_deployments() -> list[DeploymentInfo]:
    from ..local.records import default_store

    return [
        DeploymentInfo(item.name, "local", item.status.value, "local", datetime.fromisoformat(item.started_at),
                       item.url)
        for item in default_store().list()
    ]


def list_deployments(
    session: Session | None = None, *, sagemaker: bool = True, local: bool = True
) -> list[DeploymentInfo]:
    """The endpoints inf2-deploy manages (tagged ``inf2-deploy:managed=true``) and the local servers.

    Args:
        session: AWS session; default: the standard resolution.
        sagemaker: include SageMaker endpoints of the session's region.
        local: include local deployments started with ``deploy --local``.

    Raises:
        CredentialsError: ``sagemaker`` is set and no credentials or region are configured.
        AwsError: a SageMaker call failed.
    """
    found = _sagemaker_deployments(session or make_session()) if sagemaker else []
    if local:
        found += _local_deployments()
    return sorted(found, key=lambda item: (item.kind, item.name))
