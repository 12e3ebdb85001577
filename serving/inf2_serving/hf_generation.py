"""Drive transformers' ``generate()`` for the engine (CPU model or Neuron adapter)."""
from __future__ import annotations

from typing import Any

from .engine import StepObserver
from .schema import GenerationParams

__all__ = ["generate_kwargs", "run_generate"]


def generate_kwargs(params: GenerationParams, max_new_tokens: int, eos_token_id: int) -> dict[str, Any]:
    """``generate()`` keyword arguments for one batch's parameters."""
    kwargs: dict[str, Any] = {
        "max_new_tokens": max_new_tokens,
        "eos_token_id": eos_token_id,
        "pad_token_id": eos_token_id,
        "do_sample": params.sampling,
    }
    if params.sampling:
        kwargs["temperature"] = params.temperature
        # transformers defaults top_k to 50; TGI's "not set" means no top-k filter.
        kwargs["top_k"] = params.top_k or 0
        kwargs["top_p"] = params.top_p if params.top_p is not None else 1.0
    if params.repetition_penalty is not None:
        kwargs["repetition_penalty"] = params.repetition_penalty
    return kwargs


def run_generate(
    model: Any, input_ids: Any, attention_mask: Any, params: GenerationParams, max_new_tokens: int,
    observer: StepObserver, eos_token_id: int,
) -> None:
    """Run ``model.generate`` with ``observer`` deciding, step by step, which rows stop."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    class _ObserverCriteria(StoppingCriteria):
        # transformers calls this after every step with the ids so far; the last
        # column holds each row's newest token. Per-row results need transformers >= 4.39.
        def __call__(self, ids: Any, scores: Any, **kwargs: Any) -> Any:
            done = observer.on_step(ids[:, -1].tolist())
            return torch.tensor(done, dtype=torch.bool, device=ids.device)

    with torch.no_grad():
        model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            stopping_criteria=StoppingCriteriaList([_ObserverCriteria()]),
            **generate_kwargs(params, max_new_tokens, eos_token_id),
        )
