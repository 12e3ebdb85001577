"""LocalStore: records written atomically under a root, their status read from the OS each time."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from inf2_deploy.errors import ConfigError
from inf2_deploy.local.paths import artifact_cache_dir, cache_root, state_dir
from inf2_deploy.local.records import LocalDeployment, LocalStore, default_store
from inf2_deploy.status import DeploymentStatus

LIVE_PIDS = {101, 102}


def _record(name: str, pid: int = 101) -> LocalDeployment:
    return LocalDeployment(name=name, url="http://127.0.0.1:9", pid=pid, artifact_dir="/artifact",
                           log_file=f"/logs/{name}.log", started_at="2025-01-02T03:04:05+00:00")


@pytest.fixture
def store(root: Path) -> LocalStore:
    return LocalStore(root, alive=lambda pid: pid in LIVE_PIDS)


def test_a_saved_record_reads_back_with_its_status(store: LocalStore, root: Path) -> None:
    store.save(_record("tiny"))
    assert store.get("tiny") == _record("tiny")
    assert store.get("tiny").status is DeploymentStatus.IN_SERVICE
    stored = json.loads((root / "tiny.json").read_text())
    assert "status" not in stored and stored["pid"] == 101
    assert sorted(path.name for path in root.iterdir()) == ["tiny.json"]  # no temporary file left


def test_a_record_whose_server_exited_is_stopped(store: LocalStore) -> None:
    store.save(_record("gone", pid=999))
    assert store.get("gone").status is DeploymentStatus.STOPPED
    assert str(DeploymentStatus.STOPPED) == "Stopped" and f"{DeploymentStatus.IN_SERVICE}" == "InService"


def test_list_is_sorted_and_returns_stopped_records_once(store: LocalStore, root: Path) -> None:
    for record in (_record("b"), _record("a", pid=102), _record("c", pid=999)):
        store.save(record)
    assert [(d.name, d.status) for d in store.list()] == [
        ("a", DeploymentStatus.IN_SERVICE), ("b", DeploymentStatus.IN_SERVICE), ("c", DeploymentStatus.STOPPED)]
    assert not (root / "c.json").exists()
    assert [d.name for d in store.list()] == ["a", "b"]


def test_missing_folder_unknown_and_unreadable_records(store: LocalStore, root: Path,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    assert store.list() == [] and store.get("nothing") is None
    root.mkdir()
    (root / "broken.json").write_text("{not json")
    (root / "odd.json").write_text(json.dumps({"name": "odd", "colour": "blue"}))
    with caplog.at_level(logging.WARNING):
        assert store.get("broken") is None and store.list() == []
    assert "broken.json" in caplog.text and "odd.json" in caplog.text


def test_invalid_names_are_refused_before_any_file_is_read(store: LocalStore) -> None:
    with pytest.raises(ConfigError) as caught:
        store.get("../etc/passwd")
    assert caught.value.field == "name"


def test_delete_forgets_the_record_and_keeps_the_log(store: LocalStore) -> None:
    store.save(_record("tiny"))
    store.log_path("tiny").write_text("served\n")
    store.delete("tiny")
    store.delete("tiny")  # already gone: nothing to do
    assert store.get("tiny") is None and store.log_path("tiny").read_text() == "served\n"


def test_to_dict_has_every_field_and_the_status_as_text() -> None:
    data = _record("tiny").to_dict()
    assert data["status"] == "InService" and json.loads(json.dumps(data)) == data
    assert _record("tiny").endpoint_name == "tiny"


def test_default_store_and_caches_follow_inf2_deploy_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INF2_DEPLOY_HOME", str(tmp_path / "home"))
    assert default_store().root == state_dir() == tmp_path / "home" / "local"
    assert cache_root() == tmp_path / "home" / "cache"
    assert artifact_cache_dir() == tmp_path / "home" / "cache" / "artifacts"


def test_without_override_the_xdg_folders_are_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("INF2_DEPLOY_HOME", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert default_store().root == tmp_path / "config" / "inf2-deploy" / "local"
    assert cache_root() == tmp_path / "cache" / "inf2-deploy"
