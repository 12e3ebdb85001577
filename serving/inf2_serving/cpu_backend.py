"""The CPU backend: transformers' ``AutoModelForCausalLM`` on the artifact's weights.

It serves the same artifact as the Neuron backend, so users can try an endpoint's
exact behaviour on a laptop before paying for an inf2 instance.
"""
from __future__ import annotations

import logging
from typing import Any

from .config import ServingConfig
from .engine import StepObserver
from .hf_generation import run_generate
from .schema import GenerationParams

__all__ = ["CpuBackend"]

logger = logging.getLogger(__name__)


class CpuBackend:
    """Generation with transformers on the CPU, in float32 whatever ``dtype`` says
    (half precision is slow or unsupported for many CPU kernels)."""

    name = "cpu"
    fixed_batch = False

    def __init__(self, config: ServingConfig, model_config: Any, eos_token_id: int) -> None:
        from transformers import AutoModelForCausalLM

        self.batch_size = config.batch_size
        self.n_positions = config.n_positions or model_config.n_positions
        self._eos = eos_token_id
        self.model = AutoModelForCausalLM.from_pretrained(config.weights_dir)
        self.model.eval()
        logger.info("CPU backend: loaded %s (batch_size %d, n_positions %d)",
                    config.weights_dir, self.batch_size, self.n_positions)

    def next_token_logits(self, input_ids: Any) -> Any:
        """See :class:`inf2_serving.engine.Backend`."""
        import torch

        with torch.no_grad():
            return self.model(input_ids).logits[:, -1, :].float()

    def generate(
        self, input_ids: Any, attention_mask: Any, params: GenerationParams, max_new_tokens: int,
        observer: StepObserver,
    ) -> None:
        """See :class:`inf2_serving.engine.Backend`."""
        run_generate(self.model, input_ids, attention_mask, params, max_new_tokens, observer, self._eos)
