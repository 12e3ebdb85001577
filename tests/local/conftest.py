"""Fixtures for the local-deployment tests: a store in a temporary folder and a clock that never sleeps."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest


class FakeClock:
    """Monotonic and wall time that advance only when ``sleep`` is called."""

    def __init__(self) -> None:
        self.start = datetime(2025, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
        self.elapsed = 0.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.elapsed

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.elapsed += seconds

    def now(self) -> datetime:
        return self.start + timedelta(seconds=self.elapsed)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A store folder; INF2_DEPLOY_HOME points elsewhere, so nothing reads the user's records."""
    monkeypatch.setenv("INF2_DEPLOY_HOME", str(tmp_path / "home"))
    return tmp_path / "records"
