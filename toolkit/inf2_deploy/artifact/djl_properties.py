"""Read DJL ``serving.properties`` files the way DJL serving does.

In the container DJL itself reads the file and hands the handler its properties;
on the laptop this module does the same for the local server, the packager's
check and ``verify``, so it does not ship in the artifact.

DJL reads ``key=value`` lines, skips blank lines and ``#`` comments, and hands
every ``option.*`` key to the Python engine with the prefix stripped. A key
written with spaces around ``=`` is not recognised by DJL, so we refuse it
instead of silently ignoring it. Which keys mean what, and their defaults, is
the contract's (:data:`inf2_serving.contract.PROPERTIES`).
"""
from __future__ import annotations

from pathlib import Path

from inf2_serving.contract import OPTION_PREFIX

__all__ = ["PropertiesError", "parse_properties", "read_properties", "handler_properties"]


class PropertiesError(ValueError):
    """A ``serving.properties`` line that DJL would not read as intended."""

    def __init__(self, line_number: int, line: str, reason: str) -> None:
        super().__init__(f"serving.properties line {line_number} ({line!r}): {reason}")
        self.line_number = line_number
        self.line = line
        self.reason = reason


def parse_properties(text: str) -> dict[str, str]:
    """Parse ``serving.properties`` text into an ordered ``{key: value}`` dict."""
    properties: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise PropertiesError(number, raw, "expected key=value")
        if key != key.rstrip() or value != value.lstrip():
            raise PropertiesError(number, raw, "no spaces around '=' (DJL ignores spaced keys)")
        if not key:
            raise PropertiesError(number, raw, "empty key")
        properties[key] = value
    return properties


def read_properties(path: str | Path) -> dict[str, str]:
    """Read and parse a ``serving.properties`` file."""
    return parse_properties(Path(path).read_text(encoding="utf-8"))


def handler_properties(properties: dict[str, str], model_dir: str | Path) -> dict[str, str]:
    """The properties a DJL Python handler sees: model-level keys, ``option.`` keys
    with the prefix stripped (options win), and ``model_dir``."""
    seen = {k: v for k, v in properties.items() if not k.startswith(OPTION_PREFIX)}
    seen.update({k[len(OPTION_PREFIX):]: v for k, v in properties.items() if k.startswith(OPTION_PREFIX)})
    seen["model_dir"] = str(model_dir)
    return seen
