"""Analytic lower bounds for a plan: what each token, each prompt and each request costs on inf2.

GPT-J's compiled Neuron graph takes one token per call, prompt tokens included
(transformers-neuronx 0.11.351, ``gptj/model.py:99-102``): there is no parallel
prefill. A decode step reads every weight once, so its floor is weight bytes over the
HBM bandwidth of the chips the model is sharded over, and the time to first token is
about prompt_tokens such steps. With static batches (``rolling_batch`` disable) each
batch starts with ``reset()``, which writes zeros over the whole KV cache from the
host (``gptj/model.py:282-286``). With the rolling batch there is no reset, but
admitting a request while rows run replays their contexts one token per step
(:mod:`inf2_serving.neuron_rolling`): up to n_positions - 1 steps of stall for them.
These are floors: real steps add collectives, launch overhead and sampling.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from inf2_serving.contract import DTYPES, rolling_batch_enabled

from .catalog import HBM_BANDWIDTH_PER_CHIP, ModelFacts

if TYPE_CHECKING:
    from .planner import Plan

__all__ = ["DEFAULT_PROMPT_TOKENS", "REFERENCE_DTYPE_BYTES", "PromptCost", "prompt_cost", "reference_bytes"]

DEFAULT_PROMPT_TOKENS = 128
# `inf2-deploy verify` computes its reference on the CPU in one of these dtypes.
REFERENCE_DTYPE_BYTES = {name: DTYPES[name].itemsize for name in ("bf16", "fp32")}


def reference_bytes(model: ModelFacts, dtype: str) -> int:
    """Host memory for the weights of a CPU reference model in ``dtype`` (``bf16`` or ``fp32``)."""
    return model.parameters * REFERENCE_DTYPE_BYTES[dtype]


@dataclass(frozen=True)
class PromptCost:
    """Per-token, per-prompt and per-request floors for one plan."""

    prompt_tokens: int
    chips: int
    decode_floor_s: float
    reset_bytes: int
    reference_bytes: dict[str, int]
    n_positions: int
    rolling_batch: bool

    @property
    def longest_replay_s(self) -> float:
        """With the rolling batch, the longest an admission can stall running rows: a replay of
        contexts up to n_positions - 1 tokens, one step each."""
        return (self.n_positions - 1) * self.decode_floor_s

    @property
    def ttft_floor_s(self) -> float:
        """Time to first token can be no shorter: one full graph step per prompt token."""
        return self.prompt_tokens * self.decode_floor_s

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view, as printed by ``inf2-deploy plan --json``."""
        return {"prompt_tokens": self.prompt_tokens, "chips": self.chips,
                "decode_floor_ms": round(self.decode_floor_s * 1e3, 3),
                "ttft_floor_ms": round(self.ttft_floor_s * 1e3, 3),
                "rolling_batch": self.rolling_batch,
                "longest_replay_ms": round(self.longest_replay_s * 1e3, 3) if self.rolling_batch else None,
                "reset_bytes_per_request": 0 if self.rolling_batch else self.reset_bytes,
                "verify_reference_bytes": dict(self.reference_bytes)}


def prompt_cost(plan: Plan, prompt_tokens: int = DEFAULT_PROMPT_TOKENS) -> PromptCost:
    """The floors for ``plan`` with prompts of ``prompt_tokens`` tokens."""
    inst = plan.instance
    cores_per_chip = inst.neuron_cores // inst.chips if inst is not None else 2
    chips = -(-plan.tensor_parallel_degree // cores_per_chip)
    width = DTYPES[plan.spec.dtype].itemsize
    weights = plan.model.parameters * width
    model = plan.model
    reset = 2 * model.n_layer * plan.spec.batch_size * plan.n_positions * model.n_embd * width
    return PromptCost(
        prompt_tokens=prompt_tokens,
        chips=chips,
        decode_floor_s=weights / (chips * HBM_BANDWIDTH_PER_CHIP),
        reset_bytes=reset,
        reference_bytes={dtype: reference_bytes(model, dtype) for dtype in REFERENCE_DTYPE_BYTES},
        n_positions=plan.n_positions,
        rolling_batch=rolling_batch_enabled(plan.spec.rolling_batch),
    )
