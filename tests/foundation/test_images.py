"""The djl-neuronx image comes from the SageMaker SDK's registry (offline JSON)."""
from __future__ import annotations

import pytest
from inf2_deploy.aws.images import resolve_image_uri
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
