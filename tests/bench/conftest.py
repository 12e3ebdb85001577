"""Fixtures for the benchmark tests: the tiny GPT-J's tokenizer. The checkpoint and the fake clock are
tests/conftest.py's; fake streaming targets are in bench_fakes."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="session")
def tokenizer(tiny_gptj: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_gptj))
