"""Fixtures for the SageMaker deploy tests: moto for every test, tiny-gptj's spec, sessions and clients.

The fake clock and the packaged tiny-gptj artifact are tests/conftest.py's.
"""
from __future__ import annotations

from collections.abc import Iterator

import pytest
import sagemaker_fakes
from sagemaker_fakes import status_script_for
from support.artifacts import deployable_tiny_spec
from support.aws import REGION


@pytest.fixture(autouse=True)
def aws_on_moto(fake_aws_env: dict[str, str], moto_accepts_inf2: None, moto_update_endpoint: None) -> None:
    """Fake credentials, and moto extended for ml.inf2 and UpdateEndpoint (tests/conftest.py), for every
    deploy test. Transitional statuses come from ``status_script``."""


@pytest.fixture
def tiny_spec():  # noqa: ANN201 - a DeploymentSpec
    """tiny-gptj on ml.inf2.xlarge as endpoint ``tiny``, with a role and an image (nothing is looked up)."""
    return deployable_tiny_spec()


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
