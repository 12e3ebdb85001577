"""Container image lookups remembered on disk, per SageMaker SDK version.

The image registry is data shipped inside the SageMaker SDK, so an answer holds
until the SDK changes; the SDK's import costs two to four seconds, which would
otherwise dominate ``plan`` and re-packaging an unchanged model. ``plan``,
``package`` and ``deploy`` share one cache file in the model cache folder, so an
image any of them looked up is known to the others.
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

from ..atomic import atomic_write_text
from ..aws.images import resolve_image_uri
from ..spec.planner import ImageResolver
from .sources import default_cache_dir

__all__ = ["IMAGE_CACHE_NAME", "SdkVersion", "cached_image_resolver", "default_image_resolver",
           "installed_sdk_version"]

IMAGE_CACHE_NAME = "image-uris.json"
_SDK_DISTRIBUTIONS = ("sagemaker-core", "sagemaker")

SdkVersion = Callable[[], str | None]
"""``() -> "sagemaker-core 1.0.3"``, or None when no SageMaker SDK is installed."""


def installed_sdk_version() -> str | None:
    """The installed SageMaker SDK as ``"<distribution> <version>"``; None when there is none."""
    from importlib.metadata import PackageNotFoundError, version

    for name in _SDK_DISTRIBUTIONS:
        try:
            return f"{name} {version(name)}"
        except PackageNotFoundError:
            continue
    return None


def cached_image_resolver(
    cache_dir: str | os.PathLike[str],
    *,
    resolve: ImageResolver = resolve_image_uri,
    sdk_version: SdkVersion = installed_sdk_version,
) -> ImageResolver:
    """``resolve``, with its answers remembered in ``cache_dir`` per SDK version.

    Failures are not cached, so a bad region or version raises exactly what ``plan``
    raises. Without an SDK version nothing is remembered.

    Args:
        cache_dir: the folder of the cache file.
        resolve: the lookup to remember; default :func:`~inf2_deploy.aws.images.resolve_image_uri`.
        sdk_version: names the SDK the answers come from; default :func:`installed_sdk_version`.
    """
    path = Path(cache_dir) / IMAGE_CACHE_NAME

    def cached(region: str, version: str) -> str:
        sdk = sdk_version()
        key = f"{sdk}|{region}|{version}"
        try:
            cache = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            cache = {}
        if sdk is not None and isinstance(cache, dict) and isinstance(cache.get(key), str):
            return cache[key]
        uri = resolve(region, version)
        if sdk is not None:
            cache = {**cache, key: uri} if isinstance(cache, dict) else {key: uri}
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                atomic_write_text(path, json.dumps(cache, indent=2, sort_keys=True) + "\n")
            except OSError:
                pass  # the cache only saves time; an unwritable cache folder must not fail packaging
        return uri

    return cached


def default_image_resolver() -> ImageResolver:
    """The registry lookup through the cache that ``package`` writes by default (in
    :func:`~inf2_deploy.artifact.sources.default_cache_dir`): what ``plan`` uses."""
    return cached_image_resolver(default_cache_dir())
