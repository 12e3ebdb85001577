"""Checks for user-given names and paths, made before anything touches the filesystem or the network.

A path that the OS would reject (too long, a NUL byte, bytes that are not UTF-8)
otherwise surfaces as a raw ``OSError`` or ``ValueError`` from deep inside a library.
Here it becomes one :class:`~inf2_deploy.errors.ConfigError` that names the field.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from inf2_serving.contract import ENDPOINT_NAME, ENDPOINT_NAME_RULE

from ..errors import ConfigError

__all__ = ["BUCKET_NAME", "MAX_NAME_BYTES", "MAX_PATH_BYTES", "REGION_NAME", "check_endpoint_name", "check_path",
           "path_problem"]

# Linux's PATH_MAX and NAME_MAX; macOS is stricter on the first (1024), never looser.
MAX_PATH_BYTES = 4096
MAX_NAME_BYTES = 255
REGION_NAME = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d$")
"""An AWS region code such as ``us-east-1``."""
BUCKET_NAME = re.compile(r"^(?!xn--)(?!.*\.\.)[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
"""S3's rule for general-purpose bucket names."""


def check_endpoint_name(name: object, field: str) -> str:
    """``name`` if it follows SageMaker's endpoint name rule, else a ConfigError naming ``field``."""
    if not isinstance(name, str) or not ENDPOINT_NAME.match(name):
        raise ConfigError(ENDPOINT_NAME_RULE, field=field, value=name)
    return name


def path_problem(text: str) -> str | None:
    """Why ``text`` cannot be a path on this machine, or None when it can."""
    if "\x00" in text:
        return "contains a NUL character"
    try:
        encoded = text.encode("utf-8")
    except UnicodeEncodeError:
        # Arguments that were not UTF-8 arrive as lone surrogates (PEP 383).
        return "is not valid UTF-8"
    if len(encoded) > MAX_PATH_BYTES:
        return f"is {len(encoded)} bytes long; paths may have at most {MAX_PATH_BYTES}"
    longest = max((len(part.encode("utf-8")) for part in text.split(os.sep)), default=0)
    if longest > MAX_NAME_BYTES:
        return f"has a {longest}-byte path component; each may have at most {MAX_NAME_BYTES}"
    return None


def check_path(value: str | os.PathLike[str], field: str) -> Path:
    """``value`` as a ``Path``, after :func:`path_problem` found nothing wrong.

    Raises:
        ConfigError: ``value`` cannot be a path; the error names ``field``.
    """
    text = os.fspath(value)
    problem = path_problem(text)
    if problem is not None:
        shown = text.encode("utf-8", "backslashreplace").decode("ascii", "backslashreplace")
        raise ConfigError(problem, field=field, value=shown[:80] + ("..." if len(shown) > 80 else ""))
    return Path(text).expanduser()
