"""Fixtures shared across test folders, as thin calls into the support package: fake AWS, moto extended
for ml.inf2, a moto server, a fake clock, and tiny-gptj built and packaged once a session."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import fuzz_budget  # noqa: F401 - registers and loads the Hypothesis profile first
import pytest
from support import artifacts, aws
from support.clock import FakeClock
from support.servers import free_port


@pytest.fixture
def aws_secrets() -> dict[str, str]:
    """The credentials fake_aws_env sets; a folder overrides this to set others."""
    return dict(aws.FAKE_CREDENTIALS)


@pytest.fixture
def fake_aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, aws_secrets: dict[str, str]) -> dict[str, str]:
    """Fake credentials and region; no real AWS config, endpoint, token or local state leaks in.
    INF2_DEPLOY_HOME is ``tmp_path/home``. Returns the credentials set (``aws_secrets``)."""
    return aws.fake_aws_environment(monkeypatch, tmp_path, aws_secrets)


@pytest.fixture
def moto_accepts_inf2(monkeypatch: pytest.MonkeyPatch) -> None:
    """moto's CreateEndpointConfig accepts the four ml.inf2 types (support.aws.accept_inf2_instance_types)."""
    aws.accept_inf2_instance_types(monkeypatch)


@pytest.fixture
def moto_update_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    """moto answers UpdateEndpoint as SageMaker does once an update succeeded (support.aws.add_update_endpoint)."""
    aws.add_update_endpoint(monkeypatch)


@pytest.fixture
def moto_server(monkeypatch: pytest.MonkeyPatch, fake_aws_env: dict[str, str], moto_accepts_inf2: None,
                moto_update_endpoint: None) -> Iterator[str]:
    """An in-process moto server on 127.0.0.1 (real HTTP) from an empty account; AWS_ENDPOINT_URL points at it."""
    with aws.moto_server() as url:
        monkeypatch.setenv("AWS_ENDPOINT_URL", url)
        yield url


@pytest.fixture
def unused_port() -> int:
    """A port on 127.0.0.1 that nothing listens on."""
    return free_port()


@pytest.fixture
def clock() -> FakeClock:
    """A clock that moves only when slept or advanced."""
    return FakeClock()


@pytest.fixture
def make_clock() -> type[FakeClock]:
    """``make_clock(start=None, interrupt_after=None)``: a new FakeClock, for tests that need several."""
    return FakeClock


@pytest.fixture(scope="session")
def tiny_gptj(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny-gptj checkpoint (random weights, GPT-2 tokenizer), built once a session."""
    from inf2_deploy.artifact.tiny import build_tiny_gptj

    return build_tiny_gptj(tmp_path_factory.mktemp("models") / "tiny-gptj")


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache laid out like ``$INF2_DEPLOY_HOME/cache``, shared by the session: it holds tiny-gptj's
    build and its packaged artifact, so that serve_local finds both."""
    return tmp_path_factory.mktemp("inf2-deploy-cache")


@pytest.fixture(scope="session")
def tiny_artifact_dir(tiny_cache: Path) -> Path:
    """tiny-gptj packaged once a session by the real packager (offline, a few seconds), in ``tiny_cache``."""
    return artifacts.package_tiny(tiny_cache)


@pytest.fixture
def tiny_artifact(tiny_artifact_dir: Path):  # noqa: ANN201 - an inf2_deploy Artifact
    """The packaged tiny-gptj, as its manifest records it."""
    from inf2_deploy.artifact.manifest import Artifact

    return Artifact.load(tiny_artifact_dir)
