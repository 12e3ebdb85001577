"""The startup self-check: refuse to serve a model that cannot be computing the right thing.

A compiled graph can be wrong in ways that still produce fluent-looking tokens; GPT-J
on transformers-neuronx 0.11.351 attends to position 0 only unless its mask is
corrected (:mod:`inf2_serving.neuron_mask`). Two probes, a few forward calls in all,
run before ``/ping`` turns healthy, on every backend:

- **context sensitivity**: two prompts that differ only in their middle tokens must
  give different next-token logits. A model that ignores the middle of its context
  gives identical ones; a working model never does.
- **finite logits**: no NaN or infinity, which overflowing fp16 weights produce.

On failure the handler goes to FAILED and logs one line starting with
:data:`FAILURE_MARKER`; ``inf2-deploy deploy`` finds that line in the endpoint's logs
and shows it as the reason the endpoint failed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["FAILURE_MARKER", "PROBE_TEXT", "SelfCheckFailed", "SelfCheckReport", "run_self_check"]

FAILURE_MARKER = "inf2-serving self-check failed:"
"""How the one log line that explains a failed self-check starts."""

PROBE_TEXT = "The capital of France is"
"""The first probe; the second keeps its first and last token and reverses the middle ones."""

# Logits that differ by less than this (relative to their size) count as equal. A model
# that ignores the middle tokens gives bit-identical logits; real context sensitivity,
# even in a tiny random model, is orders of magnitude larger.
_RELATIVE_TOLERANCE = 1e-6


class SelfCheckFailed(RuntimeError):
    """The loaded model failed a startup probe; the message says which and what to do."""


@dataclass(frozen=True)
class SelfCheckReport:
    """What the probes measured."""

    probe_tokens: int
    max_logit: float
    context_difference: float


def probe_ids(tokenizer: Any) -> tuple[list[int], list[int]]:
    """Two prompts of equal length that share their first and last token and differ in between."""
    first = list(tokenizer(PROBE_TEXT)["input_ids"])
    if len(first) < 4:
        raise SelfCheckFailed(f"{FAILURE_MARKER} the tokenizer makes only {len(first)} tokens of "
                              f"{PROBE_TEXT!r}; the probe needs at least 4")
    second = first[:1] + first[1:-1][::-1] + first[-1:]
    return first, second


def run_self_check(backend: Any, tokenizer: Any) -> SelfCheckReport:
    """Probe ``backend``'s next-token logits; return what was measured.

    Raises:
        SelfCheckFailed: the logits are not finite, or do not depend on the middle of the prompt.
    """
    import torch

    first, second = probe_ids(tokenizer)
    logits = []
    for ids in (first, second):
        row = backend.next_token_logits(torch.tensor([ids]))
        if not bool(torch.isfinite(row).all()):
            bad = int((~torch.isfinite(row)).sum())
            raise SelfCheckFailed(
                f"{FAILURE_MARKER} {bad} next-token logits for token ids {ids} are NaN or infinite; "
                "the weights overflow in this dtype: serve with option.dtype=bf16 or fp32")
        logits.append(row)
    scale = max(1.0, float(logits[0].abs().max()))
    difference = float((logits[0] - logits[1]).abs().max())
    if difference <= _RELATIVE_TOLERANCE * scale:
        raise SelfCheckFailed(
            f"{FAILURE_MARKER} next-token logits do not depend on the middle of the prompt (token ids {first} "
            f"and {second} differ by {difference:.3g}): the compiled graph does not attend to earlier "
            "positions; keep option.correct_decode_mask=true (the default) and redeploy")
    return SelfCheckReport(len(first), scale, difference)
