"""LocalSupervisor on a fake clock: readiness, failures, refusals, and stopping a process."""
from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from inf2_deploy.errors import ConfigError, EndpointFailedError, ModelSourceError
from inf2_deploy.local.process import SERVER_MODULE, pid_alive
from inf2_deploy.local.records import LocalDeployment, LocalStore
from inf2_deploy.local.supervisor import LocalSupervisor, check_port_free, server_url


class _Starting:
    """A process that is still starting (``poll`` answers None), or one that exited with ``code``."""

    def __init__(self, code: int | None = None) -> None:
        self.code = code
        self.pid = 0

    def poll(self) -> int | None:
        return self.code


def _deployment(store: LocalStore, url: str, pid: int = 0) -> LocalDeployment:
    log = store.log_path("tiny")
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("".join(f"line {n}\n" for n in range(30)))
    return LocalDeployment(name="tiny", url=url, pid=pid, artifact_dir="/artifact", log_file=str(log),
                           started_at="2025-01-02T03:04:05+00:00")


@pytest.fixture
def supervisor(root: Path, clock) -> LocalSupervisor:
    return LocalSupervisor(LocalStore(root), clock)


@pytest.fixture
def failed_ping() -> Iterator[str]:
    """A server whose /ping answers 503 with the handler's FAILED state."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            body = json.dumps({"status": "FAILED", "error": "no weights"}).encode()
            self.send_response(503)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_readiness_times_out_on_the_clock_not_the_wall(supervisor: LocalSupervisor, clock, unused_port: int) -> None:
    deployment = _deployment(supervisor.store, f"http://127.0.0.1:{unused_port}")
    with pytest.raises(EndpointFailedError) as caught:
        supervisor.wait_ready(_Starting(), deployment, timeout=3)
    message = str(caught.value)
    assert "was not ready after 3 s" in message and caught.value.hint == "raise the timeout for large models"
    assert "\nline 10\n" in message and "line 29" in message and "line 9\n" not in message  # the last 20 lines
    assert clock.elapsed >= 3 and set(clock.sleeps) == {0.2}


def test_a_server_that_exits_while_starting_is_reported_with_its_code(supervisor: LocalSupervisor, clock,
                                                                       unused_port: int) -> None:
    deployment = _deployment(supervisor.store, f"http://127.0.0.1:{unused_port}")
    with pytest.raises(EndpointFailedError, match="exited with code 3 while starting"):
        supervisor.wait_ready(_Starting(code=3), deployment, timeout=300)
    assert clock.sleeps == []


def test_a_failed_model_load_ends_the_wait_at_once(supervisor: LocalSupervisor, clock, failed_ping: str) -> None:
    with pytest.raises(EndpointFailedError, match="failed to load the model: no weights"):
        supervisor.wait_ready(_Starting(), _deployment(supervisor.store, failed_ping), timeout=300)
    assert clock.sleeps == []


def test_start_refuses_before_spawning(supervisor: LocalSupervisor, tmp_path: Path) -> None:
    artifact = tmp_path / "artifact"
    artifact.mkdir()
    with pytest.raises(ModelSourceError, match="no serving.properties"):
        supervisor.start(artifact, name="tiny")
    (artifact / "serving.properties").write_text("engine=Python\n")
    with pytest.raises(ConfigError) as caught:
        supervisor.start(artifact, name="tiny", backend="gpu")
    assert caught.value.field == "backend"
    with pytest.raises(ConfigError) as caught:
        supervisor.start(artifact, name="bad_name!")
    assert caught.value.field == "name"
    running = LocalStore(supervisor.store.root, alive=lambda pid: True)
    running.save(_deployment(running, "http://127.0.0.1:9"))
    with pytest.raises(ConfigError, match="already running at http://127.0.0.1:9"):
        LocalSupervisor(running).start(artifact, name="tiny")
    assert not any(path.suffix == ".log" and path.stem != "tiny" for path in supervisor.store.root.iterdir())


def test_ports_and_urls() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(ConfigError, match="not available") as caught:
            check_port_free("127.0.0.1", busy.getsockname()[1])
    assert caught.value.field == "port"
    with pytest.raises(ConfigError, match="between 1 and 65535"):
        check_port_free("127.0.0.1", 70000)
    assert server_url("0.0.0.0", 8080) == "http://127.0.0.1:8080"
    assert server_url("::", 8080) == "http://[::1]:8080"
    assert server_url("localhost", 80) == "http://localhost:80"


def test_delete_of_an_unknown_name_is_a_config_error(supervisor: LocalSupervisor) -> None:
    with pytest.raises(ConfigError, match="no local deployment") as caught:
        supervisor.delete("nothing")
    assert caught.value.field == "name"


needs_proc = pytest.mark.skipif(not os.path.exists("/proc/self/cmdline"),
                                reason="our server is told by /proc/<pid>/cmdline; elsewhere any live pid is ours")


def _lookalike_server(*, ignore_sigterm: bool) -> subprocess.Popen[str]:
    """A detached process whose command line names the server module, as a local server's does."""
    code = ("import signal, time\n"
            + ("signal.signal(signal.SIGTERM, signal.SIG_IGN)\n" if ignore_sigterm else "")
            + "print('ready', flush=True)\ntime.sleep(120)\n")
    process = subprocess.Popen([sys.executable, "-c", code, SERVER_MODULE], stdout=subprocess.PIPE, text=True,
                               start_new_session=True)
    assert process.stdout is not None and process.stdout.readline() == "ready\n"
    return process


@needs_proc
def test_delete_stops_the_process_and_forgets_it(supervisor: LocalSupervisor) -> None:
    process = _lookalike_server(ignore_sigterm=False)
    supervisor.store.save(_deployment(supervisor.store, "http://127.0.0.1:9", pid=process.pid))
    deleted = supervisor.delete("tiny")
    assert deleted.pid == process.pid and deleted.name == "tiny"
    process.wait(timeout=10)
    assert supervisor.store.get("tiny") is None and not Path(deleted.log_file).exists()


@needs_proc
def test_a_server_that_ignores_sigterm_is_killed_after_the_timeout(supervisor: LocalSupervisor, clock,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    process = _lookalike_server(ignore_sigterm=True)
    try:
        with caplog.at_level(logging.WARNING):
            supervisor.stop(process.pid, timeout=10)
        process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
    # The supervisor may have reaped the child itself, so its exit code is not always Popen's to tell.
    assert not pid_alive(process.pid) and "ignored SIGTERM for 10 s" in caplog.text
    assert clock.elapsed >= 10  # waited on the fake clock


@needs_proc
def test_stop_leaves_a_pid_that_is_not_our_server_alone(supervisor: LocalSupervisor) -> None:
    supervisor.stop(os.getpid(), timeout=0)  # this test process: alive, but not the server module
    assert pid_alive(os.getpid())
