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

from ..errors import ConfigError

if TYPE_CHECKING:
    from ..spec.planner import Plan

__all__ = ["render_properties", "parse_properties", "serving_properties", "ENTRY_POINT", "PROPERTY_REFERENCE"]

ENTRY_POINT = "model.py"
# How long DJL waits to fill a dynamic batch, as in DJL's own examples.
DEFAULT_MAX_BATCH_DELAY_MS = 100
_KEY = re.compile(r"^[A-Za-z0-9_.\-]+$")

# Every serving.properties key we write or the handler reads: (key, default, meaning).
# docs/configuration.md is generated from this table.
PROPERTY_REFERENCE: tuple[tuple[str, str, str], ...] = (
    ("engine", "Python", "DJL engine that runs model.py."),
    ("option.entryPoint", ENTRY_POINT, "The handler file at the artifact root."),
    ("option.rolling_batch", "disable", "LMI's rolling batcher stays off; DJL's dynamic batching feeds our handler."),
    ("option.tensor_parallel_degree", "from the plan", "NeuronCores the model is sharded over (tp)."),
    ("option.n_positions", "from the plan", "Longest sequence the compiled graphs accept."),
    ("option.batch_size", "1", "Compiled batch size; partial batches are padded."),
    ("option.dtype", "fp16", "fp32, fp16 or bf16; transformers-neuronx amp f32/f16/bf16."),
    ("option.model_loading_timeout", "3600", "Seconds DJL waits for load plus Neuron compilation."),
    ("option.model_id", "unset", "Weights location when they are not in the artifact folder."),
    ("option.neuron_cc_flags", "unset", "Extra neuronx-cc flags, merged into NEURON_CC_FLAGS (ours win where both "
     "set an option)."),
    ("option.compiled_cache_url", "env NEURON_COMPILE_CACHE_URL, else /var/tmp/neuron-compile-cache",
     "Neuron persistent compile cache (local path or s3:// URL). A --cache_dir in NEURON_CC_FLAGS takes precedence; "
     "a read-only local cache is copied to /var/tmp/neuron-compile-cache."),
    ("option.correct_decode_mask", "true", "Build GPT-J's Neuron graph with a causal decode mask; transformers-neuronx "
     "0.11.351's own attends to position 0 only. false is for diagnosis."),
    ("option.startup_self_check", "true", "Refuse to serve (FAILED, so /ping fails) when next-token logits are not "
     "finite or ignore the prompt's context. false serves anyway, for diagnosis with `inf2-deploy verify`."),
    ("option.backend", "auto", "neuron, cpu or auto (neuron when /dev/neuron0 exists and transformers-neuronx "
     "imports)."),
    ("batch_size", "unset (1)", "DJL dynamic batching: requests gathered into one handler call; written when "
     "batch_size > 1."),
    ("max_batch_delay", str(DEFAULT_MAX_BATCH_DELAY_MS), "Milliseconds DJL waits to fill a dynamic batch."),
)


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
