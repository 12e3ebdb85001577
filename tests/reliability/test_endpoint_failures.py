"""Failed and slow AWS calls during a deploy: rollback leaves nothing behind, 5xx and throttling
are retried with backoff, Ctrl-C between create calls orphans nothing.

Failures are injected at botocore's ``before-send`` hook, where a real answer
from AWS would arrive, so the client's own retry logic runs. moto runs as a
server over HTTP, so an injected answer means the request never reached it
(in-process ``mock_aws`` would still execute it); calls let through reach moto.
Failed endpoints, Ctrl-C while waiting and deleting a Creating endpoint are
covered in tests/deploy/test_deploy_sagemaker.py.
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from inf2_deploy.aws.deploy import deploy
from inf2_deploy.aws.session import Session
from inf2_deploy.errors import AwsError
from support.artifacts import deployable_tiny_spec
from support.aws import REGION
from support.clock import FakeClock


class _Body:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def stream(self, **kwargs: object) -> Iterator[bytes]:
        yield self.data


def _json_error(request: Any, status: int, code: str, message: str) -> AWSResponse:
    body = json.dumps({"__type": code, "message": message}).encode()
    return AWSResponse(request.url, status, {"x-amzn-RequestId": f"req-{code}"}, _Body(body))


def _xml_error(request: Any, status: int, code: str) -> AWSResponse:
    body = f"<Error><Code>{code}</Code><Message>try again</Message></Error>".encode()
    return AWSResponse(request.url, status, {"x-amz-request-id": f"req-{code}"}, _Body(body))


def fail(client: Any, operation: str, answers: list[Any], url_part: str = "") -> list[str]:
    """Answer the next attempts of ``operation`` (on URLs containing ``url_part``) with ``answers``:
    callables of the request, or None to let that attempt through."""
    attempts: list[str] = []
    pending = list(answers)

    def before_send(request: Any, **kwargs: object) -> AWSResponse | None:
        if url_part not in request.url:
            return None
        attempts.append(request.url)
        answer = pending.pop(0) if pending else None
        return answer(request) if answer is not None else None

    client.meta.events.register_first(f"before-send.{client.meta.service_model.service_id.hyphenize()}.{operation}",
                                      before_send)
    return attempts


@pytest.fixture
def session(moto_server: str) -> Session:
    return Session(boto3.Session(region_name=REGION), REGION)


@pytest.fixture
def spec():  # noqa: ANN201
    return deployable_tiny_spec()


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """botocore's retry back-offs, recorded instead of slept, with the jitter fixed at its maximum."""
    import types

    import botocore.endpoint
    from botocore.retries.standard import ExponentialBackoff

    recorded: list[float] = []
    # botocore.endpoint sleeps between attempts through its module's `time`; only that one is replaced.
    monkeypatch.setattr(botocore.endpoint, "time", types.SimpleNamespace(sleep=recorded.append))
    original = ExponentialBackoff.__init__

    def no_jitter(self: ExponentialBackoff, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        self._random = lambda: 1.0

    monkeypatch.setattr(ExponentialBackoff, "__init__", no_jitter)
    return recorded


def _leftovers(session: Session) -> tuple[list, list, list]:
    sagemaker = session.client("sagemaker")
    return (sagemaker.list_endpoints()["Endpoints"], sagemaker.list_endpoint_configs()["EndpointConfigs"],
            sagemaker.list_models()["Models"])


@pytest.mark.parametrize(("operation", "code"), [
    ("CreateEndpointConfig", "ValidationException"),
    ("CreateEndpoint", "ResourceLimitExceeded"),
])
def test_failed_create_call_rolls_back_everything(session: Session, spec, tiny_artifact,  # noqa: ANN001
                                                  operation: str, code: str) -> None:
    sagemaker = session.client("sagemaker")
    fail(sagemaker, operation, [lambda request: _json_error(request, 400, code, "no inf2 capacity for you")])
    with pytest.raises(AwsError) as failed:
        deploy(spec, artifact=tiny_artifact, session=session, clock=FakeClock())
    assert failed.value.code == code and failed.value.request_id == f"req-{code}"
    assert _leftovers(session) == ([], [], [])


def test_ctrl_c_between_create_calls_orphans_nothing(session: Session, spec, tiny_artifact) -> None:  # noqa: ANN001
    sagemaker = session.client("sagemaker")

    def interrupt(request: Any) -> None:
        raise KeyboardInterrupt

    fail(sagemaker, "CreateEndpointConfig", [interrupt])
    with pytest.raises(KeyboardInterrupt):
        deploy(spec, artifact=tiny_artifact, session=session, clock=FakeClock())
    assert _leftovers(session) == ([], [], [])


# botocore's first back-off: 1 s for throttling errors, 50 ms for others; it doubles each attempt.
THROTTLED, SERVER_ERROR = 1.0, 0.05


# Throttled cases take seconds: adaptive mode's client-side rate limiter really waits after them.
@pytest.mark.slow
@pytest.mark.parametrize(("service", "operation", "answer", "first_delay"), [
    ("sagemaker", "CreateModel", lambda r: _json_error(r, 500, "InternalFailure", "oops"), SERVER_ERROR),
    ("sagemaker", "CreateEndpoint", lambda r: _json_error(r, 503, "ServiceUnavailable", "busy"), SERVER_ERROR),
    ("sagemaker", "CreateEndpointConfig", lambda r: _json_error(r, 400, "ThrottlingException", "Rate exceeded"),
     THROTTLED),
    ("s3", "PutObject", lambda r: _xml_error(r, 503, "SlowDown"), THROTTLED),
    ("s3", "HeadObject", lambda r: _xml_error(r, 500, "InternalError"), SERVER_ERROR),
])
def test_throttling_and_5xx_are_retried_with_backoff(
        session: Session, spec, tiny_artifact, sleeps: list[float], service: str, operation: str, answer,  # noqa: ANN001
        first_delay: float) -> None:
    # S3 calls go one per file, in parallel: fail one file's attempts so that they are in sequence.
    attempts = fail(session.client(service), operation, [answer, answer, answer], "/config.json" * (service == "s3"))
    deployment = deploy(spec, artifact=tiny_artifact, session=session, clock=FakeClock())
    assert deployment.status is not None and deployment.status.value == "InService"
    # three failures, then the attempt that reached moto (more for operations called more than once)
    assert len(attempts) >= 4
    assert sleeps == pytest.approx([first_delay, 2 * first_delay, 4 * first_delay])
    assert _leftovers(session)[0][0]["EndpointName"] == "tiny"


def test_persistent_5xx_gives_up_after_the_retry_budget_and_rolls_back(
        session: Session, spec, tiny_artifact, sleeps: list[float]) -> None:  # noqa: ANN001
    sagemaker = session.client("sagemaker")
    answer = lambda r: _json_error(r, 500, "InternalFailure", "still broken")  # noqa: E731
    attempts = fail(sagemaker, "CreateEndpointConfig", [answer] * 50)
    with pytest.raises(AwsError) as failed:
        deploy(spec, artifact=tiny_artifact, session=session, clock=FakeClock())
    assert failed.value.code == "InternalFailure"
    # CLIENT_CONFIG's max_attempts=10 counts retries (botocore's legacy key): 1 + 10 attempts
    assert len(attempts) == 11
    assert sleeps == pytest.approx([min(0.05 * 2**i, 20) for i in range(10)])
    assert _leftovers(session) == ([], [], [])


def test_upload_failure_creates_no_sagemaker_resource_and_rerun_resumes(
        session: Session, spec, tiny_artifact, sleeps: list[float], tmp_path: Path) -> None:  # noqa: ANN001
    s3 = session.client("s3")
    denied = lambda r: _xml_error(r, 403, "AccessDenied")  # noqa: E731 - not retried by botocore
    fail(s3, "PutObject", [None, denied])  # the first file lands, the second is refused
    with pytest.raises(AwsError) as failed:
        deploy(spec, artifact=tiny_artifact, session=session, clock=FakeClock())
    assert failed.value.code == "AccessDenied"
    assert _leftovers(session) == ([], [], [])
    deployment = deploy(spec, artifact=tiny_artifact, session=session, clock=FakeClock())
    assert deployment.status is not None and deployment.status.value == "InService"
    assert 0 < deployment.bytes_uploaded < tiny_artifact.total_bytes + tiny_artifact.manifest_path.stat().st_size
