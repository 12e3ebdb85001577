"""SageMaker resources for one deploy: model, endpoint config, endpoint; waits and logs.

The request builders are pure functions of the spec, so tests assert the exact
CreateModel and CreateEndpointConfig requests. :class:`Endpoint` is a small
dataclass with an enum status and ``fetch()``/``wait()``; the clock is
injected so that waits run instantly under test. While waiting, the endpoint's
CloudWatch Logs are tailed, because Neuron compilation inside the container
takes 10-60 minutes and its progress only shows there.
"""
from __future__ import annotations

import collections
import hashlib
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import Enum
from typing import Any, NamedTuple

from botocore.exceptions import ClientError
from inf2_serving.contract import VARIANT_NAME
from inf2_serving.self_check import FAILURE_MARKER

from ..clock import Clock, SystemClock
from ..errors import AwsError, EndpointFailedError, EndpointNotFoundError
from ..spec.deployment_spec import DeploymentSpec
from ..version import __version__
from .session import aws_errors, is_not_found

__all__ = [
    "TAG_MANAGED",
    "TAG_VERSION",
    "TAG_FINGERPRINT",
    "TAG_SETTINGS",
    "TAG_ENDPOINT",
    "EndpointStatus",
    "Endpoint",
    "LogLine",
    "LogTailer",
    "find_endpoint",
    "log_group",
    "resource_name",
    "volume_size_gb",
    "model_request",
    "endpoint_config_request",
    "resource_tags",
    "settings_digest",
]

TAG_MANAGED = "inf2-deploy:managed"
TAG_VERSION = "inf2-deploy:version"
TAG_FINGERPRINT = "inf2-deploy:fingerprint"
TAG_SETTINGS = "inf2-deploy:settings"
TAG_ENDPOINT = "inf2-deploy:endpoint"
MAX_NAME = 63
DEFAULT_POLL_SECONDS = 15.0
# Lines kept for the failure message.
RECENT_LOG_LINES = 20
# CloudWatch may ingest an event after later ones from another instance's stream;
# re-reading this window (and skipping seen event ids) catches such stragglers.
LATE_EVENT_WINDOW_MS = 10_000


class EndpointStatus(str, Enum):
    """DescribeEndpoint's ``EndpointStatus``."""

    CREATING = "Creating"
    UPDATING = "Updating"
    IN_SERVICE = "InService"
    FAILED = "Failed"
    DELETING = "Deleting"
    OUT_OF_SERVICE = "OutOfService"
    ROLLING_BACK = "RollingBack"
    SYSTEM_UPDATING = "SystemUpdating"
    UPDATE_ROLLBACK_FAILED = "UpdateRollbackFailed"

    @property
    def transitional(self) -> bool:
        """True while SageMaker is still working on the endpoint."""
        return self in _TRANSITIONAL

    @property
    def failed(self) -> bool:
        return self in (EndpointStatus.FAILED, EndpointStatus.UPDATE_ROLLBACK_FAILED)


_TRANSITIONAL = frozenset({
    EndpointStatus.CREATING, EndpointStatus.UPDATING, EndpointStatus.DELETING,
    EndpointStatus.ROLLING_BACK, EndpointStatus.SYSTEM_UPDATING,
})


class LogLine(NamedTuple):
    """One CloudWatch Logs event."""

    timestamp_ms: int
    stream: str
    message: str


def log_group(endpoint_name: str) -> str:
    """The CloudWatch Logs group SageMaker writes an endpoint's container logs to."""
    return f"/aws/sagemaker/Endpoints/{endpoint_name}"


