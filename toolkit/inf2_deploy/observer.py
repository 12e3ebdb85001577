"""What a deploy reports while it runs: upload progress, endpoint status, container log lines, steps.

One observer receives all four, instead of one loose callback each, as
s3transfer's subscribers do. The SDK only reports; the caller decides how to
render (the CLI draws rich bars and a live status line). Observer methods may
be called from upload threads, so they must be quick and thread-safe.
Standard library only: the CLI imports this before any AWS module.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from .errors import ConfigError

if TYPE_CHECKING:
    from .aws.logs import LogLine
    from .status import DeploymentStatus

__all__ = ["DeployObserver", "NullObserver", "CallbackObserver", "observer_of"]


class DeployObserver(Protocol):
    """Receives what a deploy reports."""

    def on_progress(self, done: int, total: int, label: str) -> None:
        """Bytes packaged or uploaded so far; ``total`` is 0 while still unknown."""
        ...

    def on_status(self, status: DeploymentStatus, elapsed: float) -> None:
        """The endpoint's status after each poll, and the seconds waited so far."""
        ...

    def on_log(self, line: LogLine) -> None:
        """One new container log line, read while waiting."""
        ...

    def on_event(self, message: str) -> None:
        """One line for people on a step the deploy took, e.g. ``created model M``."""
        ...


class NullObserver:
    """An observer that ignores everything: the default, and a base for observers that want only some."""

    def on_progress(self, done: int, total: int, label: str) -> None:
        """Ignored."""

    def on_status(self, status: DeploymentStatus, elapsed: float) -> None:
        """Ignored."""

    def on_log(self, line: LogLine) -> None:
        """Ignored."""

    def on_event(self, message: str) -> None:
        """Ignored."""


class CallbackObserver(NullObserver):
    """Forwards to plain functions, for callers that pass one callable per report.

    Args:
        progress: ``(done_bytes, total_bytes, label)``.
        on_status: ``(status, seconds waited)``.
        on_log: each new container log line.
        on_event: each step, as one line.
    """

    def __init__(
        self,
        *,
        progress: Callable[[int, int, str], None] | None = None,
        on_status: Callable[[DeploymentStatus, float], None] | None = None,
        on_log: Callable[[LogLine], None] | None = None,
        on_event: Callable[[str], None] | None = None,
    ) -> None:
        self._progress = progress
        self._status = on_status
        self._log = on_log
        self._event = on_event

    def on_progress(self, done: int, total: int, label: str) -> None:
        if self._progress is not None:
            self._progress(done, total, label)

    def on_status(self, status: DeploymentStatus, elapsed: float) -> None:
        if self._status is not None:
            self._status(status, elapsed)

    def on_log(self, line: LogLine) -> None:
        if self._log is not None:
            self._log(line)

    def on_event(self, message: str) -> None:
        if self._event is not None:
            self._event(message)


def observer_of(
    observer: DeployObserver | None = None,
    *,
    progress: Callable[[int, int, str], None] | None = None,
    on_status: Callable[[DeploymentStatus, float], None] | None = None,
    on_log: Callable[[LogLine], None] | None = None,
) -> DeployObserver:
    """``observer``, else one forwarding to the given callables, else a :class:`NullObserver`.

    Raises:
        ConfigError: both an observer and callables were given (field ``observer``).
    """
    loose = progress is not None or on_status is not None or on_log is not None
    if observer is not None and loose:
        raise ConfigError("pass an observer or the progress/on_status/on_log callables, not both",
                          field="observer", hint="add the callables' work to the observer's methods")
    if observer is not None:
        return observer
    if loose:
        return CallbackObserver(progress=progress, on_status=on_status, on_log=on_log)
    return NullObserver()
