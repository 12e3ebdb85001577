"""The LMI ``djl-neuronx`` serving image, looked up in the SageMaker SDK's registry.

The registry maps (framework, region, version) to the ECR URI that AWS
publishes; we never build the URI by hand. ``sagemaker.core`` takes two to four
seconds to import (it pulls in pandas), so it is imported only when an image is
resolved, callers remember the answers (:mod:`inf2_deploy.artifact.image_cache`),
and the import runs under a time limit: a stalled import must not hang ``plan``.
"""
from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any

from ..errors import ImageNotFoundError

__all__ = ["FRAMEWORK", "SDK_IMPORT_TIMEOUT", "load_registry", "resolve_image_uri"]

FRAMEWORK = "djl-neuronx"
#: Seconds the SageMaker SDK's import may take; it normally takes 2-4 s.
SDK_IMPORT_TIMEOUT = 20.0


def _import_image_uris() -> Any:
    try:
        from sagemaker.core import image_uris
    except ImportError:  # the SageMaker Python SDK v2 layout
        from sagemaker import image_uris
    return image_uris


def load_registry(timeout: float = SDK_IMPORT_TIMEOUT, *,
                  importer: Callable[[], Any] = _import_image_uris) -> Any:
    """The SDK's ``image_uris`` module, imported within ``timeout`` seconds.

    The import runs on a daemon thread: one that overruns is left to finish in
    the background (a later call then finds the module imported) rather than
    holding up the caller or its exit.

    Args:
        timeout: seconds to wait for the import.
        importer: what imports the module; default ``sagemaker.core.image_uris``.

    Raises:
        ImageNotFoundError: the SDK is not installed, or its import took longer than ``timeout``.
    """
    outcome: dict[str, Any] = {}

    def load() -> None:
        try:
            outcome["module"] = importer()
        except BaseException as exc:  # noqa: BLE001 - carried to the caller, as a future would
            outcome["error"] = exc

    thread = threading.Thread(target=load, name="sagemaker-sdk-import", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise ImageNotFoundError(f"cannot look up the image: importing the SageMaker SDK took over {timeout:g} s",
                                 field="image_uri", value=timeout,
                                 hint="pass --image-uri, or retry: an image found once is remembered")
    error = outcome.get("error")
    if isinstance(error, ImportError):
        raise ImageNotFoundError(f"cannot look up the image: the SageMaker SDK is not installed ({error})",
                                 field="image_uri", hint="pip install sagemaker-core, or pass --image-uri")
    if error is not None:
        raise error
    return outcome["module"]


@functools.lru_cache(maxsize=32)
def resolve_image_uri(region: str, version: str) -> str:
    """The ``djl-neuronx`` image URI for ``region`` and LMI ``version``.

    Raises:
        ImageNotFoundError: the registry has no such image (the message names whether
            the region or the version is at fault), or it could not be loaded in
            :data:`SDK_IMPORT_TIMEOUT` seconds.
    """
    registry = load_registry()
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
