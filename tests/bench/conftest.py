"""Fixtures for the benchmark tests: the tiny GPT-J's tokenizer, a fake clock and fake streaming targets."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from bench_fakes import FakeClock


@pytest.fixture(scope="session")
def tiny_gptj(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from inf2_deploy.artifact.tiny import build_tiny_gptj

    return build_tiny_gptj(tmp_path_factory.mktemp("models") / "tiny-gptj")


@pytest.fixture(scope="session")
def tokenizer(tiny_gptj: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_gptj))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()
