"""Per-row token selection: each row of a rolling batch keeps its own sampling settings.

transformers' ``generate()`` applies one set of logits processors to a whole batch,
so the static engine only batches rows whose settings match. The rolling scheduler
mixes rows freely, so each row gets a :class:`TokenSelector`: transformers' own
repetition-penalty, temperature, top-k and top-p processors (in the order
``generate()`` applies them) and a ``torch.Generator`` of its own. A seeded row
therefore draws the same tokens whatever rows share its batch.
"""
from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from .schema import GenerationParams

__all__ = ["TokenSelector", "row_seed"]


def row_seed(params: GenerationParams, fallback: int | None = None) -> int | None:
    """The seed a row samples with: the request's, else ``fallback`` (DJL's per-request
    seed), else a fresh one; None for a greedy row, which draws nothing."""
    if not params.sampling:
        return None
    if params.seed is not None:
        return params.seed
    return fallback if fallback is not None else random.randrange(2**31)


def _processors(params: GenerationParams) -> Any:
    from transformers import (
        LogitsProcessorList,
        RepetitionPenaltyLogitsProcessor,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    processors = LogitsProcessorList()
    if params.repetition_penalty is not None and params.repetition_penalty != 1.0:
        processors.append(RepetitionPenaltyLogitsProcessor(penalty=params.repetition_penalty))
    if params.sampling:
        if params.temperature != 1.0:
            processors.append(TemperatureLogitsWarper(params.temperature))
        # TGI's "not set" means no top-k filter (transformers' default would be 50).
        if params.top_k:
            processors.append(TopKLogitsWarper(top_k=params.top_k))
        if params.top_p is not None and params.top_p < 1.0:
            processors.append(TopPLogitsWarper(top_p=params.top_p))
    return processors


class TokenSelector:
    """Chooses one row's next token from its logits.

    Args:
        params: the row's generation parameters.
        seed: the row's seed (see :func:`row_seed`); ignored for a greedy row.
    """

    def __init__(self, params: GenerationParams, seed: int | None) -> None:
        import torch

        self.sampling = params.sampling
        self.uses_context = params.repetition_penalty is not None and params.repetition_penalty != 1.0
        """Whether :meth:`select` reads ``context`` (only the repetition penalty does)."""
        self._processors = _processors(params)
        self._generator = torch.Generator()
        if self.sampling and seed is not None:
            self._generator.manual_seed(seed)

    def select(self, logits: Any, context: Sequence[int]) -> int:
        """The next token after ``context`` (prompt plus tokens so far) given its ``[vocab]`` logits."""
        import torch

        scores = logits.reshape(1, -1).float()
        if self._processors:
            scores = self._processors(torch.tensor([list(context)], dtype=torch.long), scores)
        if not self.sampling:
            return int(scores.argmax(dim=-1))
        probs = torch.softmax(scores, dim=-1)
        return int(torch.multinomial(probs, 1, generator=self._generator))
