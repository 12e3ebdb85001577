"""The exceptions inf2-deploy raises.

Every error derives from :class:`Inf2DeployError` and also from the standard
base that fits it, so callers can catch either::

    Inf2DeployError
    ├── ConfigError (ValueError)            a setting is invalid; exit code 2
    │   ├── PlanError                       the Neuron plan cannot work
    │   └── ImageNotFoundError              no LMI image for region/version
    ├── ModelSourceError (OSError)          a checkpoint is missing or broken
    ├── AwsError (RuntimeError)             an AWS call failed (carries request_id)
    │   ├── CredentialsError                no credentials or region; exit code 2
    │   ├── EndpointNotFoundError           no endpoint by that name; exit code 2
    │   └── EndpointFailedError             the endpoint reached Failed
    └── InvocationError (RuntimeError)      an endpoint answered with an error
        └── DeploymentStoppedError          a local deployment's server has exited
"""
from __future__ import annotations

__all__ = [
    "Inf2DeployError",
    "ConfigError",
    "PlanError",
    "ImageNotFoundError",
    "ModelSourceError",
    "AwsError",
    "CredentialsError",
    "EndpointFailedError",
    "EndpointNotFoundError",
    "InvocationError",
    "DeploymentStoppedError",
]


class Inf2DeployError(Exception):
    """Root of every inf2-deploy error.

    Args:
        message: what failed, the value, and the fix.
        field: the spec field or CLI flag at fault, if any.
        value: the offending value, if any.
        hint: the next thing to try, shown after the message.
        request_id: the AWS request id, when AWS gave one.
    """

    exit_code = 1

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        value: object = None,
        hint: str | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.value = value
        self.hint = hint
        self.request_id = request_id

    def __str__(self) -> str:
        text = f"{self.field}: {self.message}" if self.field else self.message
        if self.hint:
            text += f" ({self.hint})"
        if self.request_id:
            text += f" [request id {self.request_id}]"
        return text


class ConfigError(Inf2DeployError, ValueError):
    """A deployment setting is invalid."""

    exit_code = 2

    #: every (field, message) found; validation collects them all before raising
    problems: list[tuple[str, str]]

    @classmethod
    def from_problems(cls, problems: list[tuple[str, str]]) -> ConfigError:
        """One error for a list of ``(field, message)`` problems: it names the first, and its text
        lists every one, a line each."""
        field, message = problems[0]
        error = cls(message, field=field)
        error.problems = list(problems)
        return error

    def __init__(self, message: str, **kwargs: object) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.problems = [(self.field or "", message)]

    def __str__(self) -> str:
        # The first problem reads as any one-problem error; the others follow it, one per line.
        others = [f"  {field}: {message}" if field else f"  {message}" for field, message in self.problems[1:]]
        return "\n".join([super().__str__(), *others])


class PlanError(ConfigError):
    """The Neuron plan cannot work on the chosen instance."""


class ImageNotFoundError(ConfigError):
    """The SageMaker image registry has no djl-neuronx image for this region or version."""


class ModelSourceError(Inf2DeployError, OSError):
    """A checkpoint is missing, incomplete or of an unsupported kind."""

    exit_code = 2


class AwsError(Inf2DeployError, RuntimeError):
    """An AWS call failed.

    Args:
        code: the AWS error code (e.g. ``ValidationException``), when AWS gave one.
    """

    def __init__(self, message: str, *, code: str | None = None, **kwargs: object) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.code = code


class CredentialsError(AwsError):
    """No AWS credentials or region could be found."""

    exit_code = 2


class EndpointNotFoundError(AwsError, LookupError):
    """No endpoint (or local deployment) has the name given: a usage error, exit code 2."""

    exit_code = 2


class EndpointFailedError(AwsError):
    """The SageMaker endpoint reached the Failed state."""


class InvocationError(Inf2DeployError, RuntimeError):
    """An endpoint answered a request with an error.

    Args:
        status: the HTTP status the endpoint (or the model container) returned.
    """

    def __init__(self, message: str, *, status: int | None = None, **kwargs: object) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.status = status


class DeploymentStoppedError(InvocationError):
    """A local deployment's server has exited: nothing answers at its URL until it is deployed again.

    Args:
        name: the local deployment's name.
    """

    def __init__(self, name: str, *, pid: int, log_file: str) -> None:
        super().__init__(f"local deployment {name} has stopped (pid {pid})",
                         hint=f"see {log_file}; inf2-deploy deploy --local starts it again, "
                         f"inf2-deploy delete {name} forgets it")
        self.name = name
