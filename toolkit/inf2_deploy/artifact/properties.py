"""Write DJL ``serving.properties`` for a plan.

DJL reads ``key=value`` lines and silently ignores keys written with spaces
around ``=``, so rendering is strict: fixed key order, no spaces, and values
that could break a line are refused. The keys, their types and defaults are the
contract's (:data:`inf2_serving.contract.PROPERTIES`), which the handler in the
container parses with; reading the file back the way DJL does is
:mod:`~inf2_deploy.artifact.djl_properties`.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from inf2_serving.contract import (
    DEFAULT_MAX_BATCH_DELAY_MS,
    DJL_MAX_ROLLING_BATCH_SIZE,
    ENGINE,
    ENTRY_POINT,
    PROPERTIES,
    PROPERTY_BY_FIELD,
    Property,
    format_value,
    rolling_batch_enabled,
)

from ..errors import ConfigError
from .djl_properties import parse_properties

if TYPE_CHECKING:
    from ..spec.planner import Plan

__all__ = ["render_properties", "parse_properties", "serving_properties", "ENTRY_POINT", "PROPERTY_REFERENCE"]

_KEY = re.compile(r"^[A-Za-z0-9_.\-]+$")


def _shown_default(prop: Property) -> str:
    if prop.shown_default is not None:
        return prop.shown_default
    return "unset" if prop.default is None else format_value(prop.default)


PROPERTY_REFERENCE: tuple[tuple[str, str, str, str], ...] = tuple(
    (prop.key, _shown_default(prop), prop.packaged, prop.description) for prop in PROPERTIES
)
"""Every serving.properties key we write or the handler reads: (key, default, what the packager
writes, meaning). docs/configuration.md is generated from this table."""


def render_properties(properties: Mapping[str, object]) -> str:
    """Render ``properties`` as ``key=value`` lines, in the given order.

    Raises:
        ConfigError: a key is not a plain identifier or a value spans lines.
    """
    lines = []
    for key, value in properties.items():
        text = format_value(value)
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

    With the rolling batch (the spec's ``rolling_batch`` not ``disable``), DJL's loop keeps
    up to ``max(batch_size, 32)`` requests in flight (``option.max_rolling_batch_size``) and no
    dynamic-batching keys are written: DJL's LMI configuration turns the rolling batch
    off when the model-level ``batch_size`` is above 1 (``LmiConfigRecommender``).

    Args:
        model_id: where the container fetches weights from, when they are not
            in the artifact folder itself (e.g. an s3:// prefix).
    """
    spec = plan.spec
    values: dict[str, Any] = {
        "engine": ENGINE,
        "entry_point": ENTRY_POINT,
        "rolling_batch": spec.rolling_batch,
        "tensor_parallel_degree": plan.tensor_parallel_degree,
        "n_positions": plan.n_positions,
        "batch_size": spec.batch_size,
        "dtype": spec.dtype,
        "model_loading_timeout": spec.model_loading_timeout,
    }
    if model_id is not None:
        values["model_id"] = model_id
    if spec.neuron_cc_flags:
        values["neuron_cc_flags"] = spec.neuron_cc_flags
    if rolling_batch_enabled(spec.rolling_batch):
        # Requests beyond the slots wait in our scheduler's queue, where the admission policy
        # sees them; DJL's own queue fails a request that waits longer than the predict timeout.
        values["max_rolling_batch_size"] = max(spec.batch_size, DJL_MAX_ROLLING_BATCH_SIZE)
    elif spec.batch_size > 1:
        values["dynamic_batch_size"] = spec.batch_size
        values["max_batch_delay_ms"] = DEFAULT_MAX_BATCH_DELAY_MS
    return {PROPERTY_BY_FIELD[field].key: format_value(value) for field, value in values.items()}
