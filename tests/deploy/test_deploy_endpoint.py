"""Endpoint waits, log tailing, names and sizing, with botocore's Stubber and a fake clock."""
from __future__ import annotations

import json
import re
from datetime import datetime, timezone

import pytest
from botocore.awsrequest import AWSResponse
from botocore.stub import Stubber
from inf2_deploy.aws.endpoint import Endpoint
from inf2_deploy.aws.logs import LogTailer
from inf2_deploy.aws.requests import resource_name, volume_size_gb
from inf2_deploy.errors import AwsError, EndpointFailedError
from inf2_deploy.status import DeploymentStatus
from sagemaker_fakes import RecordingObserver
from support.aws import REGION
from support.clock import FakeClock

ARN = f"arn:aws:sagemaker:{REGION}:123456789012:endpoint/gptj"
WHEN = datetime(2025, 1, 2, tzinfo=timezone.utc)


def _described(status: str, **extra: object) -> dict:
    return {"EndpointName": "gptj", "EndpointArn": ARN, "EndpointConfigName": "gptj-cfg",
            "EndpointStatus": status, "CreationTime": WHEN, "LastModifiedTime": WHEN, **extra}


def _event(event_id: str, timestamp: int, message: str) -> dict:
    return {"eventId": event_id, "timestamp": timestamp, "message": message + "\n", "logStreamName": "AllTraffic/i-1"}


def test_wait_walks_creating_to_in_service(make_client):
    sagemaker = make_client("sagemaker")
    clock = FakeClock()
    observer = RecordingObserver()
    with Stubber(sagemaker) as stub:
        for status in ("Creating", "Creating", "InService"):
            stub.add_response("describe_endpoint", _described(status), {"EndpointName": "gptj"})
        endpoint = Endpoint("gptj", sagemaker).wait(poll=20, clock=clock, observer=observer)
        stub.assert_no_pending_responses()
    assert endpoint.status is DeploymentStatus.IN_SERVICE
    assert observer.statuses == [(DeploymentStatus.CREATING, 0), (DeploymentStatus.CREATING, 20),
                                 (DeploymentStatus.IN_SERVICE, 40)]
    assert clock.sleeps == [20, 20]


def test_wait_raises_failure_reason_with_the_last_log_lines(make_client):
    sagemaker, logs = make_client("sagemaker"), make_client("logs")
    group = "/aws/sagemaker/Endpoints/gptj"
    with Stubber(sagemaker) as sm_stub, Stubber(logs) as logs_stub:
        sm_stub.add_response("describe_endpoint", _described("Creating"), {"EndpointName": "gptj"})
        sm_stub.add_response("describe_endpoint", _described("Failed", FailureReason="ping health check failed"),
                             {"EndpointName": "gptj"})
        logs_stub.add_response("filter_log_events", {"events": [_event("a", 1000, "compiling bucket 128")]},
                               {"logGroupName": group, "startTime": 0, "interleaved": True})
        logs_stub.add_response("filter_log_events", {"events": [_event("b", 2000, "neuronx-cc: out of memory")]},
                               {"logGroupName": group, "startTime": 0, "interleaved": True})
        logs_stub.add_response("filter_log_events", {"events": []},
                               {"logGroupName": group, "startTime": 0, "interleaved": True})
        with pytest.raises(EndpointFailedError) as failed:
            Endpoint("gptj", sagemaker).wait(clock=FakeClock(), logs=LogTailer(logs, "gptj"))
    text = str(failed.value)
    assert text.startswith("endpoint gptj is Failed: ping health check failed")
    assert "  compiling bucket 128\n  neuronx-cc: out of memory" in text
    assert "inf2-deploy logs gptj" in text


def test_a_failed_self_check_line_is_the_reason_even_after_later_lines(make_client):
    from inf2_serving.self_check import FAILURE_MARKER

    sagemaker, logs = make_client("sagemaker"), make_client("logs")
    group = "/aws/sagemaker/Endpoints/gptj"
    check = f"{FAILURE_MARKER} next-token logits do not depend on the middle of the prompt"
    later = [_event(f"t{i}", 3000 + i, f"  at ai.djl.python.Worker line {i}") for i in range(40)]
    with Stubber(sagemaker) as sm_stub, Stubber(logs) as logs_stub:
        sm_stub.add_response("describe_endpoint", _described("Failed", FailureReason="ping health check failed"),
                             {"EndpointName": "gptj"})
        logs_stub.add_response("filter_log_events",
                               {"events": [_event("a", 2000, f"[ERROR] PyProcess - {check}"), *later]},
                               {"logGroupName": group, "startTime": 0, "interleaved": True})
        logs_stub.add_response("filter_log_events", {"events": []},
                               {"logGroupName": group, "startTime": 0, "interleaved": True})
        with pytest.raises(EndpointFailedError) as failed:
            Endpoint("gptj", sagemaker).wait(clock=FakeClock(), logs=LogTailer(logs, "gptj"))
    first_line = str(failed.value).splitlines()[0]
    assert first_line == f"endpoint gptj is Failed: {check} (SageMaker: ping health check failed)"


