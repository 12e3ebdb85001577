"""Stand-in for ``transformers_neuronx/gptj/hlo.py``: the graph's parameters and its attention mask.

The real ``gen_scribable_gptj`` scribes GPT-J's whole decoder graph. This one scribes
the same parameters, in the same order and with the same shapes and element types
(``GPTJForSampling`` binds its tensors against them, as the runtime binds them to the
compiled graph's inputs), and the attention mask; the rest of the graph is computed in
torch by :mod:`transformers_neuronx.gptj.model`.
"""
from __future__ import annotations

from typing import Any

from transformers_neuronx import hlo


def gen_scribable_gptj(config: Any, n_active_tokens: int, n_positions: int) -> Any:
    """Mirrors transformers_neuronx/gptj/hlo.py:241-299 at c8d6bdc; the scribed function returns the mask.

    Parameters: 0 hidden ``amp[n_embd, n_active, batch]``, 1 pos_embd
    ``amp[n_active, head_dim, head_dim]``, 2 cache_offset ``s32[n_active]``, then each
    layer's key and value cache ``amp[n_positions, batch, n_head/tp, head_dim]``, then
    each layer's ten weights, then ln_f and lm_head (vocab padded to a multiple of tp).
    The mask is ``hlo.decoder_attention_mask_legacy(cache_offset, scribe.f32,
    n_positions)``, looked up on the module when the graph is scribed (gptj/hlo.py:296).
    """
    embed_dim = config.n_embd
    batch_size = config.batch_size
    tp_degree = config.tp_degree
    head_dim = embed_dim // config.n_head
    n_heads_tp = config.n_head // tp_degree
    attn_dim_tp = embed_dim // tp_degree
    intermediate_dim_tp = config.intermediate_dim // tp_degree
    vocab_size_tp = -(-config.vocab_size // tp_degree)

    def scribable(scribe: Any) -> Any:
        declare = hlo.ParameterBuilder(getattr(scribe, config.amp))
        f32 = scribe.f32
        declare([embed_dim, n_active_tokens, batch_size])
        declare([n_active_tokens, head_dim, head_dim])
        cache_offset = declare([n_active_tokens], dtype=scribe.s32)
        for _ in range(config.n_layer):
            declare([n_positions, batch_size, n_heads_tp, head_dim])  # key cache
            declare([n_positions, batch_size, n_heads_tp, head_dim])  # value cache
        for _ in range(config.n_layer):
            declare([embed_dim], dtype=f32)  # ln_1 weight
            declare([embed_dim], dtype=f32)  # ln_1 bias
            for _ in range(3):
                declare([embed_dim, attn_dim_tp])  # q, k, v
            declare([attn_dim_tp, embed_dim])  # out_proj
            declare([embed_dim, intermediate_dim_tp])  # fc_in weight
            declare([intermediate_dim_tp])  # fc_in bias
            declare([intermediate_dim_tp, embed_dim])  # fc_out weight
            declare([embed_dim])  # fc_out bias
        declare([embed_dim], dtype=f32)  # ln_f weight
        declare([embed_dim], dtype=f32)  # ln_f bias
        declare([embed_dim, vocab_size_tp])  # lm_head weight
        declare([vocab_size_tp])  # lm_head bias
        return hlo.decoder_attention_mask_legacy(cache_offset, f32, n_positions)

    return scribable
