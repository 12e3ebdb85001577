"""An endpoint's container logs in CloudWatch Logs, read once each across polls.

Neuron compilation inside the container takes 10-60 minutes and its progress
only shows there, so a deploy tails them while it waits.
"""
from __future__ import annotations

from typing import Any, NamedTuple

from botocore.exceptions import ClientError

from .session import aws_errors, is_not_found

__all__ = ["LATE_EVENT_WINDOW_MS", "LogLine", "LogTailer", "log_group"]

# CloudWatch may ingest an event after later ones from another instance's stream;
# re-reading this window (and skipping seen event ids) catches such stragglers.
LATE_EVENT_WINDOW_MS = 10_000


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
        fresh = [event for event in self._read() if event["eventId"] not in self._seen]
        fresh.sort(key=lambda event: (event["timestamp"], event["eventId"]))
        for event in fresh:
            self._seen[event["eventId"]] = event["timestamp"]
        if self._seen:
            self._cursor = max(self._cursor, max(self._seen.values()) - LATE_EVENT_WINDOW_MS)
            self._seen = {key: ts for key, ts in self._seen.items() if ts >= self._cursor}
        return [LogLine(e["timestamp"], e.get("logStreamName", ""), e["message"].rstrip("\n")) for e in fresh]

    def _read(self) -> list[dict[str, Any]]:
        """Every event from the cursor on, all pages; none while the group does not exist."""
        events: list[dict[str, Any]] = []
        request: dict[str, Any] = {"logGroupName": self.group, "startTime": self._cursor, "interleaved": True}
        with aws_errors(f"logs:FilterLogEvents {self.group}"):
            try:
                while True:
                    page = self._logs.filter_log_events(**request)
                    events.extend(page.get("events", []))
                    token = page.get("nextToken")
                    if not token or token == request.get("nextToken"):
                        return events
                    request["nextToken"] = token
            except ClientError as exc:
                if not is_not_found(exc):
                    raise
                return []
