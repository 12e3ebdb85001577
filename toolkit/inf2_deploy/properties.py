"""Write DJL ``serving.properties`` for a plan.

DJL reads ``key=value`` lines and silently ignores keys written with spaces
around ``=``, so rendering is strict: fixed key order, no spaces, and values
that could break a line are refused. Parsing lives in ``inf2_serving`` because
the local server reads the file the same way the container does.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING

from inf2_serving.properties import parse_properties

from .errors import ConfigError

if TYPE_CHECKING:
    from .planner import Plan

__all__ = ["render_properties", "parse_properties", "serving_properties", "ENTRY_POINT"]

ENTRY_POINT = "model.py"
# How long DJL waits to fill a dynamic batch, as in DJL's own examples.
DEFAULT_MAX_BATCH_DELAY_MS = 100
_KEY = re.compile(r"^[A-Za-z0-9_.\-]+$")


def render_properties(properties: Mapping[str, object]) -> str:
    """Render ``properties`` as ``key=value`` lines, in the given order.

    Raises:
        ConfigError: a key is not a plain identifier or a value spans lines.
    """
    lines = []
    for key, value in properties.items():
        text = str(value).lower() if isinstance(value, bool) else str(value)
        if not _KEY.match(key):
            raise ConfigError(f"serving.properties key {key!r} must be letters, digits, '.', '_' or '-'",
                              field=key, value=key)
        if "\n" in text or "\r" in text or text != text.strip():
            raise ConfigError(f"serving.properties value for {key} must be one trimmed line",
                              field=key, value=text)
        lines.append(f"{key}={text}")
    return "\n".join(lines) + "\n"


def serving_properties(plan: Plan, *, model_id: str | None = None) -> dict[str, str]:
    """The serving.properties entries for ``plan``.

    Args:
        model_id: where the container fetches weights from, when they are not
            in the artifact folder itself (e.g. an s3:// prefix).
    """
    spec = plan.spec
    properties: dict[str, str] = {
        "engine": "Python",
        "option.entryPoint": ENTRY_POINT,
        # Our handler batches through DJL's dynamic batcher, not LMI's rolling batch.
        "option.rolling_batch": "disable",
        "option.tensor_parallel_degree": str(plan.tensor_parallel_degree),
        "option.n_positions": str(plan.n_positions),
        "option.batch_size": str(spec.batch_size),
        "option.dtype": spec.dtype,
        "option.model_loading_timeout": str(spec.model_loading_timeout),
    }
    if model_id is not None:
        properties["option.model_id"] = model_id
    if spec.neuron_cc_flags:
        properties["option.neuron_cc_flags"] = spec.neuron_cc_flags
    if spec.batch_size > 1:
        properties["batch_size"] = str(spec.batch_size)
        properties["max_batch_delay"] = str(DEFAULT_MAX_BATCH_DELAY_MS)
    return properties
