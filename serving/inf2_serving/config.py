"""The serving configuration, read from the properties DJL hands to the handler.

Property names are those of ``serving.properties`` with DJL's ``option.`` prefix
already stripped (DJL does this in the container). Which
keys the handler reads, their types and defaults are the contract's
(:data:`inf2_serving.contract.HANDLER_PROPERTIES`); ``model_dir`` is added by DJL.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .contract import DTYPES, HANDLER_PROPERTIES, rolling_batch_enabled

__all__ = ["ConfigError", "ServingConfig"]

_DEFAULT = {prop.field: prop.default for prop in HANDLER_PROPERTIES}


class ConfigError(ValueError):
    """A serving property with a value the handler cannot use."""

    def __init__(self, field: str, value: object, hint: str) -> None:
        super().__init__(f"property {field}={value!r}: {hint}")
        self.field = field
        self.value = value
        self.hint = hint


def _resolve_weights_dir(model_dir: str, model_id: str | None) -> str:
    # DJL downloads an s3:// model_id itself and then passes the local folder; anything
    # else that is not a local folder would need a hub download, which we never do.
    # Absolute, because the Neuron backend changes the working directory before loading.
    if model_id:
        if os.path.isdir(model_id):
            return os.path.abspath(model_id)
        if not os.path.isfile(os.path.join(model_dir, "config.json")):
            raise ConfigError(
                "model_id", model_id, "not a local folder; put the weights in the model folder instead"
            )
    return os.path.abspath(model_dir)


def _read(props: Mapping[str, str]) -> dict[str, Any]:
    """Every handler property's value, by field name."""
    values = {}
    for prop in HANDLER_PROPERTIES:
        raw = props.get(prop.handler_key)
        try:
            values[prop.field] = prop.parse(raw)
        except ValueError as exc:
            raise ConfigError(prop.handler_key, raw, str(exc)) from None
    return values


@dataclass(frozen=True)
class ServingConfig:
    """Validated serving properties. Build it with :meth:`from_properties`."""

    model_dir: str
    weights_dir: str
    backend: str = _DEFAULT["backend"]
    tensor_parallel_degree: int = _DEFAULT["tensor_parallel_degree"]
    n_positions: int | None = _DEFAULT["n_positions"]
    batch_size: int = _DEFAULT["batch_size"]
    dtype: str = _DEFAULT["dtype"]
    compile_cache_url: str | None = _DEFAULT["compile_cache_url"]
    neuron_cc_flags: str | None = _DEFAULT["neuron_cc_flags"]
    correct_decode_mask: bool = _DEFAULT["correct_decode_mask"]
    startup_self_check: bool = _DEFAULT["startup_self_check"]
    rolling_batch: str | None = _DEFAULT["rolling_batch"]
    replay_interval_ms: int = _DEFAULT["replay_interval_ms"]

    @property
    def rolling(self) -> bool:
        """Whether requests go through the slot scheduler (DJL's rolling-batch loop is on)."""
        return rolling_batch_enabled(self.rolling_batch)

    @property
    def amp(self) -> str:
        """The transformers-neuronx ``amp`` value for :attr:`dtype`."""
        return DTYPES[self.dtype].neuron_amp

    @classmethod
    def from_properties(cls, props: Mapping[str, str]) -> ServingConfig:
        """Validate handler properties.

        Raises:
            ConfigError: a property is missing or has an unusable value.
        """
        model_dir = props.get("model_dir")
        if not model_dir:
            raise ConfigError("model_dir", model_dir, "DJL passes the model folder; set it when testing")
        values = _read(props)
        weights_dir = _resolve_weights_dir(model_dir, values.pop("model_id"))
        return cls(model_dir=model_dir, weights_dir=weights_dir, **values)
