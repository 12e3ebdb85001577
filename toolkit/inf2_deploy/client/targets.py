"""Deployment targets: a name or URL resolved once to where it runs, with one set of verbs.

``resolve(name_or_url)`` answers "a local deployment by that name, else a
SageMaker endpoint" in one place, for every command and for :func:`connect`::

    target = resolve("gpt-j-6b-prod")          # SageMakerTarget (no AWS call yet)
    target.describe().status                   # DeploymentStatus.IN_SERVICE
    target.wait(timeout=3600)                  # after deploy --no-wait: until it settles
    with target.predictor() as predictor: ...  # Predictor or LocalPredictor
    for line in target.logs(follow=False): ...
    target.delete()

A stopped local deployment reads the same everywhere: ``predictor()`` and
``wait()`` raise :class:`~inf2_deploy.errors.DeploymentStoppedError`,
``describe()`` reports ``Stopped``, ``logs()`` still shows its log file, and
``delete()`` forgets it.
"""
from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from ..clock import Clock, SystemClock
from ..errors import ConfigError, DeploymentStoppedError, EndpointFailedError
from ..spec.validators import check_endpoint_name
from ..status import DeploymentStatus
from .description import TargetDescription

if TYPE_CHECKING:
    from ..aws.teardown import Teardown
    from ..local.records import LocalDeployment, LocalStore
    from ..observer import DeployObserver

__all__ = ["LocalTarget", "SageMakerTarget", "Target", "TargetDescription", "connect", "resolve", "resolve_url"]

DEFAULT_LOGS_SINCE = timedelta(hours=1)
CLOUDWATCH_POLL_SECONDS = 5.0
LOCAL_LOG_POLL_SECONDS = 0.5
PING_TIMEOUT_SECONDS = 5.0


def _read_new_lines(stream: Any) -> Iterator[str]:
    while True:
        line = stream.readline()
        if not line:
            return
        yield line.rstrip("\n")


