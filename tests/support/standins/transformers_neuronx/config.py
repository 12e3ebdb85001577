"""Stand-in for ``transformers_neuronx/config.py``: ``NeuronConfig`` as GPT-J's path reads it."""
from __future__ import annotations

import os
import warnings
from typing import Any

from transformers_neuronx.constants import Layout

valid_dtypes = ["float32", "float16", "bfloat16"]
"""Mirrors transformers_neuronx/config.py:91-95 at c8d6bdc."""


class NeuronConfig:
    """Mirrors transformers_neuronx/config.py:98-238 at c8d6bdc (keyword-only; unknown keywords assert).

    GPT-J reads ``quant`` (set: ``NotImplementedError``), ``cast_logits_dtype`` (the
    logits' dtype), ``is_pp()`` and ``use_2d_cache_ids`` (the generation adapter). The
    other fields are kept so that a config the real class accepts is accepted here.
    """

    def __init__(self, *, sparse_attn: Any = None, quant: Any = None, continuous_batching: Any = None,
                 attention_layout: Any = Layout.HSB, collectives_layout: Any = Layout.HSB,
                 cache_layout: Any = Layout.SBH, padding_side: str = "left", group_query_attention: Any = None,
                 on_device_embedding: bool = False, on_device_generation: Any = None,
                 all_reduce_dtype: str | None = None, cast_logits_dtype: str = "float32", fuse_qkv: bool = False,
                 qkv_tiling: bool = False, weight_tiling: bool = False, log_softmax_scores: bool = False,
                 shard_over_sequence: bool = False, output_all_logits: bool = False,
                 attn_output_transposed: bool = False, **kwargs: Any) -> None:
        self.all_reduce_dtype = all_reduce_dtype
        self.sparse_attn = sparse_attn
        self.quant = quant
        self.cast_logits_dtype = cast_logits_dtype
        assert cast_logits_dtype in valid_dtypes, (
            f"The `cast_logits_dtype={cast_logits_dtype}` argument must be one of {valid_dtypes}")
        self.fuse_qkv = fuse_qkv
        self.continuous_batching = continuous_batching
        self.padding_side = padding_side
        assert padding_side in ("left", "right"), (
            f"The `padding_side={padding_side}` argument must be either 'left' or 'right'")
        self.lhs_aligned = padding_side == "right"
        for deprecated in ("use_2d_cache_ids", "lhs_aligned"):  # config.py:179-190
            if deprecated in kwargs:
                warnings.warn(f"NeuronConfig `{deprecated}` argument is deprecated. "
                              "Please specify `padding_side = 'right'`.", stacklevel=2)
                self.lhs_aligned = kwargs.pop(deprecated, False)
        if self.continuous_batching:
            self.lhs_aligned = True
        self.attention_layout = attention_layout
        self.collectives_layout = collectives_layout
        self.cache_layout = cache_layout
        self.log_softmax_scores = log_softmax_scores
        self.group_query_attention = group_query_attention
        self.on_device_embedding = on_device_embedding
        self.on_device_generation = on_device_generation
        self.qkv_tiling = qkv_tiling
        if qkv_tiling:
            assert fuse_qkv, "QKV weight tiling is currently only supported when QKV fusion is enabled."
        self.weight_tiling = weight_tiling
        self.output_all_logits = output_all_logits
        assert not kwargs, f"Unexpected NeuronConfig keyword arguments: {kwargs}"
        self.rank_id = int(os.getenv("NEURON_RANK_ID", "0"))
        local_tp = os.getenv("NEURON_LOCAL_TP")
        self.local_tp = None if local_tp is None else int(local_tp)
        self.pp_stages = int(os.getenv("NEURON_PP_STAGES", 1))
        self.dist = None
        self.layer_partition: dict[int, list[int]] = {}
        self.shard_over_sequence = shard_over_sequence
        self.attn_output_transposed = attn_output_transposed

    @property
    def use_2d_cache_ids(self) -> bool:
        """Mirrors transformers_neuronx/config.py:239-241 at c8d6bdc: right padding means 2-D cache ids."""
        return self.lhs_aligned

    def is_pp(self) -> bool:
        """Mirrors transformers_neuronx/config.py:252-253 at c8d6bdc: pipeline stages from NEURON_PP_STAGES."""
        return self.pp_stages > 1

    def get_replica_groups(self, tp_degree: int) -> list[list[int]]:
        """Mirrors transformers_neuronx/config.py:289-293 at c8d6bdc."""
        if self.is_pp():
            return [list(range(self.rank_id * tp_degree, (self.rank_id + 1) * tp_degree))]
        return [list(range(tp_degree))]
