"""Shared fixtures for the reliability suite: a tiny served artifact and fake AWS settings."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

# DJL's djl_python package exists only in the container; the serving tests keep a
# stand-in with the real class and method names, which the DJL adapter imports.
STANDINS = Path(__file__).resolve().parents[1] / "serving" / "standins"

#: written into os.environ by the fake_aws fixture; no produced file or output may contain them
FAKE_SECRETS = {
    "AWS_ACCESS_KEY_ID": "AKIAFAKEACCESSKEY777",
    "AWS_SECRET_ACCESS_KEY": "fakeSecretKey/DoNotLeak+Q4bYsd83hdl2",
    "AWS_SESSION_TOKEN": "FakeSessionTokenNeverPrinted0123456789",
    "HF_TOKEN": "hf_FakeTokenThatMustNeverAppear9876",
}

SERVING_PROPERTIES = (
    "engine=Python\n"
    "option.entryPoint=model.py\n"
    "option.backend=cpu\n"
    "option.n_positions=128\n"
    "option.batch_size=4\n"
    "option.dtype=fp32\n"
)


def write_tiny_artifact(folder: Path) -> Path:
    """The tiny GPT-J plus a CPU serving.properties: what the local server serves."""
    from inf2_deploy.artifact.tiny import build_tiny_gptj

    build_tiny_gptj(folder)
    (folder / "serving.properties").write_text(SERVING_PROPERTIES, encoding="utf-8")
    return folder


@pytest.fixture(scope="session")
def tiny_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_artifact(tmp_path_factory.mktemp("tiny-artifact"))


@pytest.fixture(scope="session")
def djl_standins() -> None:
    if str(STANDINS) not in sys.path:
        sys.path.insert(0, str(STANDINS))


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


@pytest.fixture
def fake_aws(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Fake credentials and region, and no AWS config files: nothing can reach real AWS."""
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL", "AWS_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/aws-config")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/aws-credentials")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for name, value in FAKE_SECRETS.items():
        monkeypatch.setenv(name, value)
    return dict(FAKE_SECRETS)


class LiveServer:
    """The local server's ASGI app under a real uvicorn on 127.0.0.1, in a background thread."""

    def __init__(self, app) -> None:  # noqa: ANN001 - a Starlette app
        import socket
        import threading

        import uvicorn

        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind(("127.0.0.1", 0))
        self.port = self.socket.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_keep_alive=5))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                pytest.fail("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.socket.close()


@pytest.fixture(scope="module")
def live_server(tiny_artifact: Path, wait_ready):  # noqa: ANN001, ANN201
    """A ready uvicorn server for the tiny artifact and an httpx client with a 30 s timeout."""
    import httpx
    from inf2_deploy.local.server import create_app

    app = create_app(tiny_artifact, backend="cpu", max_batch_delay_ms=2)
    with LiveServer(app) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        wait_ready(client)
        yield server, client


REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's default account
ROLE = f"arn:aws:iam::{ACCOUNT}:role/SageMakerRole"


@pytest.fixture
def moto_inf2(moto_accepts_inf2: None, moto_update_endpoint: None) -> None:
    """moto extended for the four ml.inf2 types and UpdateEndpoint (both in tests/conftest.py)."""


@pytest.fixture
def moto_server(monkeypatch: pytest.MonkeyPatch, fake_aws: dict[str, str], moto_inf2: None, tmp_path: Path):  # noqa: ANN201
    """An in-process moto server on 127.0.0.1 that every boto3 client reaches via AWS_ENDPOINT_URL."""
    import socket
    import urllib.request

    from moto.server import ThreadedMotoServer

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    # moto's backends are process-wide: start every test from an empty account.
    urllib.request.urlopen(urllib.request.Request(f"{url}/moto-api/reset", method="POST"), timeout=30).close()
    monkeypatch.setenv("AWS_ENDPOINT_URL", url)
    monkeypatch.setenv("INF2_DEPLOY_HOME", str(tmp_path / "inf2-deploy-home"))
    try:
        yield url
    finally:
        server.stop()


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
