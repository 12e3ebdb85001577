"""Starting, watching and stopping local server processes, each recorded in a :class:`LocalStore`.

A server runs ``python -m inf2_deploy.local.server`` as a detached process (it
leads its own session, so it outlives the command that started it). Readiness is
its ``/ping`` answering 200; stopping is SIGTERM to its process group, then
SIGKILL. Waits go through an injected :class:`~inf2_deploy.clock.Clock`, so tests
run them on a fake one.
"""
from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from inf2_serving.contract import BACKENDS

from ..clock import Clock, SystemClock
from ..errors import ConfigError, EndpointFailedError, ModelSourceError
from ..spec.validators import check_endpoint_name
from ..status import DeploymentStatus
from .process import SERVER_MODULE, pid_alive, server_alive, signal_group
from .records import LocalDeployment, LocalStore, default_store

__all__ = [
    "DEFAULT_START_TIMEOUT",
    "DEFAULT_STOP_TIMEOUT",
    "LocalSupervisor",
    "check_backend",
    "check_port_free",
    "server_url",
]

logger = logging.getLogger(__name__)

DEFAULT_START_TIMEOUT = 300.0
DEFAULT_STOP_TIMEOUT = 10.0
_POLL_SECONDS = 0.2
_GONE_POLL_SECONDS = 0.05
_KILL_WAIT_SECONDS = 5.0
_LOG_TAIL_LINES = 20


def check_backend(backend: str) -> str:
    """``backend`` if it is one of the contract's backends, else a ConfigError naming ``backend``."""
    if backend not in BACKENDS:
        raise ConfigError(f"must be one of {', '.join(BACKENDS)}", field="backend", value=backend)
    return backend


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _free_port(host: str) -> int:
    with socket.socket(_family(host)) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def check_port_free(host: str, port: int) -> None:
    """Raise a ConfigError naming ``port`` when it is out of range or ``host:port`` is taken."""
    if not 1 <= port <= 65535:
        raise ConfigError("must be between 1 and 65535", field="port", value=port)
    with socket.socket(_family(host)) as sock:
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise ConfigError(f"{host}:{port} is not available: {exc.strerror}", field="port", value=port,
                              hint="pick another --port or leave it out to use a free one") from None


def server_url(host: str, port: int) -> str:
    """The URL a client uses for a server listening on ``host:port`` (loopback for the any-address)."""
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _log_tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.rstrip().splitlines()[-lines:]) or "(empty log)"


def _ping_body(response: Any) -> dict[str, Any]:
    """The JSON of a ``/ping`` answer, e.g. ``{"status": "FAILED", "error": ...}``; {} if none."""
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