class LogTailer:
    """Returns each new line of an endpoint's log group once, across polls.

    The cursor is the newest timestamp seen (minus a late-arrival window) plus
    the event ids already returned inside that window; ``nextToken`` pages
    through each poll's result.

    Args:
        logs: a CloudWatch Logs client.
        endpoint_name: whose logs to read.
        start_time_ms: read events from this epoch time in ms (default: all).
    """

    def __init__(self, logs: Any, endpoint_name: str, *, start_time_ms: int = 0) -> None:
        self._logs = logs
        self.group = log_group(endpoint_name)
        self._cursor = start_time_ms
        self._seen: dict[str, int] = {}  # event id -> timestamp, for events inside the window

    def poll(self) -> list[LogLine]:
        """The lines that arrived since the last poll, oldest first.

        The log group appears only once a container starts; until then this is empty.

        Raises:
            AwsError: a CloudWatch Logs call failed for another reason.
        """
        events: list[dict[str, Any]] = []
        request: dict[str, Any] = {"logGroupName": self.group, "startTime": self._cursor, "interleaved": True}
        with aws_errors(f"logs:FilterLogEvents {self.group}"):
            try:
                while True:
                    page = self._logs.filter_log_events(**request)
                    events.extend(page.get("events", []))
                    token = page.get("nextToken")
                    if not token or token == request.get("nextToken"):
                        break
                    request["nextToken"] = token
            except ClientError as exc:
                if not is_not_found(exc):
                    raise
                return []
        fresh = [e for e in events if e["eventId"] not in self._seen]
        fresh.sort(key=lambda e: (e["timestamp"], e["eventId"]))
        for event in fresh:
            self._seen[event["eventId"]] = event["timestamp"]
        if self._seen:
            self._cursor = max(self._cursor, max(self._seen.values()) - LATE_EVENT_WINDOW_MS)
            self._seen = {key: ts for key, ts in self._seen.items() if ts >= self._cursor}
        return [LogLine(e["timestamp"], e.get("logStreamName", ""), e["message"].rstrip("\n")) for e in fresh]


StatusCallback = Callable[["EndpointStatus", float], None]
LogCallback = Callable[[LogLine], None]


@dataclass
class Endpoint:
    """A SageMaker endpoint as last fetched.

    Args:
        name: the endpoint name.
        sagemaker: the SageMaker client used to fetch it.
    """

    name: str
    sagemaker: Any = field(repr=False, compare=False)
    status: EndpointStatus | None = None
    config_name: str | None = None
    failure_reason: str | None = None
    arn: str | None = None
    created: datetime | None = None
    modified: datetime | None = None
    recent_logs: collections.deque[str] = field(
        default_factory=lambda: collections.deque(maxlen=RECENT_LOG_LINES), repr=False, compare=False)
    diagnosis: str | None = field(default=None, repr=False, compare=False)
    """The container's own account of why it refused to start (its self-check line), once seen in the logs."""

    def _apply(self, described: dict[str, Any]) -> Endpoint:
        self.status = EndpointStatus(described["EndpointStatus"])
        self.config_name = described.get("EndpointConfigName")
        self.failure_reason = described.get("FailureReason")
        self.arn = described.get("EndpointArn")
        self.created = described.get("CreationTime")
        self.modified = described.get("LastModifiedTime")
        return self

    def fetch(self) -> Endpoint:
        """Refresh from DescribeEndpoint; returns self.

        Raises:
            AwsError: the endpoint does not exist (code ``ValidationException``) or the call failed.
        """
        with aws_errors(f"sagemaker:DescribeEndpoint {self.name}"):
            return self._apply(self.sagemaker.describe_endpoint(EndpointName=self.name))

    def wait(
        self,
        timeout: float | None = None,
        *,
        poll: float = DEFAULT_POLL_SECONDS,
        clock: Clock | None = None,
        on_status: StatusCallback | None = None,
        on_log: LogCallback | None = None,
        logs: LogTailer | None = None,
        raise_on_failure: bool = True,
    ) -> Endpoint:
        """Poll until SageMaker stops working on the endpoint; returns self.

        Args:
            timeout: seconds before giving up (None: wait as long as it takes).
            poll: seconds between DescribeEndpoint calls.
            clock: time source; default the real clock.
            on_status: called after every poll with the status and seconds waited.
            on_log: called with every new container log line.
            logs: the tailer to read log lines from (needed for ``on_log`` and failure context).
            raise_on_failure: raise when the endpoint ends Failed/UpdateRollbackFailed.

        Raises:
            EndpointFailedError: the endpoint failed; the message holds FailureReason and the
                last log lines.
            AwsError: ``timeout`` passed (code ``Timeout``) or a call failed.
            KeyboardInterrupt: passes through untouched; the endpoint keeps going.
        """
        clock = clock or SystemClock()
        start = clock.monotonic()
        while True:
            self.fetch()
            self._drain_logs(logs, on_log)
            elapsed = clock.monotonic() - start
            if on_status is not None and self.status is not None:
                on_status(self.status, elapsed)
            if self.status is not None and not self.status.transitional:
                break
            if timeout is not None and elapsed >= timeout:
                raise AwsError(f"endpoint {self.name} is still {self.status.value if self.status else '?'} "
                               f"after {elapsed:.0f} s", code="Timeout",
                               hint=f"watch it with `inf2-deploy status {self.name}`")
            clock.sleep(poll)
        if raise_on_failure and self.status is not None and self.status.failed:
            # Container logs can trail the status by a few seconds; one more read catches them.
            self._drain_logs(logs, on_log)
            raise self.failure()
        return self

    def _drain_logs(self, logs: LogTailer | None, on_log: LogCallback | None) -> None:
        if logs is None:
            return
        for line in logs.poll():
            self.recent_logs.append(line.message)
            if FAILURE_MARKER in line.message:
                self.diagnosis = line.message[line.message.index(FAILURE_MARKER):].strip()
            if on_log is not None:
                on_log(line)

    def failure(self) -> EndpointFailedError:
        """The error describing this endpoint's failure, with the last log lines."""
        reason = self.failure_reason or "no FailureReason given"
        if self.diagnosis:
            reason = f"{self.diagnosis} (SageMaker: {reason})"
        message = f"endpoint {self.name} is {self.status.value if self.status else '?'}: {reason}"
        if self.recent_logs:
            message += "\nlast log lines:\n" + "\n".join(f"  {line}" for line in self.recent_logs)
        return EndpointFailedError(message, value=self.name,
                                   hint=f"see `inf2-deploy logs {self.name}`")


