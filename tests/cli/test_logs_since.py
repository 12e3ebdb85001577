"""``logs --since``: durations (10m, 1h, 2d; a bare number is minutes) and ISO-8601 times, checked as a usage
error naming --since, and applied to the CloudWatch lines (moto)."""
from __future__ import annotations

import argparse
import time
from datetime import datetime, timedelta, timezone

import boto3
import pytest
from inf2_deploy.cli import main
from inf2_deploy.cli.arg_types import since_time
from support.aws import REGION


@pytest.mark.parametrize(("text", "expected"), [
    ("10m", timedelta(minutes=10)), ("90s", timedelta(seconds=90)), ("1h", timedelta(hours=1)),
    ("2d", timedelta(days=2)), ("1w", timedelta(weeks=1)), ("1H", timedelta(hours=1)),
    ("5", timedelta(minutes=5)), ("2.5", timedelta(minutes=2.5)), ("0", timedelta(0)),
    ("2024-05-01T12:00:00Z", datetime(2024, 5, 1, 12, tzinfo=timezone.utc)),
    ("2024-05-01T14:00:00+02:00", datetime(2024, 5, 1, 12, tzinfo=timezone.utc)),
    ("2024-05-01T12:00:00", datetime(2024, 5, 1, 12, tzinfo=timezone.utc)),  # no offset: UTC
    ("2024-05-01", datetime(2024, 5, 1, tzinfo=timezone.utc)),
])
def test_since_reads_durations_and_times(text: str, expected: timedelta | datetime) -> None:
    assert since_time(text) == expected


@pytest.mark.parametrize("text", ["5x", "-5", "yesterday", "10 minutes", "2024-13-01", ""])
def test_a_bad_since_is_a_usage_error_naming_the_flag(text: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="neither a duration like 10m"):
        since_time(text)
    with pytest.raises(SystemExit) as exited:
        main(["logs", "gptj-prod", "--since", text])
    err = capsys.readouterr().err.strip().splitlines()
    assert exited.value.code == 2 and err[0].startswith("usage: inf2-deploy logs ")
    assert err[-1].startswith("inf2-deploy logs: error: argument --since: ")


@pytest.fixture
def endpoint_log(moto_server: str) -> datetime:
    """Two lines in gptj-prod's log group, 30 and 5 minutes old; returns the time they were written."""
    logs = boto3.client("logs", region_name=REGION)
    group = "/aws/sagemaker/Endpoints/gptj-prod"
    logs.create_log_group(logGroupName=group)
    logs.create_log_stream(logGroupName=group, logStreamName="AllTraffic/i-0")
    now_ms = int(time.time() * 1000)
    logs.put_log_events(logGroupName=group, logStreamName="AllTraffic/i-0", logEvents=[
        {"timestamp": now_ms - 30 * 60_000, "message": "compiling"},
        {"timestamp": now_ms - 5 * 60_000, "message": "ready"}])
    return datetime.fromtimestamp(now_ms / 1000, timezone.utc)


@pytest.mark.parametrize(("since", "lines"), [
    ("10m", ["ready"]), ("10", ["ready"]), ("1h", ["compiling", "ready"]), ("2d", ["compiling", "ready"]),
    ("1m", []),
])
def test_logs_since_a_duration(endpoint_log: datetime, capsys: pytest.CaptureFixture[str], since: str,
                               lines: list[str]) -> None:
    if not lines:  # nothing that recent: the endpoint is looked up, and moto has none by that name
        assert main(["logs", "gptj-prod", "--since", since, "--region", REGION]) == 2
        return
    assert main(["logs", "gptj-prod", "--since", since, "--region", REGION]) == 0
    assert capsys.readouterr().out.splitlines() == lines


def test_logs_since_an_iso_time(endpoint_log: datetime, capsys: pytest.CaptureFixture[str]) -> None:
    between = (endpoint_log - timedelta(minutes=15)).astimezone(timezone(timedelta(hours=-5)))
    assert main(["logs", "gptj-prod", "--since", between.isoformat(), "--region", REGION]) == 0
    assert capsys.readouterr().out.splitlines() == ["ready"]
    before = (endpoint_log - timedelta(hours=1)).replace(tzinfo=None).isoformat(timespec="seconds") + "Z"
    assert main(["logs", "gptj-prod", "--since", before, "--region", REGION]) == 0
    assert capsys.readouterr().out.splitlines() == ["compiling", "ready"]
