"""The records of local deployments: one small JSON file per name in a store folder.

A :class:`LocalStore` keeps ``<name>.json`` (written atomically) with the server's
log beside it (``<name>.log``). A record's :class:`~inf2_deploy.status.DeploymentStatus` is not stored: it is
read from the operating system each time the record is read, as the server may have
exited since.
"""
from __future__ import annotations

import functools
import json
import logging
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_text
from ..client.predictor import LocalPredictor
from ..spec.validators import check_endpoint_name
from ..status import DeploymentStatus
from .paths import state_dir
from .process import server_alive

__all__ = ["LocalDeployment", "LocalStore", "default_store"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LocalDeployment:
    """A local server started by :func:`~inf2_deploy.local.deploy.serve_local` (or a supervisor)."""

    name: str
    url: str
    pid: int
    artifact_dir: str
    log_file: str
    started_at: str
    fingerprint: str | None = None
    backend: str = "auto"
    #: IN_SERVICE while the server runs, STOPPED once it has exited, when this record was read
    status: DeploymentStatus = DeploymentStatus.IN_SERVICE

    @property
    def endpoint_name(self) -> str:
        """The deployment's name (the same attribute a SageMaker deployment has)."""
        return self.name

    @functools.cached_property
    def predictor(self) -> LocalPredictor:
        """A :class:`~inf2_deploy.client.predictor.LocalPredictor` for this server."""
        return LocalPredictor(self.url, name=self.name)

    def is_running(self) -> bool:
        """True while the server process is alive."""
        return server_alive(self.pid)

    def delete(self, *, store: LocalStore | None = None, timeout: float | None = None) -> None:
        """Stop the server and remove its record (see :meth:`LocalSupervisor.delete`).

        Args:
            store: the store holding the record; default :func:`default_store`.
            timeout: seconds between SIGTERM and SIGKILL; default the supervisor's.
        """
        # Imported here: the supervisor builds on these records.
        from .supervisor import DEFAULT_STOP_TIMEOUT, LocalSupervisor

        LocalSupervisor(store).delete(self.name, timeout=DEFAULT_STOP_TIMEOUT if timeout is None else timeout)

    def to_dict(self) -> dict[str, Any]:
        """The record's fields, ``status`` included (as a string)."""
        return {**asdict(self), "status": self.status.value}


class LocalStore:
    """Local deployment records under ``root``: ``<name>.json`` and the server's ``<name>.log``.

    Args:
        root: the folder; created when the first record is saved.
        alive: tells whether a recorded pid still runs the server; default: ask the OS.
    """

    def __init__(self, root: str | os.PathLike[str], *, alive: Callable[[int], bool] = server_alive) -> None:
        self.root = Path(root)
        self._alive = alive

    def __repr__(self) -> str:
        return f"LocalStore({str(self.root)!r})"

    def record_path(self, name: str) -> Path:
        """The record file of ``name``."""
        return self.root / f"{name}.json"

    def log_path(self, name: str) -> Path:
        """The server log of ``name``."""
        return self.root / f"{name}.log"

    def get(self, name: str) -> LocalDeployment | None:
        """The deployment recorded under ``name``, or None when there is none.

        Raises:
            ConfigError: ``name`` is not a valid deployment name.
        """
        return self._read(self.record_path(check_endpoint_name(name, "name")))

    def list(self) -> list[LocalDeployment]:
        """Every recorded deployment, sorted by name.

        Records whose server has exited are returned once with status STOPPED, and
        their file is removed.
        """
        if not self.root.is_dir():
            return []
        deployments = []
        for path in sorted(self.root.glob("*.json")):
            record = self._read(path)
            if record is None:
                continue
            if record.status is DeploymentStatus.STOPPED:
                path.unlink(missing_ok=True)
            deployments.append(record)
        return deployments

    def save(self, deployment: LocalDeployment) -> None:
        """Write ``deployment``'s record (its status is not stored)."""
        data = {key: value for key, value in asdict(deployment).items() if key != "status"}
        atomic_write_text(self.record_path(deployment.name), json.dumps(data, indent=2, sort_keys=True) + "\n")

    def delete(self, name: str) -> None:
        """Remove the record of ``name``; the log stays (see :meth:`log_path`)."""
        self.record_path(name).unlink(missing_ok=True)

    def _read(self, path: Path) -> LocalDeployment | None:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            record = LocalDeployment(**{key: data[key] for key in data if key != "status"})
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError) as exc:
            logger.warning("ignoring unreadable local deployment record %s: %s", path, exc)
            return None
        status = DeploymentStatus.IN_SERVICE if self._alive(record.pid) else DeploymentStatus.STOPPED
        return replace(record, status=status)


def default_store() -> LocalStore:
    """The store in :func:`~inf2_deploy.local.paths.state_dir` (``INF2_DEPLOY_HOME`` moves it)."""
    return LocalStore(state_dir())
