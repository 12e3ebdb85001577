"""Deploy, redeploy, delete and list GPT-J endpoints on SageMaker.

``deploy`` runs plan -> package and upload -> model -> endpoint config ->
endpoint. Packaging and upload overlap (``pipeline``): S3 receives each file,
and each shard part by part, while the converter still writes the rest. An
endpoint that already exists is updated in place (SageMaker moves traffic only
once the new config is InService) and the superseded model and config are
removed afterwards. A deploy whose artifact fingerprint and settings
equal what the endpoint runs changes nothing. When the endpoint fails, what
this deploy created is rolled back so that nothing keeps billing.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from ..artifact.manifest import Artifact
from ..clock import Clock, SystemClock
from ..errors import AwsError, ConfigError, EndpointFailedError
from ..spec.deployment_spec import DeploymentSpec
from ..spec.model_ref import model_slug
from ..spec.planner import check_plan
from .endpoint import (
    TAG_ENDPOINT,
    TAG_FINGERPRINT,
    TAG_MANAGED,
    TAG_SETTINGS,
    Endpoint,
    EndpointStatus,
    LogCallback,
    LogTailer,
    StatusCallback,
    endpoint_config_request,
    find_endpoint,
    missing_endpoint,
    model_request,
    resource_name,
    resource_tags,
    settings_digest,
)
from .s3 import Progress, delete_prefix, ensure_bucket, split_s3_uri, upload_artifact
from .session import Session, aws_errors, error_code, is_not_found, make_session

__all__ = [
    "Deployment",
    "DeploymentInfo",
    "WaitInterrupted",
    "deploy",
    "delete_deployment",
    "list_deployments",
    "default_endpoint_name",
    "default_artifact_dir",
    "require_role",
]


class WaitInterrupted(KeyboardInterrupt):
    """Ctrl-C while waiting: the endpoint keeps going; the message says how to follow or delete it."""

    def __init__(self, endpoint_name: str, status: EndpointStatus | None) -> None:
        state = status.value if status else "being created"
        super().__init__(
            f"stopped waiting; endpoint {endpoint_name} is still {state} and keeps going. "
            f"Watch it with `inf2-deploy status {endpoint_name}` (or `inf2-deploy logs {endpoint_name} --follow`), "
            f"or delete it with `inf2-deploy delete {endpoint_name}`."
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
    status: EndpointStatus | None = None
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

    def delete(self, *, purge_artifacts: bool = False, wait: bool = False) -> list[str]:
        """Delete the endpoint, its config and its model (see ``delete_deployment``)."""
        return delete_deployment(self.endpoint_name, purge_artifacts=purge_artifacts, wait=wait,
                                 session=self.session or make_session(self.region))


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


def _tags_of(sagemaker: Any, arn: str) -> dict[str, str]:
    with aws_errors(f"sagemaker:ListTags {arn}"):
        tags = sagemaker.list_tags(ResourceArn=arn).get("Tags", [])
    return {tag["Key"]: tag["Value"] for tag in tags}


def _describe_config(sagemaker: Any, name: str) -> dict[str, Any] | None:
    with aws_errors(f"sagemaker:DescribeEndpointConfig {name}"):
        try:
            return sagemaker.describe_endpoint_config(EndpointConfigName=name)
        except ClientError as exc:
            if is_not_found(exc):
                return None
            raise


def _delete(sagemaker: Any, kind: str, name: str) -> bool:
    """Delete one SageMaker resource; False when it was already gone."""
    operation, key = {
        "endpoint": ("delete_endpoint", "EndpointName"),
        "endpoint config": ("delete_endpoint_config", "EndpointConfigName"),
        "model": ("delete_model", "ModelName"),
    }[kind]
    with aws_errors(f"sagemaker:{operation} {name}"):
        try:
            getattr(sagemaker, operation)(**{key: name})
        except ClientError as exc:
            if is_not_found(exc):
                return False
            raise
    return True


def _create(call: Any, operation: str, name: str, *, ours: Any = None, **request: Any) -> None:
    """One create call. "Already existing" after botocore retried means the first attempt
    succeeded and its answer was lost: the resource is ours when its name is new to this
    deploy, or when ``ours()`` says so."""
    with aws_errors(f"sagemaker:{operation} {name}"):
        try:
            call(**request)
        except ClientError as exc:
            message = str(exc.response.get("Error", {}).get("Message", ""))
            retried = exc.response.get("ResponseMetadata", {}).get("RetryAttempts", 0) > 0
            if not (error_code(exc) == "ValidationException" and "already exist" in message and retried
                    and (ours is None or ours())):
                raise


def _rollback(sagemaker: Any, created: list[tuple[str, str]]) -> list[str]:
    """Delete what this deploy created, newest first (endpoint, then config, then model)."""
    return [f"{kind} {name}" for kind, name in reversed(created) if _delete(sagemaker, kind, name)]


def deploy(
    spec: DeploymentSpec,
    *,
    artifact: Artifact | None = None,
    wait: bool = True,
    keep_on_failure: bool = False,
    progress: Progress | None = None,
    on_status: StatusCallback | None = None,
    on_log: LogCallback | None = None,
    session: Session | None = None,
    clock: Clock | None = None,
    hf_token: str | None = None,
    output: Path | None = None,
    timeout: float | None = None,
    poll: float = 15.0,
) -> Deployment:
    """Deploy ``spec`` to a SageMaker endpoint, or update the endpoint that has its name.

    Args:
        spec: the deployment; ``role_arn`` is required.
        artifact: an already packaged artifact, uploaded under its fingerprint; default:
            package into ``output`` while uploading under the build key (see ``pipeline``).
        wait: wait until the endpoint is InService (tailing its logs).
        keep_on_failure: keep the model, config and endpoint when the endpoint fails.
        progress: ``(done_bytes, total_bytes, label)`` for packaging and upload.
        on_status: ``(status, seconds waited)`` after each poll while waiting.
        on_log: each new container log line while waiting.
        session: AWS session; default: the standard resolution for the plan's region.
        clock: time source for names and waits.
        hf_token: passed to the container as HF_TOKEN (never logged); only for gated models.
        output: artifact folder; default ``default_artifact_dir(spec)``.
        timeout: seconds to wait before giving up (the endpoint keeps going).
        poll: seconds between status polls.

    Returns:
        The deployment; ``changed`` is False when nothing needed doing.

    Raises:
        ConfigError: no or bad role, or the plan cannot work (``PlanError``) - before any AWS call.
        CredentialsError: no AWS credentials or region.
        AwsError: an AWS call failed, or the endpoint is busy or failed before this deploy.
        EndpointFailedError: the endpoint failed; what this deploy made was rolled back.
        WaitInterrupted: Ctrl-C while waiting; the endpoint keeps being created.
    """
    require_role(spec)
    plan = check_plan(spec)
    session = session or make_session(plan.region)
    clock = clock or SystemClock()
    endpoint_name = default_endpoint_name(spec)
    sagemaker, s3 = session.client("sagemaker"), session.client("s3")

    bucket = spec.bucket or session.default_bucket()
    ensure_bucket(s3, bucket, session.region, create=spec.bucket is None, kms_key_id=spec.kms_key_id)
    prefix_root = f"{spec.prefix}/{model_slug(spec.model)}"
    if artifact is None:
        from .pipeline import package_and_upload

        artifact, upload = package_and_upload(spec, output or default_artifact_dir(spec), s3, bucket, prefix_root,
                                              kms_key_id=spec.kms_key_id, progress=progress)
    else:
        upload = upload_artifact(s3, artifact, bucket, f"{prefix_root}/{artifact.fingerprint}",
                                 kms_key_id=spec.kms_key_id, progress=progress)

    name = resource_name(endpoint_name, artifact.fingerprint, clock.now())
    model = model_request(spec, name=name, image_uri=plan.image_uri or "", model_data_uri=upload.s3_uri,
                          compile_cache_url=spec.compile_cache_url or f"s3://{bucket}/{spec.prefix}/neuron-cache/",
                          hf_token=hf_token)
    config = endpoint_config_request(spec, name=name, model_name=name,
                                     instance_type=plan.instance.name if plan.instance else "",
                                     artifact_bytes=artifact.total_bytes)
    digest = settings_digest(model, config)
    tags = resource_tags(spec, endpoint_name=endpoint_name, fingerprint=artifact.fingerprint, settings=digest)

    existing = find_endpoint(sagemaker, endpoint_name)
    superseded: tuple[str, list[str]] | None = None
    if existing is not None:
        if existing.status is not None and existing.status.transitional:
            raise AwsError(f"endpoint {endpoint_name} is {existing.status.value}; SageMaker accepts no "
                           "update until it settles", code="EndpointBusy",
                           hint=f"wait with `inf2-deploy status {endpoint_name}`, then deploy again")
        if existing.status is not EndpointStatus.IN_SERVICE:
            raise AwsError(f"endpoint {endpoint_name} is {existing.status.value if existing.status else '?'} "
                           "and cannot be updated", code="EndpointNotUpdatable",
                           hint=f"delete it with `inf2-deploy delete {endpoint_name}`, then deploy again")
        current = _describe_config(sagemaker, existing.config_name or "")
        current_tags = _tags_of(sagemaker, current["EndpointConfigArn"]) if current else {}
        if (current_tags.get(TAG_FINGERPRINT) == artifact.fingerprint
                and current_tags.get(TAG_SETTINGS) == digest):
            return Deployment(
                endpoint_name, session.region, upload.s3_uri, current["ProductionVariants"][0]["ModelName"],
                existing.config_name or "", existing.status, changed=False, session=session,
                bytes_uploaded=upload.bytes_uploaded,
                message=f"endpoint {endpoint_name} already runs artifact {artifact.fingerprint[:12]} "
                        "with these settings; nothing to do",
            )
        if current and current_tags.get(TAG_MANAGED) == "true":
            superseded = (current["EndpointConfigName"], [v["ModelName"] for v in current["ProductionVariants"]])

    # Each resource is listed before its create call: a call that times out or loses its
    # connection may still have created it, and the rollback deletes by name (these names
    # are new to this deploy, and a delete of a missing resource is a no-op).
    created: list[tuple[str, str]] = []
    try:
        created.append(("model", name))
        _create(sagemaker.create_model, "CreateModel", name, **model, Tags=tags)
        created.append(("endpoint config", name))
        _create(sagemaker.create_endpoint_config, "CreateEndpointConfig", name, **config, Tags=tags)
        if existing is None:
            created.append(("endpoint", endpoint_name))
            _create(sagemaker.create_endpoint, "CreateEndpoint", endpoint_name, EndpointName=endpoint_name,
                    EndpointConfigName=name, Tags=tags,
                    ours=lambda: getattr(find_endpoint(sagemaker, endpoint_name), "config_name", None) == name)
        else:
            with aws_errors(f"sagemaker:UpdateEndpoint {endpoint_name}"):
                sagemaker.update_endpoint(EndpointName=endpoint_name, EndpointConfigName=name)
    except (AwsError, KeyboardInterrupt):
        # Ctrl-C between these calls would otherwise leave a model or config nobody tracks.
        if not keep_on_failure:
            _rollback(sagemaker, created)
        raise

    action = "updating" if existing is not None else "creating"
    deployment = Deployment(endpoint_name, session.region, upload.s3_uri, name, name,
                            EndpointStatus.UPDATING if existing else EndpointStatus.CREATING, session=session,
                            bytes_uploaded=upload.bytes_uploaded,
                            message=f"{action} endpoint {endpoint_name} with artifact {artifact.fingerprint[:12]}")
    if not wait:
        return deployment

    endpoint = existing or Endpoint(endpoint_name, sagemaker)
    # Only this deploy's lines: an updated endpoint's group already holds old ones.
    tailer = LogTailer(session.client("logs"), endpoint_name, start_time_ms=int(clock.now().timestamp() * 1000))
    try:
        endpoint.wait(timeout, poll=poll, clock=clock, on_status=on_status, on_log=on_log, logs=tailer)
        if endpoint.config_name != name:
            # A failed update leaves the endpoint InService on its old config (SageMaker rolled it back).
            raise endpoint.failure()
    except KeyboardInterrupt:
        raise WaitInterrupted(endpoint_name, endpoint.status) from None
    except EndpointFailedError as exc:
        if keep_on_failure:
            exc.hint = f"kept for inspection; delete with `inf2-deploy delete {endpoint_name}`"
            raise
        removed = _rollback(sagemaker, created)
        raise EndpointFailedError(f"{exc.message}\nrolled back: {', '.join(removed) or 'nothing'}",
                                  value=endpoint_name, hint=exc.hint) from None

    if superseded is not None:
        config_name, model_names = superseded
        _delete(sagemaker, "endpoint config", config_name)
        for model_name in model_names:
            _delete(sagemaker, "model", model_name)
    deployment.status = endpoint.status
    deployment.message = (f"endpoint {endpoint_name} is {endpoint.status.value if endpoint.status else '?'} "
                          f"with artifact {artifact.fingerprint[:12]}")
    return deployment


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
        What was deleted, e.g. ``["endpoint E", "endpoint config C", "model M", "3 S3 objects"]``.

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
        return [f"{kind} {resource}" for kind, resource in leftovers if _delete(sagemaker, kind, resource)]
    if endpoint.status in (EndpointStatus.CREATING, EndpointStatus.UPDATING):
        if not wait:
            raise AwsError(
                f"endpoint {name} is {endpoint.status.value}: SageMaker refuses to delete it until it leaves "
                f"{endpoint.status.value}", code="EndpointBusy",
                hint=f"run `inf2-deploy delete {name} --wait` to wait for that and then delete it")
        endpoint.wait(clock=clock, raise_on_failure=False)
    config = _describe_config(sagemaker, endpoint.config_name or "")
    model_names = [variant["ModelName"] for variant in config["ProductionVariants"]] if config else []
    artifact_uris = []
    if purge_artifacts:
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
                artifact_uris.append(source["S3Uri"])

    deleted = []
    if _delete(sagemaker, "endpoint", name):
        deleted.append(f"endpoint {name}")
    if config and _delete(sagemaker, "endpoint config", config["EndpointConfigName"]):
        deleted.append(f"endpoint config {config['EndpointConfigName']}")
    deleted += [f"model {model}" for model in model_names if _delete(sagemaker, "model", model)]
    s3 = session.client("s3")
    for uri in artifact_uris:
        bucket, prefix = split_s3_uri(uri)
        deleted.append(f"{delete_prefix(s3, bucket, prefix)} S3 objects under {uri}")
    return deleted


def _leftovers(sagemaker: Any, name: str) -> list[tuple[str, str]]:
    """Endpoint configs and models this toolkit made for endpoint ``name``, newest config first."""
    found = []
    for kind, operation, key, arn_key in (("endpoint config", "list_endpoint_configs", "EndpointConfigs",
                                           "EndpointConfigArn"), ("model", "list_models", "Models", "ModelArn")):
        label = "EndpointConfigName" if kind == "endpoint config" else "ModelName"
        with aws_errors(f"sagemaker:{operation} {name}-*"):
            for page in sagemaker.get_paginator(operation).paginate(NameContains=name):
                for item in page.get(key, []):
                    if not item[label].startswith(f"{name}-"):
                        continue
                    tags = _tags_of(sagemaker, item[arn_key])
                    if tags.get(TAG_MANAGED) == "true" and tags.get(TAG_ENDPOINT) == name:
                        found.append((kind, item[label]))
    return found


def _sagemaker_deployments(session: Session) -> list[DeploymentInfo]:
    sagemaker = session.client("sagemaker")
    found = []
    with aws_errors("sagemaker:ListEndpoints"):
        pages = list(sagemaker.get_paginator("list_endpoints").paginate())
    for summary in (item for page in pages for item in page.get("Endpoints", [])):
        if _tags_of(sagemaker, summary["EndpointArn"]).get(TAG_MANAGED) != "true":
            continue
        name = summary["EndpointName"]
        endpoint = find_endpoint(sagemaker, name)
        if endpoint is None:  # deleted between the listing and now
            continue
        config = _describe_config(sagemaker, endpoint.config_name or "")
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
        DeploymentInfo(item.name, "local", item.status, "local", datetime.fromisoformat(item.started_at), item.url)
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
