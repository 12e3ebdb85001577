"""Where local deployments keep their state and caches; the environment is read here and nowhere else.

Records and logs::

    $INF2_DEPLOY_HOME/local/                          (if INF2_DEPLOY_HOME is set), else
    ${XDG_CONFIG_HOME:-~/.config}/inf2-deploy/local/

Artifacts packaged for local deploys (and models built for them, such as
tiny-gptj) are cached under ``$INF2_DEPLOY_HOME/cache``, else the model cache
(``${XDG_CACHE_HOME:-~/.cache}/inf2-deploy``), so a second deploy of the same spec
reuses them.
"""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["HOME_ENV", "artifact_cache_dir", "cache_root", "state_dir"]

HOME_ENV = "INF2_DEPLOY_HOME"
"""Environment variable that moves all local state (records, logs, cache) under one folder."""


def _home_override() -> Path | None:
    value = os.environ.get(HOME_ENV)
    return Path(value).expanduser() if value else None


def state_dir() -> Path:
    """The folder holding one ``<name>.json`` record (and ``<name>.log``) per local deployment."""
    home = _home_override()
    if home is not None:
        return home / "local"
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "inf2-deploy" / "local"


def cache_root() -> Path:
    """The folder where local deploys keep built models and packaged artifacts."""
    from ..artifact.sources import default_cache_dir

    home = _home_override()
    return home / "cache" if home is not None else default_cache_dir()


def artifact_cache_dir() -> Path:
    """The folder where local deploys package artifacts when no ``output`` is given."""
    return cache_root() / "artifacts"
