"""Stand-in for ``transformers_neuronx/gptj/config.py``."""
from __future__ import annotations

from typing import Any

from transformers_neuronx import utils


class GPTJConfig:
    """Mirrors transformers_neuronx/gptj/config.py:18-34 at c8d6bdc.

    Copies the Hugging Face config's fields, keeps the checkpoint's ``n_positions`` as
    ``n_ctx``, lets ``kwargs`` override existing fields only (``KeyError`` otherwise,
    ``None`` ignored), then sets ``intermediate_dim = 4 * n_embd`` (the checkpoint's
    ``n_inner`` is not read), batch size, amp and tp degree.
    """

    def __init__(self, config: Any, batch_size: int, amp: str, tp_degree: int, **kwargs: Any) -> None:
        self.activation_function = config.activation_function
        self.n_embd = config.n_embd
        self.n_head = config.n_head
        self.n_layer = config.n_layer
        self.n_positions = config.n_positions
        self.n_ctx = config.n_positions
        self.rotary_dim = config.rotary_dim
        self.vocab_size = config.vocab_size
        self.eos_token_id = config.eos_token_id
        utils.maybe_override_attributes(self, kwargs)
        self.intermediate_dim = 4 * self.n_embd
        self.batch_size = batch_size
        self.amp = amp
        self.tp_degree = tp_degree
