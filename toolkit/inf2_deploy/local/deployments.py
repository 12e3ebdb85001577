"""Named local deployments: the packaged artifact served by ``inf2_deploy.local.server`` on this machine.

``deploy_local`` packages the same artifact as a SageMaker deploy, starts the
server as a detached background process (it outlives the command that started
it) and records it under a name, so that ``invoke``, ``chat``, ``list`` and
``delete`` work on local names as on SageMaker endpoints.

State lives in one small JSON file per name::

    $INF2_DEPLOY_HOME/local/<name>.json        (if INF2_DEPLOY_HOME is set), else
    ${XDG_CONFIG_HOME:-~/.config}/inf2-deploy/local/<name>.json

with the server's log beside it (``<name>.log``). Artifacts packaged for local
deploys (and models built for them, such as tiny-gptj) are cached under
``$INF2_DEPLOY_HOME/cache`` or ``${XDG_CACHE_HOME:-~/.cache}/inf2-deploy``, so a
second deploy of the same spec reuses them.
"""
from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_text
from ..client.predictor import LocalPredictor
from ..errors import ConfigError, EndpointFailedError, ModelSourceError
from ..spec.deployment_spec import DeploymentSpec
from ..spec.validators import check_endpoint_name

__all__ = [
    "HOME_ENV",
    "LocalDeployment",
    "deploy_local",
    "start_local",
    "get_local_deployment",
    "list_local_deployments",
    "delete_local",
    "connect",
    "state_dir",
    "artifact_cache_dir",
]

logger = logging.getLogger(__name__)

HOME_ENV = "INF2_DEPLOY_HOME"
"""Environment variable that moves all local state (records, logs, cache) under one folder."""
DEFAULT_START_TIMEOUT = 300.0
DEFAULT_STOP_TIMEOUT = 10.0
_POLL_SECONDS = 0.2
_LOG_TAIL_LINES = 20
_SERVER_MODULE = "inf2_deploy.local.server"
RUNNING = "running"
STOPPED = "stopped"
BACKENDS = ("auto", "cpu", "neuron")


def _home_override() -> Path | None:
    value = os.environ.get(HOME_ENV)
    return Path(value).expanduser() if value else None


def state_dir() -> Path:
    """The folder holding one ``<name>.json`` record (and ``<name>.log``) per local deployment."""
    home = _home_override()
    if home is not None:
        return home / "local"
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "inf2-deploy" / "local"


def _cache_root() -> Path:
    from ..artifact.sources import default_cache_dir

    home = _home_override()
    return home / "cache" if home is not None else default_cache_dir()


def artifact_cache_dir() -> Path:
    """The folder where ``deploy_local`` packages artifacts when no ``output`` is given."""
    return _cache_root() / "artifacts"


def _check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise ConfigError(f"must be one of {', '.join(BACKENDS)}", field="backend", value=backend)
    return backend


def _check_name(name: str) -> str:
    # Local names follow SageMaker's rule, so a name works on both.
    return check_endpoint_name(name, "name")


def _default_name(model: str) -> str:
    """``<last part of the model>-local``, e.g. ``gpt-j-6b-local`` for EleutherAI/gpt-j-6b."""
    last = model.rstrip("/").rsplit("/", 1)[-1].lower()
    slug = re.sub(r"[^a-z0-9]+", "-", last).strip("-")[:56] or "model"
    return f"{slug}-local"


@dataclass(frozen=True)
class LocalDeployment:
    """A local server started by :func:`deploy_local` or :func:`start_local`."""

    name: str
    url: str
    pid: int
    artifact_dir: str
    log_file: str
    started_at: str
    fingerprint: str | None = None
    backend: str = "auto"
    #: ``running`` or ``stopped`` when this record was read
    status: str = RUNNING

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
        return _server_alive(self.pid)

    def delete(self, *, timeout: float = DEFAULT_STOP_TIMEOUT) -> None:
        """Stop the server and remove its record (see :func:`delete_local`)."""
        delete_local(self.name, timeout=timeout)

    def to_dict(self) -> dict[str, Any]:
        """The record as stored in the state file (plus ``status``)."""
        return asdict(self)


# --- process helpers --------------------------------------------------------------------------------------


def _pid_alive(pid: int) -> bool:
    try:
        waited, _status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass  # not our child: ask the kernel below
    else:
        # Our child: reaping it here keeps an exited server from lingering as a zombie,
        # which kill(pid, 0) would still report as alive.
        return waited == 0
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _server_alive(pid: int) -> bool:
    """True when ``pid`` is alive and, where /proc tells, still runs our server (pids get reused)."""
    if not _pid_alive(pid):
        return False
    cmdline = Path(f"/proc/{pid}/cmdline")
    if not Path("/proc/self/cmdline").exists():
        return True
    try:
        return _SERVER_MODULE.encode() in cmdline.read_bytes()
    except OSError:  # vanished in between
        return False