def find_endpoint(sagemaker: Any, name: str) -> Endpoint | None:
    """The endpoint called ``name``, or None when there is none.

    Raises:
        AwsError: DescribeEndpoint failed for a reason other than not-found.
    """
    with aws_errors(f"sagemaker:DescribeEndpoint {name}"):
        try:
            described = sagemaker.describe_endpoint(EndpointName=name)
        except ClientError as exc:
            if is_not_found(exc):
                return None
            raise
    return Endpoint(name, sagemaker)._apply(described)


def missing_endpoint(sagemaker: Any, name: str, region: str) -> EndpointNotFoundError:
    """The error for an endpoint that does not exist, naming the newest ones that do."""
    try:
        with aws_errors("sagemaker:ListEndpoints"):
            listed = sagemaker.list_endpoints(SortBy="CreationTime", SortOrder="Descending", MaxResults=5)
        names = [item["EndpointName"] for item in listed.get("Endpoints", [])]
        there = f"endpoints there: {', '.join(names)}" if names else "there are no endpoints there"
    except AwsError:  # not allowed to list: the lookup's answer still stands
        there = "could not list the endpoints there"
    return EndpointNotFoundError(f"no endpoint named {name} in {region} ({there})", code="NotFound",
                                 field="name", value=name, hint="see `inf2-deploy list`")


def resource_name(endpoint_name: str, fingerprint: str, now: datetime) -> str:
    """``<endpoint>-<fingerprint[:8]>-<UTC yyyymmddHHMMSSmmm>``, cut to SageMaker's 63 characters.

    Models and endpoint configs get such names, unique per deploy, so a new
    config can be created while the old one still serves traffic. Milliseconds
    keep two deploys started within one second apart.
    """
    short = re.sub(r"[^a-zA-Z0-9]", "", fingerprint)[:8] or "0"
    utc = now.astimezone(timezone.utc)
    suffix = f"-{short}-{utc:%Y%m%d%H%M%S}{utc.microsecond // 1000:03d}"
    base = endpoint_name[: MAX_NAME - len(suffix)].rstrip("-")
    return base + suffix


def volume_size_gb(artifact_bytes: int) -> int:
    """The endpoint's EBS volume for an artifact of ``artifact_bytes``.

    The volume holds the downloaded weights (1x), the copy transformers-neuronx
    writes while splitting them per layer for loading (about 1x), and the
    compiled graphs plus the local Neuron compile cache (up to about 1x for
    GPT-J's buckets): 3x the artifact, plus 10 GB for the container's logs and
    scratch, and never under 30 GB.
    """
    return max(30, math.ceil(3 * artifact_bytes / 1e9) + 10)


