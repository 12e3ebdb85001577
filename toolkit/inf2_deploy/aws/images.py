"""The LMI ``djl-neuronx`` serving image, looked up in the SageMaker SDK's registry.

The registry maps (framework, region, version) to the ECR URI that AWS
publishes; we never build the URI by hand. ``sagemaker.core`` takes about two
seconds to import, so it is imported only when an image is resolved.
"""
from __future__ import annotations

import functools
from typing import Any

from ..errors import ImageNotFoundError

__all__ = ["FRAMEWORK", "resolve_image_uri"]

FRAMEWORK = "djl-neuronx"


def _image_uris() -> Any:
    try:
        from sagemaker.core import image_uris
    except ImportError:  # the SageMaker Python SDK v2 layout
        from sagemaker import image_uris
    return image_uris


@functools.lru_cache(maxsize=32)
def resolve_image_uri(region: str, version: str) -> str:
    """The ``djl-neuronx`` image URI for ``region`` and LMI ``version``.

    Raises:
        ImageNotFoundError: the registry has no such image; the message names
            whether the region or the version is at fault.
    """
    registry = _image_uris()
    try:
        return registry.retrieve(framework=FRAMEWORK, region=region, version=version)
    except ValueError as exc:
        text = str(exc)
        field, value = ("region", region) if "unsupported region" in text.lower() else ("lmi_version", version)
        raise ImageNotFoundError(
            f"no {FRAMEWORK} image for {field} {value!r}: {text.splitlines()[0]}",
            field=field,
            value=value,
            hint="pick a listed region or version, or pass --image-uri",
        ) from None