def _signal_group(pid: int, signum: int) -> None:
    # The server leads its own session (start_new_session), so its group id is its pid;
    # signalling the group also reaches anything it spawned.
    try:
        os.killpg(pid, signum)
    except ProcessLookupError:
        return
    except PermissionError:
        os.kill(pid, signum)


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _pid_alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def _stop(pid: int, timeout: float) -> None:
    """SIGTERM the server, then SIGKILL it if it is still alive after ``timeout`` seconds."""
    if not _server_alive(pid):
        return
    _signal_group(pid, signal.SIGTERM)
    if not _wait_gone(pid, timeout):
        logger.warning("local server %d ignored SIGTERM for %.0f s; killing it", pid, timeout)
        _signal_group(pid, signal.SIGKILL)
        _wait_gone(pid, 5.0)


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _check_port_free(host: str, port: int) -> None:
    if not 1 <= port <= 65535:
        raise ConfigError("must be between 1 and 65535", field="port", value=port)
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise ConfigError(f"{host}:{port} is not available: {exc.strerror}", field="port", value=port,
                              hint="pick another --port or leave it out to use a free one") from None


def _url(host: str, port: int) -> str:
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


# --- state files ---------------------------------------------------------------------------------------------


def _record_path(name: str) -> Path:
    return state_dir() / f"{name}.json"


def _write_record(deployment: LocalDeployment) -> None:
    path = _record_path(deployment.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {k: v for k, v in deployment.to_dict().items() if k != "status"}
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def _read_record(path: Path) -> LocalDeployment | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        record = LocalDeployment(**{key: data[key] for key in data if key != "status"})
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError) as exc:
        logger.warning("ignoring unreadable local deployment record %s: %s", path, exc)
        return None
    status = RUNNING if _server_alive(record.pid) else STOPPED
    return LocalDeployment(**{**record.to_dict(), "status": status})


def get_local_deployment(name: str) -> LocalDeployment | None:
    """The local deployment recorded under ``name``, or None when there is none.

    Raises:
        ConfigError: ``name`` is not a valid deployment name.
    """
    return _read_record(_record_path(_check_name(name)))


def list_local_deployments() -> list[LocalDeployment]:
    """Every recorded local deployment, sorted by name.

    Records whose server has exited are returned once with status ``stopped``
    and their state file is removed.
    """
    folder = state_dir()
    if not folder.is_dir():
        return []
    deployments = []
    for path in sorted(folder.glob("*.json")):
        record = _read_record(path)
        if record is None:
            continue
        if record.status == STOPPED:
            path.unlink(missing_ok=True)
        deployments.append(record)
    return deployments


def delete_local(name: str, *, timeout: float = DEFAULT_STOP_TIMEOUT) -> LocalDeployment:
    """Stop the local server ``name`` (SIGTERM, then SIGKILL after ``timeout`` s) and forget it.

    Returns:
        The record as it was before deletion.

    Raises:
        ConfigError: the name is invalid or no local deployment has it.
    """
    record = get_local_deployment(name)
    if record is None:
        raise ConfigError("no local deployment has this name", field="name", value=name,
                          hint="inf2-deploy list shows the deployments")
    _stop(record.pid, timeout)
    _record_path(name).unlink(missing_ok=True)
    Path(record.log_file).unlink(missing_ok=True)
    return record


# --- starting ----------------------------------------------------------------------------------------------


def _ensure_name_free(name: str) -> None:
    existing = get_local_deployment(name)
    if existing is not None and existing.status == RUNNING:
        raise ConfigError(f"a local deployment with this name is already running at {existing.url}",
                          field="name", value=name, hint=f"inf2-deploy delete {name}, or pick another name")


def _ping_body(response: Any) -> dict[str, Any]:
    """The JSON of a ``/ping`` answer, e.g. ``{"status": "FAILED", "error": ...}``; {} if none."""
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _wait_ready(process: subprocess.Popen, deployment: LocalDeployment, timeout: float) -> None:
    """Poll ``/ping`` until 200; raise when the server exits, reports FAILED, or ``timeout`` passes."""
    import httpx

    log = Path(deployment.log_file)
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=2.0) as http:
        while True:
            code = process.poll()
            if code is not None:
                raise EndpointFailedError(
                    f"local server {deployment.name} exited with code {code} while starting; "
                    f"last log lines:\n{_log_tail(log)}", value=deployment.name)
            try:
                response = http.get(f"{deployment.url}/ping")
            except httpx.TransportError:
                response = None  # not listening yet
            if response is not None and response.status_code == 200:
                return
            body = _ping_body(response) if response is not None and response.status_code == 503 else {}
            if body.get("status") == "FAILED":
                raise EndpointFailedError(
                    f"local server {deployment.name} failed to load the model: {body.get('error')}; "
                    f"last log lines:\n{_log_tail(log)}", value=deployment.name)
            if time.monotonic() >= deadline:
                raise EndpointFailedError(
                    f"local server {deployment.name} was not ready after {timeout:.0f} s; "
                    f"last log lines:\n{_log_tail(log)}", value=deployment.name,
                    hint="raise the timeout for large models")
            time.sleep(_POLL_SECONDS)


