"""A SageMaker endpoint at run time: its status, ``fetch()`` and ``wait()``, and finding one by name.

:class:`Endpoint` is a small dataclass with an enum status and
``fetch()``/``wait()``, as huggingface_hub's inference endpoints are; the
clock is injected so that waits run instantly under test. While waiting, the
endpoint's CloudWatch Logs are tailed (see ``logs``) and every poll and line is
reported to the observer. The requests that create endpoints are in ``requests``.
"""
from __future__ import annotations

import collections
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from botocore.exceptions import ClientError
from inf2_serving.self_check import FAILURE_MARKER

from ..clock import Clock, SystemClock
from ..errors import AwsError, EndpointFailedError, EndpointNotFoundError
from ..observer import DeployObserver, NullObserver
from ..status import DeploymentStatus
from .logs import LogTailer
from .session import aws_errors, is_not_found

__all__ = [
    "DEFAULT_POLL_SECONDS",
    "Endpoint",
    "find_endpoint",
    "missing_endpoint",
]

DEFAULT_POLL_SECONDS = 15.0
# Lines kept for the failure message.
RECENT_LOG_LINES = 20


@dataclass
class Endpoint:
    """A SageMaker endpoint as last fetched.

    Args:
        name: the endpoint name.
        sagemaker: the SageMaker client used to fetch it.
    """

    name: str
    sagemaker: Any = field(repr=False, compare=False)
    status: DeploymentStatus | None = None
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
        self.status = DeploymentStatus(described["EndpointStatus"])
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
        observer: DeployObserver | None = None,
        logs: LogTailer | None = None,
        raise_on_failure: bool = True,
    ) -> Endpoint:
        """Poll until SageMaker stops working on the endpoint; returns self.

        Args:
            timeout: seconds before giving up (None: wait as long as it takes).
            poll: seconds between DescribeEndpoint calls.
            clock: time source; default the real clock.
            observer: told the status and seconds waited after every poll (``on_status``)
                and every new container log line (``on_log``).
            logs: the tailer to read log lines from (needed for ``on_log`` and failure context).
            raise_on_failure: raise when the endpoint ends Failed/UpdateRollbackFailed.

        Raises:
            EndpointFailedError: the endpoint failed; the message holds FailureReason and the
                last log lines.
            AwsError: ``timeout`` passed (code ``Timeout``) or a call failed.
            KeyboardInterrupt: passes through untouched; the endpoint keeps going.
        """
        clock = clock or SystemClock()
        observer = observer or NullObserver()
        start = clock.monotonic()
        while True:
            self.fetch()
            self._drain_logs(logs, observer)
            elapsed = clock.monotonic() - start
            if self.status is not None:
                observer.on_status(self.status, elapsed)
            if self.status is not None and not self.status.transitional:
                break
            if timeout is not None and elapsed >= timeout:
                raise AwsError(f"endpoint {self.name} is still {self.status.value if self.status else '?'} "
                               f"after {elapsed:.0f} s", code="Timeout",
                               hint=f"watch it with `inf2-deploy status {self.name}`")
            clock.sleep(poll)
        if raise_on_failure and self.status is not None and self.status.failed:
            # Container logs can trail the status by a few seconds; one more read catches them.
            self._drain_logs(logs, observer)
            raise self.failure()
        return self

    def _drain_logs(self, logs: LogTailer | None, observer: DeployObserver) -> None:
        if logs is None:
            return
        for line in logs.poll():
            self.recent_logs.append(line.message)
            if FAILURE_MARKER in line.message:
                self.diagnosis = line.message[line.message.index(FAILURE_MARKER):].strip()
            observer.on_log(line)

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
