"""Atomic writes: the target holds the old or the new content, never a part, and no temp file is left."""
from __future__ import annotations

import pytest
from inf2_deploy.atomic import atomic_path, atomic_write_text


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
