"""Stand-in for ``transformers_neuronx/sampling.py``: the top-k loop behind ``GPTJForSampling.sample``."""
from __future__ import annotations

from typing import Any

import torch


@torch.no_grad()
def simple_sample(model: Any, input_ids: torch.Tensor, start_ids: Any, sequence_length: int,
                  eos_token_id: int = 2, top_k: int = 50, streamer: Any = None, output_scores: bool = False,
                  cache_ids: Any = None) -> Any:
    """Mirrors transformers_neuronx/sampling.py:24-29 at c8d6bdc: run the prompt, then ``sample_loop``."""
    scores = model(input_ids, None, start_ids)
    return sample_loop(model, input_ids, start_ids, scores, sequence_length, eos_token_id, top_k, streamer,
                       output_scores=output_scores, cache_ids=cache_ids)


def sample_loop(model: Any, input_ids: torch.Tensor, start_ids: Any, next_token_scores: torch.Tensor,
                sequence_length: int, eos_token_id: int = 2, top_k: int = 50, streamer: Any = None,
                output_scores: bool = False, neuron_config: Any = None, log_softmax_scores: Any = None,
                cache_ids: Any = None) -> Any:
    """Mirrors transformers_neuronx/sampling.py:117-166 at c8d6bdc.

    Each step forbids EOS (its score becomes -inf, so it is never drawn and the loop
    never stops early), keeps the top ``top_k`` scores, draws from their softmax, streams
    the ``[batch, 1]`` draw and feeds it back at ``cache_ids = [cur_len]``; the result
    has ``sequence_length`` columns. (Log-softmax scores of pipeline configs are not mirrored.)
    """
    tokens = [input_ids]
    start = input_ids.shape[1]
    if cache_ids:
        start = cache_ids.item() + 1
    scores = []
    for cur_len in range(start, sequence_length):
        next_token_scores[:, eos_token_id] = -float("inf")
        if output_scores:
            scores.append(next_token_scores)
        top_values, top_indices = torch.topk(next_token_scores, top_k)
        probs = torch.nn.functional.softmax(top_values, dim=-1, dtype=torch.float32)
        choice = torch.multinomial(probs, num_samples=1, replacement=True)
        inputs = torch.gather(top_indices, 1, choice)
        tokens.append(inputs)
        if streamer:
            streamer.put(inputs)
        if cur_len + 1 >= sequence_length:
            break
        next_token_scores = model(inputs, torch.as_tensor([cur_len], dtype=torch.int32), start_ids)
    if streamer:
        streamer.end()
    if output_scores:
        return torch.cat(tokens, dim=-1), scores
    return torch.cat(tokens, dim=-1)