class LocalTarget:
    """A server on this machine: a recorded local deployment, or any LMI-compatible server at a URL.

    Args:
        url: the server's base URL.
        deployment: the local deployment's record, when the server is one that ``deploy --local`` started.
        store: the store holding that record; default the user's.
        clock: time source for following the log and stopping the server.
    """

    kind = "local"

    def __init__(self, url: str, *, deployment: LocalDeployment | None = None, store: LocalStore | None = None,
                 clock: Clock | None = None) -> None:
        self.url = url.rstrip("/")
        self.deployment = deployment
        self.name = deployment.name if deployment is not None else self.url
        self._store = store
        self._clock = clock or SystemClock()

    def __repr__(self) -> str:
        return f"LocalTarget({self.name!r})"

    @property
    def log_location(self) -> str | None:
        """The server's log file, when this machine started it."""
        return self.deployment.log_file if self.deployment is not None else None

    def _stopped(self) -> bool:
        return self.deployment is not None and self.deployment.status is DeploymentStatus.STOPPED

    def predictor(self) -> Any:
        """A :class:`~inf2_deploy.client.predictor.LocalPredictor` for the server.

        Raises:
            DeploymentStoppedError: the recorded server has exited.
        """
        from .predictor import LocalPredictor

        if self._stopped():
            raise DeploymentStoppedError(self.name, pid=self.deployment.pid, log_file=self.deployment.log_file)
        return LocalPredictor(self.url, name=None if self.deployment is None else self.name)

    def describe(self) -> TargetDescription:
        """The recorded deployment's state; for a bare URL, what its ``/ping`` answers."""
        record = self.deployment
        if record is None:
            return TargetDescription(name=self.name, kind=self.kind, status=self._ping(), url=self.url)
        status = DeploymentStatus.STOPPED if self._stopped() else DeploymentStatus.IN_SERVICE
        return TargetDescription(name=record.name, kind=self.kind, status=status, url=record.url, pid=record.pid,
                                 artifact=record.artifact_dir, created=record.started_at)

    def _ping(self) -> DeploymentStatus:
        import httpx

        try:
            response = httpx.get(f"{self.url}/ping", timeout=PING_TIMEOUT_SECONDS)
        except httpx.TransportError:
            return DeploymentStatus.OUT_OF_SERVICE
        if response.status_code == 200:
            return DeploymentStatus.IN_SERVICE
        # The server's readiness while it is not serving: LOADING, NOT_READY or FAILED.
        state = response.json().get("status") if "json" in response.headers.get("content-type", "") else None
        return DeploymentStatus.FAILED if state == "FAILED" else DeploymentStatus.CREATING

    def wait(self, *, timeout: float | None = None, observer: DeployObserver | None = None) -> DeploymentStatus:
        """A local server is ready or stopped (``deploy --local`` returns once it serves): the status at once.

        ``timeout`` and ``observer`` do not apply; they are accepted so that every target waits alike.

        Raises:
            DeploymentStoppedError: the recorded server has exited.
        """
        if self._stopped():
            raise DeploymentStoppedError(self.name, pid=self.deployment.pid, log_file=self.deployment.log_file)
        return self.describe().status

    def logs(self, *, follow: bool = False, since: datetime | None = None) -> Iterator[str]:
        """The server's log lines; with ``follow``, new lines as they are written, until interrupted.

        ``since`` does not apply: the log file holds this server's whole run.

        Raises:
            ConfigError: the target is a bare URL, whose log this machine does not know.
        """
        if self.deployment is None:
            raise ConfigError("a server given by URL has no log here; name a local deployment or an endpoint",
                              field="name", value=self.url)
        with open(self.deployment.log_file, encoding="utf-8", errors="replace") as stream:
            yield from _read_new_lines(stream)
            while follow:
                yield from _read_new_lines(stream)
                self._clock.sleep(LOCAL_LOG_POLL_SECONDS)

    def delete(self, *, purge: bool = False, dry_run: bool = False, wait: bool = False) -> list[str]:
        """Stop the server (if it still runs) and forget the deployment; with ``dry_run``, only say so.

        ``purge`` and ``wait`` do not apply: the packaged artifact stays in the local cache,
        where the next deploy of the same model reuses it.

        Raises:
            ConfigError: the target is a bare URL, which this toolkit did not start.
        """
        from ..local.supervisor import LocalSupervisor

        if self.deployment is None:
            raise ConfigError("a server given by URL is not a deployment inf2-deploy manages",
                              field="name", value=self.url)
        record = self.deployment if dry_run else LocalSupervisor(self._store, self._clock).delete(self.deployment.name)
        return [f"local deployment {record.name} ({record.url}, pid {record.pid})"]


