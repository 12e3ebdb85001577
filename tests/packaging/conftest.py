"""Fixtures for packaging tests."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from ckpt_helpers import small_tensors, write_checkpoint
from inf2_deploy.artifact.tiny import build_tiny_gptj


@pytest.fixture(autouse=True)
def _offline_aws(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    # package() remembers image lookups under the user cache; keep tests out of the real one.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.getbasetemp() / "xdg-cache"))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny-gptj checkpoint, built once."""
    return build_tiny_gptj(tmp_path_factory.mktemp("tiny") / "tiny-gptj")


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache folder for the tiny-gptj alias, shared by the session."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def make_checkpoint(tmp_path: Path, tiny_dir: Path) -> Callable[..., Path]:
    """``make_checkpoint(fmt, shards=1, **kw)`` -> a small GPT-J checkpoint folder with a tokenizer."""
    counter = iter(range(1000))

    def make(fmt: str, shards: int = 1, *, tensors: dict | None = None, **kwargs) -> Path:
        folder = tmp_path / f"ckpt-{fmt}-{shards}-{next(counter)}"
        return write_checkpoint(folder, small_tensors() if tensors is None else tensors, fmt=fmt,
                                shards=shards, tokenizer_from=tiny_dir, **kwargs)

    return make
