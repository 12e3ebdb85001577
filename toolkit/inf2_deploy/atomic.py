"""Files and folders written whole or not at all: a temporary sibling, then ``os.replace`` over the target.

A reader (or a crash) never sees a half-written manifest, state record, result,
plot, checkpoint or artifact folder.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_dir", "atomic_path", "atomic_write_text", "replace_dir"]


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str], *, suffix: str = ".incomplete") -> Iterator[Path]:
    """Yield a temporary path beside ``target``; move it over ``target`` when the block succeeds.

    The temporary file is removed when the block raises (including KeyboardInterrupt).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix, dir=target.parent)
    os.close(fd)
    temp = Path(name)
    try:
        yield temp
        os.chmod(temp, 0o644)
        os.replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path) as temp:
        temp.write_text(text, encoding="utf-8")


def replace_dir(staging: str | os.PathLike[str], target: str | os.PathLike[str]) -> None:
    """Move the finished folder ``staging`` to ``target``, replacing what is there.

    ``staging`` must be on the same filesystem as ``target`` (a sibling). A reader
    sees the old folder or the new one: the old folder is moved aside, the new one
    moved in, and only then is the old one deleted.
    """
    staging, target = Path(staging), Path(target)
    if not target.exists():
        os.replace(staging, target)
        return
    # os.replace cannot replace a non-empty folder: move the old one aside first.
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
    os.replace(target, old / target.name)
    os.replace(staging, target)
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield an empty private folder beside ``target``; :func:`replace_dir` it over ``target`` when
    the block succeeds.

    The folder is removed when the block raises (including KeyboardInterrupt). It is
    created with mode 0o700: the block sets the permissions the result should have.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.incomplete-", dir=target.parent))
    try:
        yield staging
        replace_dir(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
