"""Fixtures for the predictor tests: fake AWS settings, SageMaker runtime event streams, a tiny server."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake credentials and a region, so nothing can reach real AWS."""
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)


@pytest.fixture
def runtime(aws_env: None) -> Any:
    """A real sagemaker-runtime client built the way Predictor builds its own."""
    from inf2_deploy.client.predictor import runtime_client

    return runtime_client()


# --- a real local server on tiny GPT-J -----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def unused_port() -> int:
    """A port on 127.0.0.1 that nothing listens on."""
    return free_port()


@pytest.fixture(scope="session")
def predictor_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One INF2_DEPLOY_HOME per session: its cache holds tiny-gptj and its artifact."""
    return tmp_path_factory.mktemp("inf2-deploy-home")


@pytest.fixture(scope="session")
def tiny_spec() -> Any:
    from inf2_deploy.spec.deployment_spec import load_spec

    return load_spec(model="tiny-gptj", region="us-east-1")


@pytest.fixture(scope="session")
def tiny_artifact(predictor_home: Path, tiny_spec: Any) -> Path:
    """The tiny-gptj artifact, packaged where serve_local caches it, so deploys reuse it."""
    from inf2_deploy.artifact.packager import package
    from inf2_deploy.local.deploy import spec_cache_key

    cache = predictor_home / "cache"
    return package(tiny_spec, cache / "artifacts" / spec_cache_key(tiny_spec), cache_dir=cache).directory


@pytest.fixture
def local_home(tmp_path: Path, predictor_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh INF2_DEPLOY_HOME whose cache is the session's (tiny-gptj and its artifact built once)."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "cache").symlink_to(predictor_home / "cache", target_is_directory=True)
    monkeypatch.setenv("INF2_DEPLOY_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def server_url(tiny_artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``python -m inf2_deploy.local.server`` on the tiny artifact (CPU), ready; stopped after the session."""
    port = free_port()
    log = tmp_path_factory.mktemp("server") / "server.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "inf2_deploy.local.server", str(tiny_artifact), "--port", str(port),
             "--backend", "cpu"], stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/ping", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "server not ready in 120 s:\n" + log.read_text()
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)