def start_local(
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
    """
    _check_name(name)
    _check_backend(backend)
    folder = Path(artifact_dir).resolve()
    if not (folder / "serving.properties").is_file():
        raise ModelSourceError(f"{folder} has no serving.properties", field="artifact_dir", value=str(folder),
                               hint="package it first with inf2-deploy package")
    _ensure_name_free(name)
    if port is None:
        port = _free_port(host)
    else:
        _check_port_free(host, port)

    log_file = state_dir() / f"{name}.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", _SERVER_MODULE, str(folder), "--host", host, "--port", str(port),
               "--backend", backend]
    if max_batch_delay_ms is not None:
        command += ["--max-batch-delay-ms", str(max_batch_delay_ms)]
    with open(log_file, "wb") as log:
        # A new session detaches the server from this terminal and process group, so it
        # survives the command that started it (and Ctrl-C in that terminal).
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True, close_fds=True, cwd=str(log_file.parent))
    deployment = LocalDeployment(
        name=name, url=_url(host, port), pid=process.pid, artifact_dir=str(folder), log_file=str(log_file),
        started_at=datetime.now(timezone.utc).isoformat(timespec="seconds"), fingerprint=fingerprint,
        backend=backend,
    )
    # Recorded before waiting: an interrupted wait leaves a server that delete can still stop.
    _write_record(deployment)
    if wait:
        try:
            _wait_ready(process, deployment, timeout)
        except EndpointFailedError:
            _stop(process.pid, DEFAULT_STOP_TIMEOUT)
            _record_path(name).unlink(missing_ok=True)
            raise
    return deployment


def _spec_cache_key(spec: DeploymentSpec) -> str:
    # Everything but the name decides the artifact; the packager re-uses an unchanged folder.
    text = spec.model_dump_json(exclude={"endpoint_name"})
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def deploy_local(
    spec: DeploymentSpec,
    *,
    name: str | None = None,
    port: int | None = None,
    host: str = "127.0.0.1",
    output: str | os.PathLike[str] | None = None,
    backend: str = "auto",
    progress: Callable[..., Any] | None = None,
    wait: bool = True,
    timeout: float = DEFAULT_START_TIMEOUT,
) -> LocalDeployment:
    """Package ``spec``'s artifact (as for SageMaker) and serve it locally under a name.

    Args:
        spec: the deployment spec.
        name: the deployment name; default: ``spec.endpoint_name``, else ``<model>-local``.
        port: the port; default: a free one.
        host: the address to listen on.
        output: the artifact folder; default: a cache folder for this spec under
            :func:`artifact_cache_dir`.
        backend: ``auto``, ``cpu`` or ``neuron``.
        progress: the packager's progress callback.
        wait: wait until the server answers ``/ping`` with 200.
        timeout: seconds to wait for readiness.

    Returns:
        The local deployment; ``.predictor`` invokes it and ``.delete()`` stops it.

    Raises:
        ConfigError: an invalid name, port or backend, or the name is already running.
        ModelSourceError: the model cannot be read or packaged.
        EndpointFailedError: the server did not become ready (its last log lines are in the message).
    """
    from ..artifact.packager import package

    name = _check_name(name or spec.endpoint_name or _default_name(spec.model))
    _check_backend(backend)
    _ensure_name_free(name)
    if port is not None:
        _check_port_free(host, port)
    target = Path(output) if output is not None else artifact_cache_dir() / _spec_cache_key(spec)
    artifact = package(spec, target, progress=progress, cache_dir=_cache_root())
    return start_local(artifact.directory, name=name, host=host, port=port, backend=backend,
                       fingerprint=artifact.fingerprint, wait=wait, timeout=timeout)


def connect(target: str, *, region: str | None = None) -> Any:
    """A predictor for ``target``: an ``http(s)://`` URL, a local deployment's name, or a
    SageMaker endpoint name, tried in that order.

    Args:
        target: where to send requests.
        region: the AWS region of a SageMaker endpoint; default the standard resolution.

    Returns:
        A ``LocalPredictor`` or a ``Predictor``; both have ``generate``, ``stream`` and ``stream_events``.

    Raises:
        InvocationError: ``target`` names a local deployment whose server has stopped.
        CredentialsError: a SageMaker endpoint, but no AWS region or credentials.
    """
    from ..client.predictor import Predictor
    from ..errors import InvocationError

    if target.startswith(("http://", "https://")):
        return LocalPredictor(target)
    local = get_local_deployment(target)
    if local is None:
        return Predictor(target, region=region)
    if local.status == STOPPED:
        raise InvocationError(f"local deployment {target} has stopped (pid {local.pid})",
                              hint=f"see {local.log_file}; inf2-deploy delete {target} forgets it")
    return local.predictor
