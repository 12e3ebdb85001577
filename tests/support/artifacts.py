"""The tiny GPT-J as the tests use it: its spec, the packaged artifact, and folders the local server serves.

The checkpoint itself comes from ``inf2_deploy.artifact.tiny.build_tiny_gptj`` (the session
fixture ``tiny_gptj`` in tests/conftest.py builds it once). inf2_deploy is imported inside the
functions: the serving tests also run where its laptop-side dependencies are missing.
"""
from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from support.aws import IMAGE, REGION, ROLE

TINY_MODEL = "tiny-gptj"


def tiny_spec(**overrides: Any) -> Any:
    """The DeploymentSpec of tiny-gptj in :data:`~support.aws.REGION`, with ``overrides``."""
    from inf2_deploy.spec.deployment_spec import load_spec

    return load_spec(model=TINY_MODEL, region=REGION, **overrides)


def deployable_tiny_spec(**overrides: Any) -> Any:
    """tiny-gptj ready for SageMaker: ml.inf2.xlarge, endpoint ``tiny``, support.aws's ROLE and IMAGE."""
    return tiny_spec(**{"instance_type": "ml.inf2.xlarge", "role_arn": ROLE, "endpoint_name": "tiny",
                        "image_uri": IMAGE, **overrides})


def package_tiny(cache: Path) -> Path:
    """Package tiny-gptj with the real packager (offline, a few seconds) into the folder of ``cache``
    where ``serve_local`` looks for it (``cache`` laid out like ``$INF2_DEPLOY_HOME/cache``).

    Returns the artifact folder; packaging again with the same cache reuses it.
    """
    from inf2_deploy.artifact.packager import package
    from inf2_deploy.local.deploy import spec_cache_key

    spec = tiny_spec()
    return package(spec, cache / "artifacts" / spec_cache_key(spec), cache_dir=cache).directory


def write_artifact(folder: Path, weights: Path | None = None, *, model_level: Mapping[str, str] | None = None,
                   **options: str) -> Path:
    """Write ``folder/serving.properties`` as the packager does, for DJL's Python engine and model.py.

    Args:
        folder: the artifact folder (created if missing).
        weights: the checkpoint, when it is not in ``folder`` (``option.model_id``).
        model_level: DJL's own properties, written as they are (``batch_size``, ``max_batch_delay``).
        options: the handler's, written as ``option.<name>`` (``backend``, ``n_positions``...).
    """
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["engine=Python", "option.entryPoint=model.py"]
    if weights is not None:
        lines.append(f"option.model_id={weights}")
    lines += [f"option.{key}={value}" for key, value in options.items()]
    lines += [f"{key}={value}" for key, value in (model_level or {}).items()]
    (folder / "serving.properties").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def served_copy(checkpoint: Path, folder: Path, **options: str) -> Path:
    """A self-contained artifact: a copy of ``checkpoint`` in ``folder`` with its serving.properties."""
    shutil.copytree(checkpoint, folder, dirs_exist_ok=True)
    return write_artifact(folder, **options)
