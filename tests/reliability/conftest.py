"""Shared fixtures for the reliability suite: a served tiny artifact, a live local server, secrets to look
for, and a recorder of AWS calls. Fake AWS and the moto server are tests/conftest.py's."""
from __future__ import annotations

import time
from pathlib import Path

import pytest
from support.artifacts import served_copy
from support.aws import FAKE_SECRETS
from support.servers import uvicorn_thread


@pytest.fixture
def aws_secrets() -> dict[str, str]:
    """Every reliability test runs with distinctive fake secrets (support.aws.FAKE_SECRETS) in its fake
    AWS environment: no produced file or output may contain them."""
    return dict(FAKE_SECRETS)


@pytest.fixture(scope="session")
def cpu_artifact(tmp_path_factory: pytest.TempPathFactory, tiny_gptj: Path) -> Path:
    """tiny-gptj with a CPU serving.properties in one folder: what the local server serves (static batches)."""
    return served_copy(tiny_gptj, tmp_path_factory.mktemp("tiny-artifact"),
                       backend="cpu", n_positions="128", batch_size="4", dtype="fp32")


@pytest.fixture(scope="session")
def rolling_artifact(tmp_path_factory: pytest.TempPathFactory, tiny_gptj: Path) -> Path:
    """The same with the rolling batch on, as the packager writes it by default."""
    return served_copy(tiny_gptj, tmp_path_factory.mktemp("tiny-rolling-artifact"),
                       backend="cpu", n_positions="128", batch_size="4", dtype="fp32", rolling_batch="auto")


def _wait_ready(client, timeout: float = 60.0) -> None:  # noqa: ANN001 - any client with .get
    deadline = time.monotonic() + timeout
    while client.get("/ping").status_code != 200:
        if time.monotonic() > deadline:
            pytest.fail(f"the server did not become ready within {timeout} s")
        time.sleep(0.05)


@pytest.fixture(scope="session")
def wait_ready():  # noqa: ANN201
    """``wait_ready(client, timeout=60)``: poll GET /ping until 200, failing the test after the timeout."""
    return _wait_ready


@pytest.fixture(scope="module", params=["static", "rolling"])
def live_server(request: pytest.FixtureRequest, cpu_artifact: Path, rolling_artifact: Path,
                wait_ready):  # noqa: ANN001, ANN201
    """A ready uvicorn server for the tiny artifact, with static batches and then with the rolling batch:
    yields its URL, an httpx client with a 30 s timeout, and the artifact folder."""
    import httpx
    from inf2_deploy.local.server import create_app

    artifact = rolling_artifact if request.param == "rolling" else cpu_artifact
    app = create_app(artifact, backend="cpu", max_batch_delay_ms=2)
    with uvicorn_thread(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        wait_ready(client)
        yield url, client, artifact


class CallRecorder:
    """Every AWS API call made by any boto3 client created while it is installed."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, dict]] = []  # (service, operation, params)

    def operations(self) -> set[tuple[str, str]]:
        return {(service, operation) for service, operation, _ in self.calls}


@pytest.fixture
def record_aws_calls(monkeypatch: pytest.MonkeyPatch) -> CallRecorder:
    """Hook every botocore client created from now on to record each call's API parameters.

    ``before-parameter-build`` carries the API parameters (``before-call`` has the
    serialized request instead) and fires for every call, including those a
    Stubber answers.
    """
    import botocore.session

    recorder = CallRecorder()
    original = botocore.session.Session.create_client

    def create_client(self, service_name, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        client = original(self, service_name, *args, **kwargs)

        def record(model, params, **_: object) -> None:  # noqa: ANN001
            recorder.calls.append((service_name, model.name, dict(params)))

        client.meta.events.register_first("before-parameter-build", record)
        return client

    monkeypatch.setattr(botocore.session.Session, "create_client", create_client)
    return recorder
