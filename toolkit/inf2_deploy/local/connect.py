"""``connect``: a predictor for a URL, a local deployment's name or a SageMaker endpoint's name."""
from __future__ import annotations

from ..client.predictor import LocalPredictor, Predictor
from ..errors import InvocationError
from .records import LocalStatus, LocalStore, default_store

__all__ = ["connect"]


def connect(target: str, *, region: str | None = None, store: LocalStore | None = None) -> LocalPredictor | Predictor:
    """A predictor for ``target``: an ``http(s)://`` URL, a local deployment's name, or a
    SageMaker endpoint name, tried in that order.

    Args:
        target: where to send requests.
        region: the AWS region of a SageMaker endpoint; default the standard resolution.
        store: where local deployments are recorded; default the user's (``INF2_DEPLOY_HOME``).

    Returns:
        A ``LocalPredictor`` or a ``Predictor``; both have ``generate``, ``stream`` and ``stream_events``.

    Raises:
        ConfigError: ``target`` is not a valid name.
        InvocationError: ``target`` names a local deployment whose server has stopped.
        CredentialsError: a SageMaker endpoint, but no AWS region or credentials.
    """
    if target.startswith(("http://", "https://")):
        return LocalPredictor(target)
    local = (store if store is not None else default_store()).get(target)
    if local is None:
        return Predictor(target, region=region)
    if local.status is LocalStatus.STOPPED:
        raise InvocationError(f"local deployment {target} has stopped (pid {local.pid})",
                              hint=f"see {local.log_file}; inf2-deploy delete {target} forgets it")
    return local.predictor
