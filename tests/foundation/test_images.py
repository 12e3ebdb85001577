"""The djl-neuronx image comes from the SageMaker SDK's registry (offline JSON), imported within a time limit."""
from __future__ import annotations

import threading

import pytest
from inf2_deploy.aws.images import load_registry, resolve_image_uri
from inf2_deploy.errors import ImageNotFoundError


def test_default_version_resolves():
    uri = resolve_image_uri("us-east-1", "0.29.0")
    assert uri == "763104351884.dkr.ecr.us-east-1.amazonaws.com/djl-inference:0.29.0-neuronx-sdk2.19.1"


@pytest.mark.parametrize(("region", "version", "field"), [
    ("af-south-1", "0.29.0", "region"),
    ("us-east-1", "9.9.9", "lmi_version"),
])
def test_unknown_region_or_version(region, version, field):
    with pytest.raises(ImageNotFoundError) as info:
        resolve_image_uri(region, version)
    assert info.value.field == field
    assert isinstance(info.value, ValueError)
    assert "--image-uri" in str(info.value)


def test_an_sdk_import_that_overruns_its_time_is_an_image_error_naming_the_fix():
    release = threading.Event()
    started = threading.Event()

    def stalled_import() -> object:
        started.set()
        release.wait()
        return object()

    try:
        with pytest.raises(ImageNotFoundError) as info:
            load_registry(0.05, importer=stalled_import)
        assert started.is_set()
    finally:
        release.set()  # let the background import finish
    assert info.value.field == "image_uri" and "took over 0.05 s" in str(info.value)
    assert "--image-uri" in info.value.hint


def test_a_missing_sdk_is_an_image_error_and_other_import_failures_pass_through():
    def not_installed() -> object:
        raise ModuleNotFoundError("No module named 'sagemaker'")

    with pytest.raises(ImageNotFoundError, match="SageMaker SDK is not installed") as info:
        load_registry(importer=not_installed)
    assert info.value.field == "image_uri" and "pip install sagemaker-core" in info.value.hint

    def broken() -> object:
        raise RuntimeError("broken SDK")

    with pytest.raises(RuntimeError, match="broken SDK"):
        load_registry(importer=broken)


def test_a_quick_import_returns_the_module():
    registry = object()
    assert load_registry(importer=lambda: registry) is registry
