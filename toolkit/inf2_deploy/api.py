"""``deploy_gptj``: one call from a GPT-J checkpoint to a live SageMaker endpoint.

The local target has its own entry, :func:`inf2_deploy.local.deploy.serve_local`;
``deploy_gptj(local=True)`` builds the same spec and hands it over.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import ConfigError
from .spec.deployment_spec import load_spec

if TYPE_CHECKING:
    from .aws.deployment import Deployment
    from .aws.s3 import Progress
    from .local.records import LocalDeployment
    from .observer import DeployObserver

__all__ = ["deploy_gptj", "LOCAL"]

#: the instance type that means "serve on this machine"
LOCAL = "local"


def deploy_gptj(
    model: str = "EleutherAI/gpt-j-6b",
    *,
    role: str | None = None,
    instance_type: str = "ml.inf2.8xlarge",
    endpoint_name: str | None = None,
    wait: bool = True,
    progress: Progress | None = None,
    observer: DeployObserver | None = None,
    local: bool = False,
    port: int | None = None,
    **spec: Any,
) -> Deployment | LocalDeployment:
    """Deploy GPT-J to a SageMaker inf2 endpoint (or, with ``local``, through :func:`serve_local`).

    Example::

        >>> deployment = inf2_deploy.deploy_gptj(role="arn:aws:iam::123456789012:role/SageMaker",
        ...                                      tensor_parallel_degree=2, n_positions=1024)
        >>> deployment.predictor.generate("The capital of France is", max_new_tokens=8)
        >>> deployment.delete()

    Args:
        model: an alias (``gpt-j-6b``, ``tiny-gptj``), a Hugging Face id, a folder or an s3:// prefix.
        role: the IAM role ARN the endpoint runs as; required for SageMaker.
        instance_type: an ``ml.inf2.*`` type, or ``"local"`` (same as ``local=True``).
        endpoint_name: the endpoint (or local deployment) name; default: from the model.
        wait: wait until the endpoint serves (SageMaker: InService; local: /ping answers).
        progress: ``(done_bytes, total_bytes, label)`` for packaging and upload.
        observer: a :class:`~inf2_deploy.observer.DeployObserver` told of progress, status and
            container log lines (instead of ``progress``).
        local: serve on this machine instead, as ``serve_local(spec, name=endpoint_name, port=port)``.
        port: the local server's port; default: a free one. Only with ``local``: refused otherwise.
        **spec: any other ``DeploymentSpec`` field: the Neuron settings ``tensor_parallel_degree``,
            ``n_positions``, ``batch_size``, ``dtype``, and ``instance_count``, ``bucket``, ``region``,
            ``env``, ``config_file`` (a YAML/TOML spec the other arguments override), ...

    Returns:
        A ``Deployment`` (SageMaker) or, with ``local``, a ``LocalDeployment``; both have
        ``.endpoint_name``, ``.predictor`` and ``.delete()``.

    Raises:
        ConfigError: a setting is invalid, the plan cannot work, or ``role`` is missing for
            SageMaker - all before any AWS call.
        CredentialsError, AwsError, EndpointFailedError: see ``inf2_deploy.aws.deploy.deploy``.
        ModelSourceError: the checkpoint cannot be read or packaged.
    """
    local = local or instance_type == LOCAL
    if port is not None and not local:
        raise ConfigError("port applies to local deployments only", field="port", value=port,
                          hint="pass local=True, or drop port")
    config_file = spec.pop("config_file", None)
    deployment_spec = load_spec(config_file, model=model, role_arn=role, endpoint_name=endpoint_name,
                                instance_type=None if instance_type == LOCAL else instance_type, **spec)
    if local:
        from .local.deploy import serve_local
        from .observer import observer_of

        given = observer is not None or progress is not None
        report = observer_of(observer, progress=progress).on_progress if given else None
        return serve_local(deployment_spec, name=endpoint_name, port=port, progress=report, wait=wait)
    from .aws.deploy import deploy

    # deploy() checks the role before its first AWS call.
    return deploy(deployment_spec, wait=wait, progress=progress, observer=observer)