class SageMakerTarget:
    """A SageMaker endpoint. No AWS call is made until a verb needs one.

    Args:
        name: the endpoint name.
        region: its AWS region; default the standard resolution.
        session: an :class:`~inf2_deploy.aws.session.Session`; default one for ``region``.
        clock: time source for following logs and for waiting in ``wait`` and ``delete``.
    """

    kind = "sagemaker"

    def __init__(self, name: str, *, region: str | None = None, session: Any = None,
                 clock: Clock | None = None) -> None:
        self.name = name
        self._region = region
        self._session = session
        self._clock = clock or SystemClock()

    def __repr__(self) -> str:
        return f"SageMakerTarget({self.name!r})"

    @property
    def session(self) -> Any:
        """The AWS session, made on first use."""
        if self._session is None:
            from ..aws.session import make_session

            self._session = make_session(self._region)
        return self._session

    @property
    def log_location(self) -> str:
        """Where the endpoint's container logs are: its CloudWatch Logs group."""
        from ..aws.logs import log_group

        return log_group(self.name)

    def predictor(self) -> Any:
        """A :class:`~inf2_deploy.client.predictor.Predictor` for the endpoint."""
        from .predictor import Predictor

        return Predictor(self.name, session=self.session)

    def _endpoint(self) -> Any:
        from ..aws.endpoint import find_endpoint, missing_endpoint

        sagemaker = self.session.client("sagemaker")
        endpoint = find_endpoint(sagemaker, self.name)
        if endpoint is None:
            raise missing_endpoint(sagemaker, self.name, self.session.region)
        return endpoint

    def describe(self) -> TargetDescription:
        """The endpoint, its config's variant, its instance counts and autoscaling, and the artifact its
        model reads.

        Raises:
            EndpointNotFoundError: no endpoint by that name (exit code 2).
            AwsError: a describe call failed.
        """
        from ..aws.artifact_store import model_data_uris
        from ..aws.scaling import describe_scaling
        from ..aws.session import aws_errors

        endpoint = self._endpoint()
        sagemaker = self.session.client("sagemaker")
        with aws_errors(f"sagemaker:DescribeEndpointConfig {endpoint.config_name}"):
            variant = sagemaker.describe_endpoint_config(
                EndpointConfigName=endpoint.config_name)["ProductionVariants"][0]
        model_name = variant.get("ModelName")
        with aws_errors(f"sagemaker:DescribeModel {model_name}"):
            model = sagemaker.describe_model(ModelName=model_name)
        artifact = next(iter(model_data_uris(model)), None)
        scaling = describe_scaling(sagemaker, self.session.client("application-autoscaling"), self.name)
        return TargetDescription(
            name=self.name, kind=self.kind, region=self.session.region,
            status=endpoint.status or DeploymentStatus.OUT_OF_SERVICE,
            endpoint_config=endpoint.config_name, model=model_name, instance_type=variant.get("InstanceType"),
            instance_count=variant.get("InitialInstanceCount"), current_instances=scaling.current_instances,
            desired_instances=scaling.desired_instances,
            autoscaling=f"{scaling.min_instances}..{scaling.max_instances} instances" if scaling.autoscaled else None,
            scaling_policies=scaling.policies, scaling_activities=tuple(
                f"{a.start} {a.status}: {a.description}" for a in scaling.activities), artifact=artifact,
            failure_reason=endpoint.failure_reason,
            created=endpoint.created.isoformat() if endpoint.created else None,
            modified=endpoint.modified.isoformat() if endpoint.modified else None,
        )

    def wait(self, *, timeout: float | None = None, poll: float | None = None,
             observer: DeployObserver | None = None) -> DeploymentStatus:
        """Wait until SageMaker stops working on the endpoint (after ``deploy --no-wait``), as deploy waits.

        The observer hears the status after each poll and every container log line written since the
        endpoint's last change (its creation or the update under way), so nothing the start wrote is missed.

        Args:
            timeout: seconds before giving up (the endpoint keeps going); None waits as long as it takes.
            poll: seconds between status polls; default deploy's.
            observer: receives ``on_status`` and ``on_log``.

        Returns:
            The final status: ``InService``, or ``OutOfService`` for an endpoint SageMaker took out of service.

        Raises:
            EndpointNotFoundError: no endpoint by that name (exit code 2).
            EndpointFailedError: the endpoint failed, or an update under way failed and SageMaker rolled it
                back; the message holds SageMaker's FailureReason (and the last log lines).
            WaitInterrupted: Ctrl-C; the endpoint keeps going.
            AwsError: ``timeout`` passed (code ``Timeout``) or a call failed.
        """
        from ..aws.deployment import WaitInterrupted
        from ..aws.endpoint import DEFAULT_POLL_SECONDS
        from ..aws.logs import LogTailer

        endpoint = self._endpoint()
        working = endpoint.status is not None and endpoint.status.transitional
        since = endpoint.modified or endpoint.created or self._clock.now()
        tailer = LogTailer(self.session.client("logs"), self.name, start_time_ms=int(since.timestamp() * 1000))
        try:
            endpoint.wait(timeout, poll=DEFAULT_POLL_SECONDS if poll is None else poll, clock=self._clock,
                          observer=observer, logs=tailer)
        except KeyboardInterrupt:
            raise WaitInterrupted(self.name, endpoint.status) from None
        if working and endpoint.status is DeploymentStatus.IN_SERVICE and endpoint.failure_reason:
            # A failed update: SageMaker rolled back to the previous config, which still serves.
            raise EndpointFailedError(f"the update of endpoint {self.name} failed and SageMaker rolled it back to "
                                      f"{endpoint.config_name}, which still serves: {endpoint.failure_reason}",
                                      value=self.name, hint=f"see `inf2-deploy logs {self.name}`")
        return endpoint.status or DeploymentStatus.OUT_OF_SERVICE

    def logs(self, *, follow: bool = False, since: datetime | None = None) -> Iterator[str]:
        """CloudWatch's ``/aws/sagemaker/Endpoints/NAME`` lines since ``since`` (default an hour back).

        A deleted endpoint's log lines remain; only when there are none is the endpoint looked up.

        Raises:
            EndpointNotFoundError: no lines and no endpoint by that name.
            AwsError: a CloudWatch Logs call failed.
        """
        from ..aws.logs import LogTailer

        start = since or self._clock.now() - DEFAULT_LOGS_SINCE
        tailer = LogTailer(self.session.client("logs"), self.name, start_time_ms=int(start.timestamp() * 1000))
        lines = tailer.poll()
        if not lines:
            self._endpoint()
        while True:
            for line in lines:
                yield line.message
            if not follow:
                return
            self._clock.sleep(CLOUDWATCH_POLL_SECONDS)
            lines = tailer.poll()

    def delete(self, *, purge: bool = False, dry_run: bool = False, wait: bool = False) -> Teardown:
        """Delete the endpoint, its endpoint config and model; with ``purge``, every artifact prefix it
        deployed that no other live model reads; with ``dry_run``, nothing (see ``delete_deployment``).

        Returns:
            What was deleted (iterating it yields one item per resource) and the prefixes kept.
        """
        from ..aws.teardown import delete_deployment

        return delete_deployment(self.name, purge_artifacts=purge, dry_run=dry_run, wait=wait, session=self.session,
                                 clock=self._clock)


