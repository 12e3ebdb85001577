"""Fixtures shared across test folders: fake AWS credentials and moto extended for ml.inf2."""
from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import fuzz_budget  # noqa: F401 - registers and loads the Hypothesis profile first
import pytest

INF2_INSTANCE_TYPES = ("ml.inf2.xlarge", "ml.inf2.8xlarge", "ml.inf2.24xlarge", "ml.inf2.48xlarge")


@pytest.fixture
def fake_aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Fake credentials and region; no real AWS config, endpoint or local state leaks in."""
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL_SAGEMAKER",
                 "AWS_SESSION_TOKEN", "AWS_REGION", "HF_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "aws-credentials"))
    monkeypatch.setenv("INF2_DEPLOY_HOME", str(tmp_path / "home"))


@pytest.fixture
def moto_accepts_inf2(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let moto's CreateEndpointConfig accept the four ml.inf2 types.

    moto 5.2.x validates InstanceType against an enum that predates Inferentia2
    (FakeEndpointConfig.validate_instance_type), so every real inf2 request would
    fail there. Only those four names are added; anything else still goes through
    moto's own check. This works for the in-process ThreadedMotoServer too.
    """
    from moto.sagemaker import models

    original = models.FakeEndpointConfig.validate_instance_type

    def validate_instance_type(self, instance_type: str) -> None:  # noqa: ANN001 - moto's signature
        if instance_type not in INF2_INSTANCE_TYPES:
            original(self, instance_type)

    monkeypatch.setattr(models.FakeEndpointConfig, "validate_instance_type", validate_instance_type)


@pytest.fixture
def moto_update_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    """Give moto the UpdateEndpoint action it lacks (moto 5.2.x answers "not implemented").

    Like SageMaker once an update succeeded: the endpoint serves the new config's variants.
    """
    from moto.core.responses import ActionResult
    from moto.sagemaker import models
    from moto.sagemaker.responses import SageMakerResponse

    def update_endpoint(self: SageMakerResponse) -> ActionResult:
        backend = self.sagemaker_backend
        name = self._get_param("EndpointName")
        config_name = self._get_param("EndpointConfigName")
        endpoint = backend.endpoints.get(name)
        if endpoint is None:
            raise models.ValidationError(message=f"Could not find endpoint '{name}'.")
        config = backend.describe_endpoint_config(config_name)
        endpoint.endpoint_config_name = config_name
        endpoint.production_variants = endpoint._process_production_variants(config["ProductionVariants"])
        return ActionResult({"EndpointArn": endpoint.arn})

    monkeypatch.setattr(SageMakerResponse, "update_endpoint", update_endpoint, raising=False)


@pytest.fixture
def moto_server(monkeypatch: pytest.MonkeyPatch, fake_aws_env: None, moto_accepts_inf2: None) -> Iterator[str]:
    """An in-process moto server on 127.0.0.1 (real HTTP); AWS_ENDPOINT_URL points at it."""
    from moto.server import ThreadedMotoServer

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", url)
    try:
        yield url
    finally:
        server.stop()
