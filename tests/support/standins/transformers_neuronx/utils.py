"""Stand-in for ``transformers_neuronx/utils.py``: the helpers GPT-J's path calls."""
from __future__ import annotations

from typing import Any


def maybe_override_attributes(self: Any, kwargs: dict[str, Any]) -> None:
    """Mirrors transformers_neuronx/utils.py:50-55 at c8d6bdc.

    Every key must already be an attribute (else ``KeyError``); ``None`` values leave it as is.
    """
    for key, value in kwargs.items():
        if not hasattr(self, key):
            raise KeyError(f'Found invalid key "{key}".')
        if value is not None:
            setattr(self, key, value)


def power_of_two_bucket_sizes(min_bucket_size: int, max_bucket_size: int) -> list[int]:
    """Mirrors transformers_neuronx/utils.py:58-65 at c8d6bdc: doubling from the minimum, then the maximum."""
    sizes = []
    size = min_bucket_size
    while size < max_bucket_size:
        sizes.append(size)
        size *= 2
    return sizes + [max_bucket_size]


def get_pad_size(vocab_size: int, divisor: int) -> int:
    """Mirrors transformers_neuronx/utils.py:140-141 at c8d6bdc: rows to add for a multiple of ``divisor``."""
    return -vocab_size % divisor


def parse_dtype_replica_groups(neuron_config: Any, tp_degree: int) -> tuple[Any, Any]:
    """Mirrors transformers_neuronx/utils.py:27-35 at c8d6bdc."""
    if not neuron_config:
        return None, None
    return neuron_config.all_reduce_dtype, neuron_config.get_replica_groups(tp_degree)