def test_wait_gives_up_after_timeout_without_deleting_anything(make_client):
    sagemaker = make_client("sagemaker")
    clock = FakeClock()
    with Stubber(sagemaker) as stub:
        for _ in range(3):
            stub.add_response("describe_endpoint", _described("Creating"), {"EndpointName": "gptj"})
        with pytest.raises(AwsError) as timed_out:
            Endpoint("gptj", sagemaker).wait(timeout=60, poll=30, clock=clock)
    assert timed_out.value.code == "Timeout"
    assert "still Creating after 60 s" in str(timed_out.value)


def test_log_tailer_pages_and_never_repeats_a_line(make_client):
    logs = make_client("logs")
    group = "/aws/sagemaker/Endpoints/gptj"
    base = {"logGroupName": group, "interleaved": True}
    with Stubber(logs) as stub:
        # first poll: two pages joined by nextToken
        stub.add_response("filter_log_events", {"events": [_event("1", 100_000, "one"), _event("2", 100_500, "two")],
                                                "nextToken": "page2"}, {**base, "startTime": 50_000})
        stub.add_response("filter_log_events", {"events": [_event("3", 101_000, "three")]},
                          {**base, "startTime": 50_000, "nextToken": "page2"})
        # second poll starts 10 s before the newest event and sees those events again, plus a
        # straggler ingested late with an older timestamp, plus a new one
        stub.add_response("filter_log_events", {"events": [
            _event("1", 100_000, "one"), _event("2", 100_500, "two"), _event("3", 101_000, "three"),
            _event("late", 99_000, "late"), _event("4", 120_000, "four")]}, {**base, "startTime": 91_000})
        stub.add_response("filter_log_events", {"events": [_event("4", 120_000, "four")]},
                          {**base, "startTime": 110_000})
        tailer = LogTailer(logs, "gptj", start_time_ms=50_000)
        first, second, third = tailer.poll(), tailer.poll(), tailer.poll()
        stub.assert_no_pending_responses()
    assert [line.message for line in first] == ["one", "two", "three"]
    assert [line.message for line in second] == ["late", "four"]
    assert third == []
    assert first[0].stream == "AllTraffic/i-1"


def test_log_tailer_is_quiet_until_the_group_exists(make_client):
    logs = make_client("logs")
    with Stubber(logs) as stub:
        stub.add_client_error("filter_log_events", "ResourceNotFoundException", "The specified log group does not "
                              "exist.")
        assert LogTailer(logs, "gptj").poll() == []


def test_throttling_is_retried_by_the_client(make_client):
    """ThrottlingException then success: the adaptive retry mode makes the second attempt."""
    sagemaker = make_client("sagemaker")
    attempts = []

    class Body:
        def __init__(self, data: bytes) -> None:
            self.data = data

        def stream(self, **kwargs: object):
            yield self.data

    def answer(request, **kwargs: object) -> AWSResponse:
        attempts.append(request.url)
        if len(attempts) == 1:
            body = {"__type": "ThrottlingException", "message": "Rate exceeded"}
            return AWSResponse(request.url, 400, {"x-amzn-RequestId": "r1"}, Body(json.dumps(body).encode()))
        body = {**_described("InService"), "CreationTime": 0, "LastModifiedTime": 0}
        return AWSResponse(request.url, 200, {"x-amzn-RequestId": "r2"}, Body(json.dumps(body).encode()))

    sagemaker.meta.events.register_first("before-send.sagemaker.DescribeEndpoint", answer)
    endpoint = Endpoint("gptj", sagemaker).fetch()
    assert endpoint.status is DeploymentStatus.IN_SERVICE
    assert len(attempts) == 2


def test_resource_names_are_unique_valid_and_short():
    long = "a" * 63
    name = resource_name(long, "0123456789abcdef", WHEN)
    assert len(name) <= 63
    assert name.endswith("-01234567-20250102000000000")
    assert re.match(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$", name)
    assert resource_name("gptj", "f" * 64, WHEN) != resource_name("gptj", "f" * 64, WHEN.replace(second=1))
    assert resource_name("gptj", "f" * 64, WHEN) != resource_name("gptj", "f" * 64, WHEN.replace(microsecond=1000))
    # a cut that would end in a hyphen is trimmed
    assert "--" not in resource_name("a" * 38 + "-b", "0" * 8, WHEN)


@pytest.mark.parametrize(("artifact_bytes", "expected"), [
    (15_000_000, 30),           # tiny model: the floor
    (12_100_000_000, 47),       # GPT-J fp16: 3 x 12.1 GB + 10
    (24_200_000_000, 83),       # GPT-J fp32
])
def test_volume_size_triples_the_artifact_plus_headroom(artifact_bytes, expected):
    assert volume_size_gb(artifact_bytes) == expected
