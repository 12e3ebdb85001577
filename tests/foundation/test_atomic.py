"""Atomic writes: the target holds the old or the new content, never a part, and no temp file is left."""
from __future__ import annotations

import pytest
from inf2_deploy.atomic import atomic_dir, atomic_path, atomic_write_text, replace_dir


def test_write_replaces_whole(tmp_path):
    target = tmp_path / "sub" / "state.json"
    atomic_write_text(target, "old\n")
    atomic_write_text(target, "new\n")
    assert target.read_text() == "new\n"
    assert [p.name for p in target.parent.iterdir()] == ["state.json"]


def test_failure_keeps_the_old_file_and_cleans_up(tmp_path):
    target = tmp_path / "result.json"
    atomic_write_text(target, "old\n")
    with pytest.raises(KeyboardInterrupt), atomic_path(target) as temp:
        temp.write_text("half")
        raise KeyboardInterrupt
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]


@pytest.mark.parametrize("existing", [False, True])
def test_replace_dir_swaps_a_whole_folder(tmp_path, existing):
    target = tmp_path / "artifact"
    if existing:
        target.mkdir()
        (target / "old.txt").write_text("old")
    staging = tmp_path / ".artifact.incomplete"
    staging.mkdir()
    (staging / "new.txt").write_text("new")
    replace_dir(staging, target)
    assert [p.name for p in target.iterdir()] == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["artifact"]  # neither staging nor the old folder is left


def test_a_failed_folder_build_keeps_the_old_folder_and_cleans_up(tmp_path):
    target = tmp_path / "build"
    with atomic_dir(target) as staging:
        (staging / "v1.txt").write_text("1")
    with pytest.raises(KeyboardInterrupt), atomic_dir(target) as staging:
        (staging / "half.txt").write_text("half")
        raise KeyboardInterrupt
    assert [p.name for p in target.iterdir()] == ["v1.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["build"]