class LocalSupervisor:
    """Starts, waits for and stops the local servers recorded in ``store``.

    Args:
        store: where deployments are recorded; default :func:`~inf2_deploy.local.records.default_store`.
        clock: what waits read and sleep on; default the real clock.
    """

    def __init__(self, store: LocalStore | None = None, clock: Clock | None = None) -> None:
        self.store = store if store is not None else default_store()
        self.clock: Clock = clock if clock is not None else SystemClock()

    def __repr__(self) -> str:
        return f"LocalSupervisor({self.store!r})"

    def ensure_name_free(self, name: str) -> None:
        """Raise a ConfigError naming ``name`` when a deployment by that name is running."""
        existing = self.store.get(name)
        if existing is not None and existing.status is DeploymentStatus.IN_SERVICE:
            raise ConfigError(f"a local deployment with this name is already running at {existing.url}",
                              field="name", value=name, hint=f"inf2-deploy delete {name}, or pick another name")

    def start(
        self,
        artifact_dir: str | os.PathLike[str],
        *,
        name: str,
        host: str = "127.0.0.1",
        port: int | None = None,
        backend: str = "auto",
        max_batch_delay_ms: float | None = None,
        fingerprint: str | None = None,
        wait: bool = True,
        timeout: float = DEFAULT_START_TIMEOUT,
    ) -> LocalDeployment:
        """Serve a packaged artifact folder in the background under ``name``.

        Args:
            artifact_dir: a folder with ``serving.properties`` and the weights.
            name: the deployment name (SageMaker's rule: letters, digits, hyphens).
            host: the address to listen on.
            port: the port; default: a free one.
            backend: ``auto``, ``cpu`` or ``neuron``.
            max_batch_delay_ms: how long the server waits to fill a batch; default: the artifact's.
            fingerprint: the artifact fingerprint to record.
            wait: wait until ``/ping`` answers 200.
            timeout: seconds to wait for readiness.

        Returns:
            The running (or, with ``wait=False``, starting) deployment.

        Raises:
            ConfigError: invalid name, backend or port, or the name is already running.
            ModelSourceError: ``artifact_dir`` has no ``serving.properties``.
            EndpointFailedError: the server exited, failed to load, or was not ready in time;
                it is stopped and forgotten, and the message ends with its last log lines.
            KeyboardInterrupt: Ctrl-C while waiting; the server is stopped, and its record and
                log are removed.
        """
        check_endpoint_name(name, "name")
        check_backend(backend)
        folder = Path(artifact_dir).resolve()
        if not (folder / "serving.properties").is_file():
            raise ModelSourceError(f"{folder} has no serving.properties", field="artifact_dir", value=str(folder),
                                   hint="package it first with inf2-deploy package")
        self.ensure_name_free(name)
        if port is None:
            port = _free_port(host)
        else:
            check_port_free(host, port)
        command = [sys.executable, "-m", SERVER_MODULE, str(folder), "--host", host, "--port", str(port),
                   "--backend", backend]
        if max_batch_delay_ms is not None:
            command += ["--max-batch-delay-ms", str(max_batch_delay_ms)]
        process = self._spawn(command, self.store.log_path(name))
        try:
            deployment = LocalDeployment(
                name=name, url=server_url(host, port), pid=process.pid, artifact_dir=str(folder),
                log_file=str(self.store.log_path(name)), started_at=self.clock.now().isoformat(timespec="seconds"),
                fingerprint=fingerprint, backend=backend,
            )
            # Recorded before waiting: if this process is killed while it waits, delete can still stop the server.
            self.store.save(deployment)
            if wait:
                self.wait_ready(process, deployment, timeout)
        except EndpointFailedError:
            self._abandon(process, name, keep_log=True)  # the message quotes the log; the file stays for more
            raise
        except KeyboardInterrupt:
            # Ctrl-C while the server starts: the user wants none of it, so nothing of it is left.
            self._abandon(process, name, keep_log=False)
            raise
        return deployment

    def _abandon(self, process: subprocess.Popen[bytes], name: str, *, keep_log: bool) -> None:
        """Stop a server that never became ready and forget it; a second Ctrl-C cuts the wait with SIGKILL."""
        try:
            self.stop(process.pid)
        except KeyboardInterrupt:
            signal_group(process.pid, signal.SIGKILL)
        finally:
            self.store.delete(name)
            if not keep_log:
                self.store.log_path(name).unlink(missing_ok=True)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(_KILL_WAIT_SECONDS)  # reap it: SIGTERM or SIGKILL has been sent

    @staticmethod
    def _spawn(command: list[str], log_file: Path) -> subprocess.Popen[bytes]:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(log_file, "wb") as log:
            # A new session detaches the server from this terminal and process group, so it
            # survives the command that started it (and Ctrl-C in that terminal).
            return subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True, close_fds=True, cwd=str(log_file.parent))

    def wait_ready(self, process: subprocess.Popen[bytes], deployment: LocalDeployment, timeout: float) -> None:
        """Poll ``/ping`` until 200.

        Raises:
            EndpointFailedError: the server exited, reported FAILED, or was not ready within
                ``timeout`` seconds; the message ends with its last log lines.
        """
        import httpx

        deadline = self.clock.monotonic() + timeout
        with httpx.Client(timeout=2.0) as http:
            while True:
                code = process.poll()
                if code is not None:
                    raise self._failed(deployment, f"exited with code {code} while starting")
                try:
                    response = http.get(f"{deployment.url}/ping")
                except httpx.TransportError:
                    response = None  # not listening yet
                if response is not None and response.status_code == 200:
                    return
                body = _ping_body(response) if response is not None and response.status_code == 503 else {}
                if body.get("status") == "FAILED":
                    raise self._failed(deployment, f"failed to load the model: {body.get('error')}")
                if self.clock.monotonic() >= deadline:
                    raise self._failed(deployment, f"was not ready after {timeout:.0f} s",
                                       hint="raise the timeout for large models")
                self.clock.sleep(_POLL_SECONDS)

    @staticmethod
    def _failed(deployment: LocalDeployment, what: str, hint: str | None = None) -> EndpointFailedError:
        return EndpointFailedError(
            f"local server {deployment.name} {what}; last log lines:\n{_log_tail(Path(deployment.log_file))}",
            value=deployment.name, hint=hint)

    def _wait_gone(self, pid: int, timeout: float) -> bool:
        deadline = self.clock.monotonic() + timeout
        while pid_alive(pid):
            if self.clock.monotonic() >= deadline:
                return False
            self.clock.sleep(_GONE_POLL_SECONDS)
        return True

    def stop(self, pid: int, *, timeout: float = DEFAULT_STOP_TIMEOUT) -> None:
        """SIGTERM the server ``pid``, then SIGKILL it if it is still alive after ``timeout`` seconds.

        A pid that no longer runs our server (it exited, or the OS gave it to another
        program) is left alone.
        """
        if not server_alive(pid):
            return
        signal_group(pid, signal.SIGTERM)
        if not self._wait_gone(pid, timeout):
            logger.warning("local server %d ignored SIGTERM for %.0f s; killing it", pid, timeout)
            signal_group(pid, signal.SIGKILL)
            self._wait_gone(pid, _KILL_WAIT_SECONDS)

    def delete(self, name: str, *, timeout: float = DEFAULT_STOP_TIMEOUT) -> LocalDeployment:
        """Stop the server ``name`` (see :meth:`stop`) and forget it: its record and its log.

        Returns:
            The record as it was before deletion.

        Raises:
            ConfigError: the name is invalid or no local deployment has it.
        """
        record = self.store.get(name)
        if record is None:
            raise ConfigError("no local deployment has this name", field="name", value=name,
                              hint="inf2-deploy list shows the deployments")
        self.stop(record.pid, timeout=timeout)
        self.store.delete(name)
        Path(record.log_file).unlink(missing_ok=True)
        return record
