"""Named local deployments: deploy, record, invoke through the CLI, list, delete."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from inf2_deploy.artifact.manifest import Artifact
from inf2_deploy.cli import main
from inf2_deploy.errors import ConfigError, EndpointFailedError
from inf2_deploy.local.deploy import default_name, serve_local
from inf2_deploy.local.paths import state_dir
from inf2_deploy.local.records import LocalDeployment, default_store
from inf2_deploy.local.supervisor import LocalSupervisor
from inf2_deploy.status import DeploymentStatus

RECORD_KEYS = {"name", "url", "pid", "artifact_dir", "log_file", "started_at", "fingerprint", "backend"}


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie still answers kill(pid, 0); its /proc status says so.
    status = Path(f"/proc/{pid}/status")
    return status.exists() and "\nState:\tZ" in status.read_text()


@pytest.mark.slow
def test_lifecycle_deploy_invoke_list_delete(local_home: Path, tiny_artifact_dir: Path, tiny_spec: Any,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    deployment = serve_local(tiny_spec, name="tiny-life", backend="cpu", timeout=120)

    # The record: atomic JSON under INF2_DEPLOY_HOME/local, pointing at the cached artifact.
    record_file = local_home / "local" / "tiny-life.json"
    assert state_dir() == local_home / "local"
    record = json.loads(record_file.read_text())
    assert set(record) == RECORD_KEYS
    assert record["artifact_dir"] == str(tiny_artifact_dir.resolve())
    assert record["fingerprint"] == Artifact.load(tiny_artifact_dir).fingerprint
    assert record["url"] == deployment.url and deployment.endpoint_name == "tiny-life"
    assert os.getsid(deployment.pid) == deployment.pid  # detached: leads its own session
    assert httpx.get(f"{deployment.url}/ping").status_code == 200
    assert [d.name for d in default_store().list()] == ["tiny-life"]
    assert default_store().get("tiny-life").status is DeploymentStatus.IN_SERVICE

    # Invoke through the CLI by name, buffered and streamed; both match the predictor.
    expected = deployment.predictor.generate("Hello world", max_new_tokens=6)
    assert main(["invoke", "tiny-life", "Hello world", "--max-new-tokens", "6"]) == 0
    assert capsys.readouterr().out == expected + "\n"
    assert main(["invoke", "tiny-life", "Hello world", "--max-new-tokens", "6", "--stream", "--details"]) == 0
    out = capsys.readouterr()
    assert out.out == expected + "\n"
    timings = json.loads(out.err)
    assert timings["tokens"] == 6 and timings["details"]["generated_tokens"] == 6

    # The same name cannot start twice.
    with pytest.raises(ConfigError, match="already running"):
        serve_local(tiny_spec, name="tiny-life", backend="cpu")

    deleted = LocalSupervisor().delete("tiny-life")
    assert deleted.pid == deployment.pid
    assert _gone(deployment.pid)
    assert not record_file.exists() and not Path(deployment.log_file).exists()
    assert default_store().get("tiny-life") is None and default_store().list() == []
    with pytest.raises(ConfigError, match="no local deployment"):
        LocalSupervisor().delete("tiny-life")


@pytest.mark.slow
def test_a_server_that_fails_to_load_is_reported_and_forgotten(local_home: Path, tmp_path: Path) -> None:
    artifact = tmp_path / "broken"
    artifact.mkdir()
    (artifact / "serving.properties").write_text("engine=Python\noption.model_id=/nonexistent/weights\n")
    started = time.monotonic()
    with pytest.raises(EndpointFailedError) as caught:
        LocalSupervisor().start(artifact, name="broken", backend="cpu", timeout=120)
    message = str(caught.value)
    assert "failed to load the model" in message and "model_id" in message
    assert "last log lines" in message
    assert time.monotonic() - started < 60  # FAILED on /ping ends the wait early
    assert default_store().get("broken") is None


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def _write_record(home: Path, name: str, pid: int) -> Path:
    folder = home / "local"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    record = LocalDeployment(name=name, url="http://127.0.0.1:9", pid=pid, artifact_dir="/nowhere",
                             log_file=str(folder / f"{name}.log"), started_at="2026-01-01T00:00:00+00:00")
    path.write_text(json.dumps({k: v for k, v in record.to_dict().items() if k != "status"}))
    return path


def test_stale_records_are_listed_once_as_stopped(local_home: Path) -> None:
    path = _write_record(local_home, "stale", _dead_pid())
    assert default_store().get("stale").status is DeploymentStatus.STOPPED
    listed = default_store().list()
    assert [(d.name, d.status) for d in listed] == [("stale", DeploymentStatus.STOPPED)]
    assert not path.exists() and default_store().list() == []


def test_invoke_on_a_stopped_local_deployment_is_one_line_exit_1(local_home: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    _write_record(local_home, "stale", _dead_pid())
    assert main(["invoke", "stale", "Hello"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: local deployment stale has stopped") and err.count("\n") == 1


def test_a_pid_reused_by_another_program_is_not_our_server(local_home: Path) -> None:
    # This test's own process is alive but is not inf2_deploy.local.server: never signal it.
    _write_record(local_home, "reused", os.getpid())
    assert default_store().get("reused").status is DeploymentStatus.STOPPED
    LocalSupervisor().delete("reused")  # removes the record without touching the process
    assert default_store().get("reused") is None


def test_names_and_ports_are_checked_before_packaging(local_home: Path, tiny_spec: Any) -> None:
    cache = local_home / "cache"
    before = sorted(p.name for p in cache.rglob("*"))
    with pytest.raises(ConfigError) as caught:
        serve_local(tiny_spec, name="bad_name!")
    assert caught.value.field == "name"
    with pytest.raises(ConfigError) as caught:
        serve_local(tiny_spec, name="ok", backend="gpu")
    assert caught.value.field == "backend"
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(ConfigError, match="not available") as caught:
            serve_local(tiny_spec, name="ok", port=busy.getsockname()[1])
    assert caught.value.field == "port"
    assert sorted(p.name for p in cache.rglob("*")) == before  # nothing was packaged


def test_default_names_come_from_the_model() -> None:
    assert default_name("EleutherAI/gpt-j-6b") == "gpt-j-6b-local"
    assert default_name("/data/My_Model/") == "my-model-local"
    assert default_name("tiny-gptj") == "tiny-gptj-local"
    assert len(default_name("x" * 200)) <= 63
