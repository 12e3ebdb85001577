"""The serving configuration, read from the properties DJL hands to the handler.

Property names are those of ``serving.properties`` with DJL's ``option.`` prefix
already stripped (see :func:`inf2_serving.properties.handler_properties`):

========================  =====================================================
``model_dir``             Added by DJL: the artifact folder.
``model_id``              Optional local folder with the weights (else model_dir).
``backend``               ``neuron``, ``cpu`` or ``auto`` (default ``auto``).
``tensor_parallel_degree``  NeuronCores to shard over (default 1).
``n_positions``           Compiled context length (default: the model's).
``batch_size``            Compiled batch size (default 1).
``dtype``                 ``fp32``, ``fp16`` or ``bf16`` (default ``fp32``).
``compiled_cache_url``    Neuron compile cache, a local path or ``s3://`` URL.
``neuron_cc_flags``       Extra ``neuronx-cc`` flags, merged into ``NEURON_CC_FLAGS``.
``correct_decode_mask``   ``true`` (default) builds GPT-J's Neuron graph with a causal
                          decode mask (see :mod:`inf2_serving.neuron_mask`).
``startup_self_check``    ``true`` (default) refuses to serve a model that fails the probes
                          of :mod:`inf2_serving.self_check`; ``false`` serves it anyway.
========================  =====================================================
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["AMP_BY_DTYPE", "BACKENDS", "ConfigError", "ServingConfig"]

AMP_BY_DTYPE = {"fp32": "f32", "fp16": "f16", "bf16": "bf16"}
BACKENDS = ("neuron", "cpu", "auto")


class ConfigError(ValueError):
    """A serving property with a value the handler cannot use."""

    def __init__(self, field: str, value: object, hint: str) -> None:
        super().__init__(f"property {field}={value!r}: {hint}")
        self.field = field
        self.value = value
        self.hint = hint


def _int_property(props: Mapping[str, str], name: str, default: int | None) -> int | None:
    raw = props.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(name, raw, "expected a whole number") from None
    if value < 1:
        raise ConfigError(name, raw, "must be at least 1")
    return value


def _bool_property(props: Mapping[str, str], name: str, default: bool) -> bool:
    raw = props.get(name)
    if raw is None or raw == "":
        return default
    value = raw.strip().lower()
    if value not in ("true", "false"):
        raise ConfigError(name, raw, "expected true or false")
    return value == "true"


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


@dataclass(frozen=True)
class ServingConfig:
    """Validated serving properties. Build it with :meth:`from_properties`."""

    model_dir: str
    weights_dir: str
    backend: str = "auto"
    tensor_parallel_degree: int = 1
    n_positions: int | None = None
    batch_size: int = 1
    dtype: str = "fp32"
    compiled_cache_url: str | None = None
    neuron_cc_flags: str | None = None
    correct_decode_mask: bool = True
    startup_self_check: bool = True

    @property
    def amp(self) -> str:
        """The transformers-neuronx ``amp`` value for :attr:`dtype`."""
        return AMP_BY_DTYPE[self.dtype]

    @classmethod
    def from_properties(cls, props: Mapping[str, str]) -> ServingConfig:
        """Validate handler properties.

        Raises:
            ConfigError: a property is missing or has an unusable value.
        """
        model_dir = props.get("model_dir")
        if not model_dir:
            raise ConfigError("model_dir", model_dir, "DJL passes the model folder; set it when testing")
        backend = props.get("backend", "auto").lower()
        if backend not in BACKENDS:
            raise ConfigError("backend", backend, "use one of " + ", ".join(BACKENDS))
        dtype = props.get("dtype", "fp32").lower()
        if dtype not in AMP_BY_DTYPE:
            raise ConfigError("dtype", dtype, "use one of " + ", ".join(AMP_BY_DTYPE))
        return cls(
            model_dir=model_dir,
            weights_dir=_resolve_weights_dir(model_dir, props.get("model_id")),
            backend=backend,
            tensor_parallel_degree=_int_property(props, "tensor_parallel_degree", 1),
            n_positions=_int_property(props, "n_positions", None),
            batch_size=_int_property(props, "batch_size", 1),
            dtype=dtype,
            compiled_cache_url=props.get("compiled_cache_url") or None,
            neuron_cc_flags=props.get("neuron_cc_flags") or None,
            correct_decode_mask=_bool_property(props, "correct_decode_mask", True),
            startup_self_check=_bool_property(props, "startup_self_check", True),
        )
