"""Fixtures for the predictor tests: a SageMaker runtime client (and the CLI's, stubbed), tiny-gptj's spec,
a home whose cache holds the packaged tiny artifact, and a real local server on it. Fake AWS and the artifact
are tests/conftest.py's."""
from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from botocore.stub import Stubber
from support import artifacts
from support.servers import free_port


@pytest.fixture
def runtime(fake_aws_env: dict[str, str]) -> Any:
    """A real sagemaker-runtime client built the way Predictor builds its own."""
    from inf2_deploy.client.predictor import runtime_client

    return runtime_client()


@pytest.fixture
def stubbed_runtime(runtime: Any, monkeypatch: pytest.MonkeyPatch, local_home: Path) -> Iterator[Stubber]:
    """The CLI's SageMaker runtime client, stubbed (no local deployments are recorded)."""
    monkeypatch.setattr("inf2_deploy.client.predictor.runtime_client", lambda **_kwargs: runtime)
    with Stubber(runtime) as stub:
        yield stub
        stub.assert_no_pending_responses()


@pytest.fixture(scope="session")
def tiny_spec() -> Any:
    """tiny-gptj with every default: the spec tiny_artifact_dir was packaged for."""
    return artifacts.tiny_spec()


@pytest.fixture
def local_home(tmp_path: Path, tiny_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh INF2_DEPLOY_HOME whose cache is the session's (tiny-gptj and its artifact built once)."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "cache").symlink_to(tiny_cache, target_is_directory=True)
    monkeypatch.setenv("INF2_DEPLOY_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def server_url(tiny_artifact_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``python -m inf2_deploy.local.server`` on the tiny artifact (CPU), ready; stopped after the session."""
    port = free_port()
    log = tmp_path_factory.mktemp("server") / "server.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "inf2_deploy.local.server", str(tiny_artifact_dir), "--port", str(port),
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