Target = LocalTarget | SageMakerTarget


def resolve_url(url: str, *, store: LocalStore | None = None, clock: Clock | None = None) -> LocalTarget:
    """The server at ``url``; a running local deployment recorded at that URL lends its record
    (and so its artifact and log).

    Raises:
        ConfigError: ``url`` is not an http:// or https:// URL (field ``url``).
    """
    from ..local.records import default_store

    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise ConfigError("must be an http:// or https:// URL", field="url", value=url)
    store = store if store is not None else default_store()
    known = [d for d in store.list()
             if d.url.rstrip("/") == url.rstrip("/") and d.status is DeploymentStatus.IN_SERVICE]
    return LocalTarget(url, deployment=known[0] if known else None, store=store, clock=clock)


def resolve(name_or_url: str, *, region: str | None = None, session: Any = None, store: LocalStore | None = None,
            clock: Clock | None = None) -> Target:
    """The deployment ``name_or_url`` refers to: an ``http(s)://`` URL, a local deployment's name,
    or a SageMaker endpoint's name, tried in that order.

    Only the local records are read; AWS is not called until a verb needs it.

    Args:
        name_or_url: what to resolve.
        region: the AWS region of a SageMaker endpoint.
        session: the AWS session for a SageMaker endpoint (tests pass one bound to moto).
        store: where local deployments are recorded; default the user's (``INF2_DEPLOY_HOME`` moves it).
        clock: time source for logs and waits.

    Raises:
        ConfigError: ``name_or_url`` is neither a URL nor a valid deployment name (field ``name``).
    """
    from ..local.records import default_store

    if isinstance(name_or_url, str) and name_or_url.startswith(("http://", "https://")):
        return resolve_url(name_or_url, store=store, clock=clock)
    name = check_endpoint_name(name_or_url, "name")
    store = store if store is not None else default_store()
    deployment = store.get(name)
    if deployment is not None:
        return LocalTarget(deployment.url, deployment=deployment, store=store, clock=clock)
    return SageMakerTarget(name, region=region, session=session, clock=clock)


def connect(target: str, *, region: str | None = None, store: LocalStore | None = None) -> Any:
    """A predictor for ``target``: an ``http(s)://`` URL, a local deployment's name, or a
    SageMaker endpoint name, tried in that order.

    Args:
        target: where to send requests.
        region: the AWS region of a SageMaker endpoint; default the standard resolution.
        store: where local deployments are recorded; default the user's.

    Returns:
        A ``LocalPredictor`` or a ``Predictor``; both have ``generate``, ``stream`` and ``stream_events``.

    Raises:
        DeploymentStoppedError: ``target`` names a local deployment whose server has stopped.
        ConfigError: ``target`` is not a URL or valid name.
        CredentialsError: a SageMaker endpoint, but no AWS region or credentials.
    """
    return resolve(target, region=region, store=store).predictor()
