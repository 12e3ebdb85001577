"""Stand-in for ``transformers_neuronx/hlo.py``: the two graph helpers GPT-J's builder calls.

Both are written in the scribe DSL (``torch_neuronx.pyhlo.scribe``), so the stand-in
GPT-J records the mask graph and evaluates it with the stand-in scribe. The rest of
GPT-J's graph (layer norm, attention, MLP, softmax) is computed in torch by
``transformers_neuronx.gptj.model``, which cites the functions of this file it follows.

GPT-J's graph builder looks ``decoder_attention_mask_legacy`` up on this module each
time it builds a graph (gptj/hlo.py:296), so assigning a replacement to
``transformers_neuronx.hlo.decoder_attention_mask_legacy`` before ``to_neuron()``
changes the compiled mask, here as in the real library.
"""
from __future__ import annotations

from typing import Any


class ParameterBuilder:
    """Mirrors transformers_neuronx/hlo.py:887-898 at c8d6bdc: parameters numbered in declaration order."""

    def __init__(self, dtype: Any) -> None:
        self.dtype = dtype
        self.parameter_number = 0

    def __call__(self, shape: Any, dtype: Any = None) -> Any:
        element = self.dtype if dtype is None else dtype
        param = element[tuple(shape)].Parameter(parameter_number=self.parameter_number)
        self.parameter_number += 1
        return param


def decoder_attention_mask_legacy(position_ids: Any, dtype: Any, n_positions: int) -> Any:
    """Mirrors transformers_neuronx/hlo.py:901-913 at c8d6bdc, with the same ops and result.

    ``mask[i, p] = (p <= position_ids[i]) * (i >= p)``: ``i`` is the index of the
    active token, not its position, so with GPT-J's single active token only ``p = 0``
    is ever 1 and every token attends to cache position 0 alone (the library's defect).
    """
    (n_active,) = position_ids.sizes
    sizes = n_active, n_positions
    index_type = position_ids.dtype
    pred = position_ids.scribe.pred
    active_index = index_type[sizes].Iota(dimensions=[0])
    cache_position = index_type[sizes].Iota(dimensions=[1])
    lower_triangle = pred[sizes].Compare(active_index, cache_position, comparison_direction="GE")
    lower_triangle = dtype[sizes].Convert(lower_triangle)
    offsets = index_type[sizes].Broadcast(position_ids, dimensions=[0])
    written = pred[sizes].Compare(cache_position, offsets, comparison_direction="LE")
    written = dtype[sizes].Convert(written)
    return dtype[sizes].Multiply(written, lower_triangle)
