"""Fixtures for packaging tests. The tiny-gptj checkpoint (``tiny_gptj``) and fake AWS are tests/conftest.py's."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from ckpt_helpers import small_tensors, write_checkpoint


@pytest.fixture(autouse=True)
def offline(fake_aws_env: dict[str, str], monkeypatch: pytest.MonkeyPatch,
            tmp_path_factory: pytest.TempPathFactory) -> None:
    """Fake AWS, no Hugging Face Hub, and a user cache of the session's own."""
    # package() remembers image lookups under the user cache; keep tests out of the real one.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.getbasetemp() / "xdg-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache folder for the tiny-gptj alias, shared by the session."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def make_checkpoint(tmp_path: Path, tiny_gptj: Path) -> Callable[..., Path]:
    """``make_checkpoint(fmt, shards=1, **kw)`` -> a small GPT-J checkpoint folder with a tokenizer."""
    counter = iter(range(1000))

    def make(fmt: str, shards: int = 1, *, tensors: dict | None = None, **kwargs) -> Path:
        folder = tmp_path / f"ckpt-{fmt}-{shards}-{next(counter)}"
        return write_checkpoint(folder, small_tensors() if tensors is None else tensors, fmt=fmt,
                                shards=shards, tokenizer_from=tiny_gptj, **kwargs)

    return make