def resource_tags(spec: DeploymentSpec, *, endpoint_name: str, fingerprint: str, settings: str) -> list[dict]:
    """The tags every resource of one deploy carries: ours first, then the spec's."""
    ours = {
        TAG_MANAGED: "true",
        TAG_VERSION: __version__,
        TAG_FINGERPRINT: fingerprint,
        TAG_SETTINGS: settings,
        TAG_ENDPOINT: endpoint_name,
    }
    extra = {key: value for key, value in spec.tags.items() if key not in ours}
    return [{"Key": key, "Value": value} for key, value in {**ours, **extra}.items()]


def model_request(
    spec: DeploymentSpec,
    *,
    name: str,
    image_uri: str,
    model_data_uri: str,
    compile_cache_url: str,
    hf_token: str | None = None,
) -> dict[str, Any]:
    """The CreateModel request, without tags.

    Args:
        spec: the deployment.
        name: the model name (see ``resource_name``).
        image_uri: the LMI djl-neuronx image.
        model_data_uri: the artifact's S3 prefix; a trailing slash is added if missing.
        compile_cache_url: NEURON_COMPILE_CACHE_URL for the container.
        hf_token: passed as HF_TOKEN only when given. DescribeModel shows it to
            anyone with read access, so pass it only for gated weights.
    """
    environment = {"NEURON_COMPILE_CACHE_URL": compile_cache_url}
    if spec.neuron_cc_flags:
        environment["NEURON_CC_FLAGS"] = spec.neuron_cc_flags
    environment.update(spec.env)
    if hf_token:
        environment["HF_TOKEN"] = hf_token
    request: dict[str, Any] = {
        "ModelName": name,
        "PrimaryContainer": {
            "Image": image_uri,
            "ModelDataSource": {
                "S3DataSource": {
                    "S3Uri": model_data_uri.rstrip("/") + "/",
                    "S3DataType": "S3Prefix",
                    "CompressionType": "None",
                }
            },
            "Environment": environment,
        },
        "ExecutionRoleArn": spec.role_arn,
    }
    if spec.subnets or spec.security_group_ids:
        request["VpcConfig"] = {"Subnets": list(spec.subnets), "SecurityGroupIds": list(spec.security_group_ids)}
    if spec.enable_network_isolation:
        request["EnableNetworkIsolation"] = True
    return request


def endpoint_config_request(
    spec: DeploymentSpec, *, name: str, model_name: str, instance_type: str, artifact_bytes: int
) -> dict[str, Any]:
    """The CreateEndpointConfig request, without tags: one variant taking all traffic."""
    variant: dict[str, Any] = {
        "VariantName": VARIANT_NAME,
        "ModelName": model_name,
        "InstanceType": instance_type,
        "InitialInstanceCount": spec.instance_count,
        # Neuron compilation runs inside the container before /ping turns healthy.
        "ContainerStartupHealthCheckTimeoutInSeconds": spec.startup_health_check_timeout,
        "ModelDataDownloadTimeoutInSeconds": spec.model_download_timeout,
        "VolumeSizeInGB": spec.volume_size_gb or volume_size_gb(artifact_bytes),
    }
    if spec.inference_ami_version:
        variant["InferenceAmiVersion"] = spec.inference_ami_version
    return {"EndpointConfigName": name, "ProductionVariants": [variant]}


def settings_digest(model: dict[str, Any], config: dict[str, Any]) -> str:
    """A short hash of what the model and config requests configure, names and secrets aside.

    Two deploys with the same fingerprint and digest would run the same thing,
    so the second one is a no-op.
    """
    container = dict(model["PrimaryContainer"])
    environment = dict(container["Environment"])
    if "HF_TOKEN" in environment:  # a token's presence matters, its value must not leave a trace
        environment["HF_TOKEN"] = "<set>"
    container["Environment"] = environment
    variants = [{k: v for k, v in variant.items() if k != "ModelName"} for variant in config["ProductionVariants"]]
    payload = {
        "model": {**{k: v for k, v in model.items() if k != "ModelName"}, "PrimaryContainer": container},
        "config": {**{k: v for k, v in config.items() if k != "EndpointConfigName"},
                   "ProductionVariants": variants},
    }
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
