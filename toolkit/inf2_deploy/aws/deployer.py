"""A deploy as separate steps: stage the artifact, build the requests, reconcile, apply, wait.

Each step of :class:`Deployer` is a method that can run and be tested on its
own; :meth:`Deployer.run` chains them as ``deploy`` does:

1. :meth:`~Deployer.stage_artifact` - the bucket, then package and upload at
   once, or upload an artifact that is already packaged (objects already in S3
   are not sent again); or :meth:`~Deployer.locate_artifact` - check an artifact
   already in S3 (``--model-data``) and upload nothing;
2. :meth:`~Deployer.build_requests` - CreateModel and CreateEndpointConfig with
   this deploy's names and tags (pure, see ``requests``);
3. :meth:`~Deployer.reconcile` - compare with the endpoint of that name: nothing
   to do (same artifact fingerprint, settings and tags), retag, create, or update
   in place (see ``reconcile``);
4. :meth:`~Deployer.apply` - create the model and config, bring the endpoint's
   tags to this deploy's, then create or update the endpoint; on failure, delete
   what this deploy created and restore the tags; a retag only changes tags;
5. :meth:`~Deployer.wait` - until InService, tailing the container's logs; a
   failed endpoint is rolled back; then :meth:`~Deployer.retire` removes the
   config and models an update superseded;
6. :meth:`~Deployer.apply_scaling` - register the spec's autoscaling and its
   policy (see ``scaling``); an update of an autoscaled endpoint keeps its
   instance count (RetainAllVariantProperties), and one that changes the
   instance type deregisters before UpdateEndpoint.

Progress, status polls, log lines and each step are reported to one observer.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..artifact.manifest import MANIFEST_NAME, Artifact
from ..clock import Clock, SystemClock
from ..errors import AwsError, EndpointFailedError
from ..observer import DeployObserver, NullObserver
from ..spec.deployment_spec import DeploymentSpec
from ..spec.planner import Plan
from ..status import DeploymentStatus
from .artifact_store import purge_unused
from .deployment import Deployment, DeployOptions, Rollout, StagedArtifact, WaitInterrupted
from .endpoint import DEFAULT_POLL_SECONDS, Endpoint, find_endpoint
from .logs import LogTailer
from .model_data import read_model_data
from .reconcile import Action, Reconciliation, reconcile
from .requests import DeployRequests, build_requests, config_for_model
from .resources import Resource, create_resource, delete_resources
from .s3 import ensure_bucket
from .scaling import (
    compile_cache_is_warm,
    mark_compile_cache_warm,
    scale,
    single_instance,
    sync_scaling,
    update_arguments,
)
from .session import Session, aws_errors
from .tags import TagChanges, apply_tags
from .upload import UploadResult

__all__ = ["Deployer"]


class Deployer:
    """Deploys specs to SageMaker, one step per method.

    Args:
        session: the AWS session (region and clients).
        clock: time source for names and waits; default the real clock.
        observer: receives progress, status polls, log lines and steps; default: nobody.
    """

    def __init__(self, session: Session, clock: Clock | None = None,
                 observer: DeployObserver | None = None) -> None:
        self.session = session
        self.clock = clock or SystemClock()
        self.observer = observer or NullObserver()
        #: artifact prefixes this deployer wrote the manifest of: a rollback removes those no model reads
        self.uploaded: list[str] = []

    @property
    def _sagemaker(self) -> Any:
        return self.session.client("sagemaker")

    def run(self, spec: DeploymentSpec, plan: Plan, options: DeployOptions, *,
            artifact: Artifact | None = None) -> Deployment:
        """Every step in order; see ``inf2_deploy.aws.deploy.deploy`` for what each raises.

        Args:
            spec: the deployment.
            plan: its checked plan.
            options: how this deploy runs.
            artifact: an already packaged artifact; default: ``options.model_data`` when set, else
                package into ``options.output``.

        Returns:
            The deployment; ``changed`` is False when nothing needed doing.
        """
        if options.model_data is not None:
            staged = self.locate_artifact(plan, options.model_data)
        else:
            staged = self.stage_artifact(spec, prefix_root=options.prefix_root, artifact=artifact,
                                         output=options.output, endpoint_name=options.endpoint_name)
        requests = self.build_requests(spec, plan, staged, endpoint_name=options.endpoint_name,
                                       hf_token=options.hf_token)
        found = self.reconcile(requests)
        if found.action is Action.NOTHING:
            self.apply_scaling(requests)
            return self._as_found(staged, requests, found)
        launch = self._launch(requests, found) if options.wait else requests
        rollout = self.apply(launch, found, keep_on_failure=options.keep_on_failure)
        if found.action is Action.RETAG:
            self.apply_scaling(requests)
            return self._as_found(staged, requests, found, retagged=rollout.retagged)
        verb = "updating" if found.action is Action.UPDATE else "creating"
        deployment = Deployment(
            requests.endpoint_name, self.session.region, staged.s3_uri, found.reused_model or requests.name,
            requests.name,
            DeploymentStatus.UPDATING if found.action is Action.UPDATE else DeploymentStatus.CREATING,
            session=self.session, bytes_uploaded=staged.upload.bytes_uploaded,
            message=f"{verb} endpoint {requests.endpoint_name} with artifact {requests.fingerprint[:12]}")
        if not options.wait:
            if requests.scaling is not None:
                deployment.message += "; autoscaling is registered by a deploy that waits for InService"
            return deployment
        endpoint = self.wait(rollout, timeout=options.timeout, poll=options.poll,
                             keep_on_failure=options.keep_on_failure)
        if launch is not requests:
            endpoint = self._grow(requests, timeout=options.timeout, poll=options.poll)
        self.retire(found)
        self.apply_scaling(requests)
        deployment.status = endpoint.status
        deployment.message = (f"endpoint {requests.endpoint_name} is "
                              f"{endpoint.status.value if endpoint.status else '?'} "
                              f"with artifact {requests.fingerprint[:12]}")
        return deployment

    def stage_artifact(self, spec: DeploymentSpec, *, prefix_root: str, artifact: Artifact | None = None,
                       output: Path | None = None, endpoint_name: str | None = None) -> StagedArtifact:
        """Put the artifact in S3: the bucket first (created private and encrypted when it is the default
        one), then package into ``output`` while uploading, or upload ``artifact`` under its fingerprint.

        Files whose content another artifact under ``prefix_root`` already holds are copied inside
        S3, not uploaded. With ``endpoint_name``, the artifact's prefix is recorded in that
        endpoint's index before anything is sent, so that ``delete --purge-artifacts`` finds it.

        Raises:
            ConfigError: neither ``artifact`` nor ``output`` given; a named bucket does not exist.
            AwsError: an S3 call failed.
            PlanError, ModelSourceError: packaging failed (see ``package``).
        """
        from .pipeline import stage  # the converter and numpy, only when a deploy stages an artifact

        s3 = self.session.client("s3")
        bucket = spec.bucket or self.session.default_bucket()
        if ensure_bucket(s3, bucket, self.session.region, create=spec.bucket is None, kms_key_id=spec.kms_key_id):
            self.observer.on_event(f"created bucket {bucket}")
        artifact, upload = stage(spec, s3, bucket, prefix_root, artifact=artifact, output=output,
                                 endpoint_name=endpoint_name, observer=self.observer)
        if MANIFEST_NAME in upload.uploaded:
            self.uploaded.append(upload.s3_uri)
        copied = f", {upload.bytes_copied} copied inside S3" if upload.copied else ""
        self.observer.on_event(f"artifact {artifact.fingerprint[:12]} is at {upload.s3_uri} "
                               f"({upload.bytes_uploaded} bytes sent{copied})")
        return StagedArtifact(artifact, upload)

    def locate_artifact(self, plan: Plan, model_data: str) -> StagedArtifact:
        """The artifact already at ``model_data`` (``s3://bucket/prefix/``), checked and left as it is.

        Raises:
            ConfigError: a malformed URI, or an artifact built for another tp, n_positions, dtype or
                batch size (field ``model_data``).
            ModelSourceError: no or a malformed manifest.json, or its files missing or of another size.
            AwsError: an S3 call failed.
        """
        artifact = read_model_data(self.session.client("s3"), model_data, plan)
        bucket, _, key_prefix = model_data.removeprefix("s3://").partition("/")
        upload = UploadResult(bucket, key_prefix.strip("/") + "/", (), tuple(f.path for f in artifact.files), 0)
        self.observer.on_event(f"artifact {artifact.fingerprint[:12]} is at {upload.s3_uri} (checked, 0 bytes sent)")
        return StagedArtifact(artifact, upload)

    def build_requests(self, spec: DeploymentSpec, plan: Plan, staged: StagedArtifact, *, endpoint_name: str,
                       hf_token: str | None = None) -> DeployRequests:
        """The model and endpoint config requests for ``staged``, named after the clock's now."""
        return build_requests(spec, plan, endpoint_name=endpoint_name, fingerprint=staged.artifact.fingerprint,
                              artifact_bytes=staged.artifact.total_bytes, model_data_uri=staged.s3_uri,
                              bucket=staged.upload.bucket, now=self.clock.now(), hf_token=hf_token)

    def reconcile(self, requests: DeployRequests) -> Reconciliation:
        """Decide from the endpoint that has the name: nothing to do, retag, create or update it
        (see ``reconcile.reconcile``).

        Raises:
            AwsError: the endpoint is busy (code ``EndpointBusy``) or failed (``EndpointNotUpdatable``),
                or a call failed.
        """
        return reconcile(self._sagemaker, requests)

    def apply(self, requests: DeployRequests, reconciliation: Reconciliation, *,
              keep_on_failure: bool = False) -> Rollout:
        """Create the model and endpoint config, bring the endpoint's tags to this deploy's, then create
        or update the endpoint; a retag only changes the tags of the endpoint and its config.

        Each resource is listed before its create call: a call that times out or loses its
        connection may still have created it, and the rollback deletes by name (these names
        are new to this deploy, and a delete of a missing resource is a no-op). Tag changes are
        listed likewise, and the rollback restores what the tags were.

        Raises:
            AwsError: a call failed; what this deploy created is deleted and the tags restored unless
                ``keep_on_failure``.
            KeyboardInterrupt: likewise, so that Ctrl-C between the calls leaves nothing untracked.
        """
        if reconciliation.action is Action.NOTHING:
            raise ValueError("nothing to apply: the endpoint already runs this artifact and these settings")
        sagemaker, name, tags = self._sagemaker, requests.name, requests.tags
        created: list[Resource] = []
        retagged: list[TagChanges] = []
        if reconciliation.action is Action.RETAG:
            self._retag(reconciliation.retag, retagged)
            return Rollout(requests, reconciliation, (), tuple(retagged))
        config = requests.config
        try:
            if reconciliation.reused_model is None:
                created.append(("model", name))
                create_resource(sagemaker.create_model, "CreateModel", name, **requests.model, Tags=tags)
                self.observer.on_event(f"created model {name}")
            else:
                config = config_for_model(config, reconciliation.reused_model)
                self.observer.on_event(f"kept model {reconciliation.reused_model}: only the endpoint config changes")
            created.append(("endpoint config", name))
            create_resource(sagemaker.create_endpoint_config, "CreateEndpointConfig", name, **config, Tags=tags)
            self.observer.on_event(f"created endpoint config {name}")
            if reconciliation.action is Action.CREATE:
                created.append(("endpoint", requests.endpoint_name))
            # UpdateEndpoint leaves the endpoint's tags alone: they follow the deploy here.
            self._retag(reconciliation.retag, retagged)
            self._point_endpoint(requests, reconciliation)
        except (AwsError, KeyboardInterrupt):
            if not keep_on_failure:
                self._roll_back(created, retagged)
            raise
        return Rollout(requests, reconciliation, tuple(created), tuple(retagged))

    def _retag(self, changes: tuple[TagChanges, ...], applied: list[TagChanges]) -> None:
        """Apply each of ``changes``, listing it in ``applied`` before its calls."""
        for change in changes:
            if change:
                applied.append(change)
                apply_tags(self._sagemaker, change)
                self.observer.on_event(f"tags of {change.arn.rsplit(':', 1)[-1]}: {change.summary()}")

    def _point_endpoint(self, requests: DeployRequests, reconciliation: Reconciliation) -> None:
        """CreateEndpoint or UpdateEndpoint with the new config."""
        sagemaker, name, config_name = self._sagemaker, requests.endpoint_name, requests.name
        if reconciliation.action is Action.CREATE:
            create_resource(sagemaker.create_endpoint, "CreateEndpoint", name, EndpointName=name,
                            EndpointConfigName=config_name, Tags=requests.tags,
                            ours=lambda: getattr(find_endpoint(sagemaker, name), "config_name", None) == config_name)
            self.observer.on_event(f"creating endpoint {name}")
        else:
            # An autoscaled endpoint keeps its count, or is deregistered first when its instance type changes.
            retain, deregistered = update_arguments(
                self.session.client("application-autoscaling"), sagemaker, name,
                current_config=getattr(reconciliation.endpoint, "config_name", None) or "",
                instance_type=requests.config["ProductionVariants"][0]["InstanceType"])
            if deregistered:
                self.observer.on_event(f"deregistered the autoscaling of {name}: its instance type changes")
            with aws_errors(f"sagemaker:UpdateEndpoint {name}"):
                sagemaker.update_endpoint(EndpointName=name, EndpointConfigName=config_name, **retain)
            self.observer.on_event(f"updating endpoint {name}")

    def _launch(self, requests: DeployRequests, found: Reconciliation) -> DeployRequests:
        """What to create: a new endpoint of several instances on a cold compile cache starts with one."""
        count = requests.config["ProductionVariants"][0]["InitialInstanceCount"]
        if found.action is not Action.CREATE or count < 2 or compile_cache_is_warm(self.session.client("s3"),
                                                                                   requests):
            return requests
        self.observer.on_event(f"the compile cache holds nothing for artifact {requests.fingerprint[:12]}: "
                               f"starting {requests.endpoint_name} with 1 instance, then {count} once it compiled")
        return single_instance(requests)

    def _grow(self, requests: DeployRequests, *, timeout: float | None, poll: float) -> Endpoint:
        """After a one-instance start: record the cache as warm, then raise the count and wait for it."""
        mark_compile_cache_warm(self.session.client("s3"), requests)
        count = requests.config["ProductionVariants"][0]["InitialInstanceCount"]
        scale(requests.endpoint_name, count, session=self.session)
        self.observer.on_event(f"the compile cache is warm: raising {requests.endpoint_name} to {count} instances")
        return Endpoint(requests.endpoint_name, self._sagemaker).wait(timeout, poll=poll, clock=self.clock,
                                                                      observer=self.observer)

    def apply_scaling(self, requests: DeployRequests) -> None:
        """Once the endpoint is InService: register its autoscaling and put its policy, or, when this deploy
        asks for a fixed count, deregister what an earlier deploy registered (see ``scaling.sync_scaling``)."""
        done = sync_scaling(self.session.client("application-autoscaling"), requests.endpoint_name, requests.scaling)
        if done:
            self.observer.on_event(done)

    def wait(self, rollout: Rollout, *, timeout: float | None = None, poll: float = DEFAULT_POLL_SECONDS,
             keep_on_failure: bool = False) -> Endpoint:
        """Wait until the endpoint settles on this rollout's config, tailing this deploy's log lines.

        Raises:
            EndpointFailedError: the endpoint failed, or an update was rolled back by SageMaker; what
                this deploy created was deleted (named in the message) unless ``keep_on_failure``.
            WaitInterrupted: Ctrl-C; the endpoint keeps going.
            AwsError: ``timeout`` passed (code ``Timeout``) or a call failed.
        """
        requests = rollout.requests
        endpoint = rollout.reconciliation.endpoint or Endpoint(requests.endpoint_name, self._sagemaker)
        # Only this deploy's lines: an updated endpoint's group already holds old ones.
        tailer = LogTailer(self.session.client("logs"), requests.endpoint_name,
                           start_time_ms=int(self.clock.now().timestamp() * 1000))
        try:
            endpoint.wait(timeout, poll=poll, clock=self.clock, observer=self.observer, logs=tailer)
            if endpoint.config_name != requests.name:
                # A failed update leaves the endpoint InService on its old config (SageMaker rolled it back).
                raise endpoint.failure()
        except KeyboardInterrupt:
            raise WaitInterrupted(requests.endpoint_name, endpoint.status) from None
        except EndpointFailedError as exc:
            if keep_on_failure:
                exc.hint = f"kept for inspection; delete with `inf2-deploy delete {requests.endpoint_name}`"
                raise
            removed = self._roll_back(rollout.created, rollout.retagged)
            raise EndpointFailedError(f"{exc.message}\nrolled back: {', '.join(removed) or 'nothing'}",
                                      value=requests.endpoint_name, hint=exc.hint) from None
        return endpoint

    def retire(self, reconciliation: Reconciliation) -> list[str]:
        """Delete the config and models an update superseded; returns what existed and was deleted."""
        removed = delete_resources(self._sagemaker, reconciliation.superseded)
        if removed:
            self.observer.on_event(f"removed the superseded {', '.join(removed)}")
        return removed

    def _roll_back(self, created: list[Resource] | tuple[Resource, ...],
                   retagged: list[TagChanges] | tuple[TagChanges, ...] = ()) -> list[str]:
        """Delete what this deploy created, newest first (endpoint, then config, then model), and
        restore the tags it changed."""
        removed = delete_resources(self._sagemaker, reversed(created))
        removed += self._discard_uploads(ignore_models=[name for kind, name in created if kind == "model"])
        for change in reversed(retagged):
            apply_tags(self._sagemaker, change.inverse())
        self.observer.on_event(f"rolled back: {', '.join(removed) or 'nothing'}"
                               + (" (tags restored)" if retagged else ""))
        return removed

    def _discard_uploads(self, *, ignore_models: list[str]) -> list[str]:
        """Delete the artifacts this deployer uploaded that no model reads (but ``ignore_models``,
        just rolled back); one another model reads (the same settings deployed elsewhere) stays."""
        if not self.uploaded:
            return []
        purge = purge_unused(self.session.client("s3"), self._sagemaker, self.uploaded, ignore_models=ignore_models)
        for uri, users in purge.kept.items():
            self.observer.on_event(f"kept {uri}: model {', '.join(users)} reads it")
        self.uploaded = [uri for uri in self.uploaded if uri in purge.kept]
        return purge.deleted

    def _as_found(self, staged: StagedArtifact, requests: DeployRequests, found: Reconciliation, *,
                  retagged: tuple[TagChanges, ...] = ()) -> Deployment:
        """The endpoint as it was found running this artifact and these settings: unchanged, or retagged."""
        done = f"updated its tags: {retagged[0].summary()}" if retagged else "nothing to do"
        message = (f"endpoint {requests.endpoint_name} already runs artifact {requests.fingerprint[:12]} "
                   f"with these settings; {done}")
        self.observer.on_event(message)
        endpoint = found.endpoint
        return Deployment(requests.endpoint_name, self.session.region, staged.s3_uri, found.running_model or "",
                          (endpoint.config_name if endpoint else None) or "", endpoint.status if endpoint else None,
                          changed=bool(retagged), session=self.session,
                          bytes_uploaded=staged.upload.bytes_uploaded, message=message)

