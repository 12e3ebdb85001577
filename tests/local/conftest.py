"""Fixtures for the local-deployment tests: a store folder. The clock that never sleeps is tests/conftest.py's."""
from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A store folder; INF2_DEPLOY_HOME points elsewhere, so nothing reads the user's records."""
    monkeypatch.setenv("INF2_DEPLOY_HOME", str(tmp_path / "home"))
    return tmp_path / "records"
