"""``serve_local``: package a spec's artifact, as for SageMaker, and serve it on this machine under a name.

The deployment is then a name like a SageMaker endpoint's: ``invoke``, ``chat``,
``list`` and ``delete`` work on it (see :mod:`inf2_deploy.local.records`).
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

from ..spec.model_ref import model_slug
from ..spec.validators import check_endpoint_name
from .paths import artifact_cache_dir, cache_root
from .records import LocalDeployment, LocalStore
from .supervisor import DEFAULT_START_TIMEOUT, LocalSupervisor, check_backend, check_port_free

if TYPE_CHECKING:
    from ..artifact.sources import ProgressCallback
    from ..clock import Clock
    from ..spec.deployment_spec import DeploymentSpec

__all__ = ["default_name", "serve_local", "spec_cache_key"]


def default_name(model: str) -> str:
    """``<last part of the model>-local``, e.g. ``gpt-j-6b-local`` for EleutherAI/gpt-j-6b."""
    return f"{model_slug(model, max_length=56)}-local"


def spec_cache_key(spec: DeploymentSpec) -> str:
    """The folder name, under :func:`~inf2_deploy.local.paths.artifact_cache_dir`, of ``spec``'s artifact."""
    # Everything but the name decides the artifact; the packager re-uses an unchanged folder.
    text = spec.model_dump_json(exclude={"endpoint_name"})
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def serve_local(
    spec: DeploymentSpec,
    *,
    name: str | None = None,
    port: int | None = None,
    host: str = "127.0.0.1",
    output: str | os.PathLike[str] | None = None,
    backend: str = "auto",
    progress: ProgressCallback | None = None,
    wait: bool = True,
    timeout: float = DEFAULT_START_TIMEOUT,
    store: LocalStore | None = None,
    clock: Clock | None = None,
) -> LocalDeployment:
    """Package ``spec``'s artifact (as for SageMaker) and serve it locally under a name.

    Example::

        >>> deployment = inf2_deploy.serve_local(inf2_deploy.load_spec(model="tiny-gptj"))
        >>> deployment.predictor.generate("The capital of France is", max_new_tokens=8)
        >>> deployment.delete()

    Args:
        spec: the deployment spec.
        name: the deployment name; default: ``spec.endpoint_name``, else ``<model>-local``.
        port: the port; default: a free one.
        host: the address to listen on.
        output: the artifact folder; default: a cache folder for this spec under
            :func:`~inf2_deploy.local.paths.artifact_cache_dir`.
        backend: ``auto``, ``cpu`` or ``neuron``.
        progress: ``(done_bytes, total_bytes, label)`` while packaging.
        wait: wait until the server answers ``/ping`` with 200.
        timeout: seconds to wait for readiness.
        store: where the deployment is recorded; default the user's (``INF2_DEPLOY_HOME``).
        clock: what the readiness wait runs on; default the real clock.

    Returns:
        The local deployment; ``.predictor`` invokes it and ``.delete()`` stops it.

    Raises:
        ConfigError: an invalid name, port or backend, or the name is already running.
        ModelSourceError: the model cannot be read or packaged.
        EndpointFailedError: the server did not become ready (its last log lines are in the message).
        KeyboardInterrupt: Ctrl-C; a server already started is stopped and leaves no record or log.
    """
    from ..artifact.packager import package

    supervisor = LocalSupervisor(store, clock)
    name = check_endpoint_name(name or spec.endpoint_name or default_name(spec.model), "name")
    # Everything that can be refused is, before minutes of packaging.
    check_backend(backend)
    supervisor.ensure_name_free(name)
    if port is not None:
        check_port_free(host, port)
    target = Path(output) if output is not None else artifact_cache_dir() / spec_cache_key(spec)
    artifact = package(spec, target, progress=progress, cache_dir=cache_root())
    return supervisor.start(artifact.directory, name=name, host=host, port=port, backend=backend,
                            fingerprint=artifact.fingerprint, wait=wait, timeout=timeout)
