"""Stand-in for ``transformers_neuronx/generation_utils.py``: transformers' ``generate()`` over a Neuron model."""
from __future__ import annotations

import warnings
from typing import Any

import torch
from transformers import GenerationMixin, PreTrainedModel
from transformers.utils import ModelOutput


class HuggingFaceGenerationModelAdapter(PreTrainedModel, GenerationMixin):
    """Mirrors transformers_neuronx/generation_utils.py:15-106 at c8d6bdc.

    The model must offer ``forward(input_ids [batch, seq], cache_ids [seq], start_ids)``
    returning ``[batch, vocab]``. Stand-in only: ``generate_calls`` counts ``generate()`` calls.

    ``GenerationMixin`` is an extra base: from transformers 4.50 ``PreTrainedModel`` no
    longer inherits it, so without it ``generate`` does not exist (the real class
    predates that; under transformers 4.43 the extra base changes nothing).
    """

    def __init__(self, config: Any, model: Any) -> None:
        """Mirrors generation_utils.py:17-25: sdpa falls back to eager, then ``cur_len`` starts at 0."""
        if getattr(config, "_attn_implementation", None) == "sdpa":
            warnings.warn("Warning: sdpa is unsupported as part of attention implementation. Falling back to "
                          "eager attention implementation.", stacklevel=2)
            config._attn_implementation = "eager"
        super().__init__(config)
        self.model = model
        self.config = config
        self.cur_len = torch.zeros(1, dtype=torch.long)
        self.generate_calls = 0

    def reset_generation(self) -> None:
        """Mirrors generation_utils.py:27-28."""
        self.cur_len = torch.zeros(1, dtype=torch.long)

    def forward(self, input_ids: torch.Tensor, cache_ids: Any, start_ids: Any = None,
                output_hidden_states: bool = False, output_attentions: bool = False, attention_mask: Any = None,
                return_dict: bool = False) -> Any:
        """Mirrors generation_utils.py:30-47: the model's ``[batch, vocab]`` logits as ``[batch, 1, vocab]``."""
        if output_hidden_states or output_attentions or attention_mask is not None:
            warnings.warn("Warning: These arguments are not used by forward(): (output_hidden_states, "
                          "output_attentions, attention_mask)", stacklevel=2)
        if self.model.neuron_config.is_pp():
            logits = self.model.pp_forward(input_ids, cache_ids, start_ids)
        else:
            logits = self.model(input_ids, cache_ids, start_ids)
        logits = logits[:, None, :]
        if return_dict:
            return ModelOutput([("logits", logits), ("past_key_values", tuple())])
        return (logits,)

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        """Mirrors generation_utils.py:50-52: restart ``cur_len`` (the model's cache is not reset)."""
        self.generate_calls += 1
        self.reset_generation()
        return super().generate(*args, **kwargs)

    def _reorder_cache(self, past: Any, beam_idx: Any) -> None:
        """Mirrors generation_utils.py:56-58."""
        assert hasattr(self.model, "reorder_cache") and callable(self.model.reorder_cache), (
            f"{self.model.__class__.__name__} doesn't have reorder_cache implemented for beam search")
        self.model.reorder_cache(beam_idx)

    def prepare_inputs_for_generation(self, input_ids: torch.Tensor, past_key_values: Any = None,
                                      inputs_embeds: Any = None, **kwargs: Any) -> dict[str, Any]:
        """Mirrors generation_utils.py:60-106.

        ``start_ids`` is each row's first attended column (argmax of the mask). With 1-D
        cache ids the prompt gets ``arange(width)`` and each later step the single id
        ``cur_len`` (the same for every row), feeding only the newest column.
        """
        attention_mask = kwargs.get("attention_mask")
        cache_ids = None
        start_ids = None
        if attention_mask is not None:
            _, start_ids = attention_mask.max(axis=1)
            start_ids = start_ids.int()
        decoding = bool((self.cur_len > 0).any().item())
        if decoding:
            input_ids = input_ids[:, -1:]
        if self.model.neuron_config.use_2d_cache_ids:
            batch_size, context_length = attention_mask.shape
            start_ids = torch.arange(input_ids.shape[0])
            if decoding:
                positions = torch.arange(context_length).unsqueeze(0).expand(batch_size, context_length)
                cache_ids = (positions * attention_mask).max(dim=1).values.unsqueeze(-1)
                self.cur_len = cache_ids.squeeze(-1)
            else:
                cache_ids = torch.arange(context_length) * attention_mask
                self.cur_len = cache_ids.max(dim=1).values
        elif decoding:
            cache_ids = self.cur_len
            self.cur_len = cache_ids + 1
        else:
            _, context_length = input_ids.shape
            cache_ids = torch.arange(context_length)
            self.cur_len = torch.tensor([context_length], dtype=torch.long)
        return {"input_ids": input_ids, "cache_ids": cache_ids, "start_ids": start_ids}
