"""Fixtures for the SageMaker deploy tests: moto, a fake clock, a packaged tiny-gptj artifact."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sagemaker_fakes
from inf2_deploy.spec.deployment_spec import load_spec
from sagemaker_fakes import REGION, ROLE, FakeClock, status_script_for


@pytest.fixture(autouse=True)
def aws_on_moto(fake_aws_env: None, moto_accepts_inf2: None, moto_update_endpoint: None) -> None:
    """Fake credentials, and moto extended for ml.inf2 and UpdateEndpoint (tests/conftest.py), for every
    deploy test. Transitional statuses come from ``status_script``."""


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_clock() -> type[FakeClock]:
    return FakeClock


@pytest.fixture(scope="session")
def tiny_artifact_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tiny-gptj packaged once per session by the real packager (offline, about 3 s)."""
    from inf2_deploy.artifact.packager import package

    root = tmp_path_factory.mktemp("tiny-artifact")
    spec = load_spec(model="tiny-gptj", instance_type="ml.inf2.xlarge", region=REGION)
    return package(spec, root / "artifact", cache_dir=root / "cache").directory


@pytest.fixture
def tiny_artifact(tiny_artifact_dir: Path):
    from inf2_deploy.artifact.manifest import Artifact

    return Artifact.load(tiny_artifact_dir)


@pytest.fixture
def tiny_spec():
    return load_spec(model="tiny-gptj", instance_type="ml.inf2.xlarge", region=REGION, role_arn=ROLE,
                     endpoint_name="tiny", image_uri="763104351884.dkr.ecr.us-east-1.amazonaws.com/"
                     "djl-inference:0.29.0-neuronx-sdk2.19.1")


@pytest.fixture
def session(service_loader) -> Iterator:
    """An inf2_deploy Session on moto's in-memory AWS."""
    import boto3
    import botocore.session
    from inf2_deploy.aws.session import Session
    from moto import mock_aws

    core = botocore.session.Session()
    core.register_component("data_loader", service_loader)
    with mock_aws():
        yield Session(boto3.Session(botocore_session=core, region_name=REGION), REGION)


@pytest.fixture
def make_client(service_loader):
    """``make_client(service)``: a client with the toolkit's retry config, for Stubber tests."""
    import boto3
    import botocore.session
    from inf2_deploy.aws.session import CLIENT_CONFIG

    def make(service: str):
        core = botocore.session.Session()
        core.register_component("data_loader", service_loader)
        return boto3.Session(botocore_session=core).client(service, region_name=REGION, config=CLIENT_CONFIG)

    return make


@pytest.fixture(scope="session")
def service_loader():
    """One botocore service-model loader for all tests: parsing the JSON models costs ~1.5 s a session."""
    import botocore.loaders

    return botocore.loaders.create_loader()


@pytest.fixture
def status_script():
    """``status_script(client, statuses, failure_reason=None)``; see ``_status_script``."""
    return status_script_for


@pytest.fixture
def count_calls():
    """``count_calls(*clients) -> CallCounter`` recording every API call's name and params."""
    return sagemaker_fakes.count_calls
