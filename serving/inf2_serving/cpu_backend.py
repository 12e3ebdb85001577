"""The CPU backend: transformers' ``AutoModelForCausalLM`` on the artifact's weights.

It serves the same artifact as the Neuron backend, so users can try an endpoint's
exact behaviour on a laptop before paying for an inf2 instance.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from .config import ServingConfig
from .engine import StepObserver
from .hf_generation import run_generate
from .schema import GenerationParams

__all__ = ["CpuBackend", "CpuDecodeBatch"]

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

    def decode_batch(self) -> CpuDecodeBatch:
        """A rolling decode batch of ``batch_size`` slots over this model."""
        return CpuDecodeBatch(self.model, self.batch_size)

    def generate(
        self, input_ids: Any, attention_mask: Any, params: GenerationParams, max_new_tokens: int,
        observer: StepObserver,
    ) -> None:
        """See :class:`inf2_serving.engine.Backend`."""
        run_generate(self.model, input_ids, attention_mask, params, max_new_tokens, observer, self._eos)


def _kv_layers(past: Any) -> list[tuple[Any, Any]]:
    """Per layer ``(keys, values)``, each ``[rows, heads, positions, head_dim]``, from any cache form.

    transformers 4.35 returns tuples, 4.36-4.5x a ``DynamicCache`` with ``key_cache``
    and ``value_cache`` lists, and 5.x one with ``layers`` of ``keys``/``values``.
    """
    if isinstance(past, (tuple, list)):
        return [(layer[0], layer[1]) for layer in past]
    if hasattr(past, "layers"):
        return [(layer.keys, layer.values) for layer in past.layers]
    return [(past.key_cache[i], past.value_cache[i]) for i in range(len(past.key_cache))]


def _as_cache(layers: list[tuple[Any, Any]]) -> Any:
    """The cache object this transformers' models take for ``layers``."""
    try:
        from transformers import DynamicCache
    except ImportError:  # transformers 4.35 takes the tuples themselves
        return tuple(layers)
    cache = DynamicCache()
    for index, (keys, values) in enumerate(layers):
        cache.update(keys, values, index)
    return cache


class CpuDecodeBatch:
    """Continuous batching on the CPU: each row has its own KV cache positions.

    Rows sit left-padded in one KV cache, with an attention mask over the padding
    and position ids counting each row's own tokens, so a row computes what it
    would alone and is never re-prefilled. A released row leaves the cache, and
    columns that are padding in every row are cut off.

    Prefills come first: a step with newly admitted rows prefills them together
    (left-padded, as a static batch's prompts are) and joins them to the cache, and
    the running rows decode at the next step with the tokens they were given. A new
    request's first token thus waits for no decode step of others; the running rows
    wait one prefill per admission, which happens only when a slot frees.
    """

    def __init__(self, model: Any, slots: int) -> None:
        import inspect

        self.model = model
        self.slots = slots
        self.clear()
        # transformers 5.2x renamed the forward argument and output field past_key_values to cache.
        parameters = inspect.signature(model.forward).parameters
        self._cache_arg = "cache" if "cache" in parameters else "past_key_values"
        # A prefill needs the last position's logits only. Where forward can skip the vocabulary
        # projection of the other prompt positions, it does (on tiny-gptj that projection is
        # most of a prefill's time); the container's transformers 4.43 cannot.
        self._last_logits = {name: 1 for name in ("logits_to_keep", "num_logits_to_keep") if name in parameters}

    def clear(self) -> None:
        """See :class:`inf2_serving.scheduler.DecodeBatch`."""
        self._order: list[int] = []  # the slot of each row of the batch cache
        self._lengths: dict[int, int] = {}  # real tokens per slot in the cache
        # The model's own cache object, passed back as it came between decode steps: rebuilding
        # it from tensors copies every cached position (DynamicCache.update concatenates).
        self._cache: Any = None
        self._mask: Any = None
        self._pending: dict[int, tuple[int, ...]] = {}  # admitted rows not yet prefilled
        self._next: dict[int, int] = {}  # per running slot, the token its next decode feeds

    def can_admit(self) -> bool:
        """See :class:`inf2_serving.scheduler.DecodeBatch`: always, admission costs one prefill."""
        return True

    def admit(self, slot: int, context: Sequence[int]) -> None:
        """See :class:`inf2_serving.scheduler.DecodeBatch`."""
        self._pending[slot] = tuple(context)

    def release(self, slot: int) -> None:
        """See :class:`inf2_serving.scheduler.DecodeBatch`."""
        self._pending.pop(slot, None)
        self._next.pop(slot, None)
        if slot not in self._lengths:
            return
        keep = [row for row, owner in enumerate(self._order) if owner != slot]
        self._order.remove(slot)
        del self._lengths[slot]
        if not self._order:
            self._cache, self._mask = None, None
            return
        width = self._mask.shape[1]
        start = width - max(self._lengths.values())
        self._cache = _as_cache([(k[keep, :, start:], v[keep, :, start:]) for k, v in _kv_layers(self._cache)])
        self._mask = self._mask[keep, start:]

    def step(self, appended: Mapping[int, int]) -> dict[int, Any]:
        """See :class:`inf2_serving.scheduler.DecodeBatch`: a prefill of the rows admitted since the
        last step when there are any, else a decode of every running row."""
        import torch

        self._next.update(appended)
        with torch.no_grad():
            if self._pending:
                return self._prefill()
            if self._order:
                return self._decode()
        return {}

    def _decode(self) -> dict[int, Any]:
        import torch

        ids = torch.tensor([[self._next.pop(slot)] for slot in self._order], dtype=torch.long)
        positions = torch.tensor([[self._lengths[slot]] for slot in self._order], dtype=torch.long)
        mask = torch.cat([self._mask, torch.ones((len(self._order), 1), dtype=torch.long)], dim=1)
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True,
                         **{self._cache_arg: self._cache})
        self._cache, self._mask = getattr(out, self._cache_arg), mask
        for slot in self._order:
            self._lengths[slot] += 1
        return {slot: out.logits[row, -1].float() for row, slot in enumerate(self._order)}

    def _prefill(self) -> dict[int, Any]:
        import torch

        slots, contexts = list(self._pending), list(self._pending.values())
        self._pending.clear()
        width = max(len(context) for context in contexts)
        ids = torch.zeros((len(slots), width), dtype=torch.long)
        mask = torch.zeros((len(slots), width), dtype=torch.long)
        for row, context in enumerate(contexts):
            ids[row, width - len(context):] = torch.tensor(context, dtype=torch.long)
            mask[row, width - len(context):] = 1
        positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True,
                         **self._last_logits)
        # Keys and values computed at padding positions are masked from here on; zeros keep them finite.
        pad = (mask == 0)[:, None, :, None]
        layers = [(k.masked_fill(pad, 0.0), v.masked_fill(pad, 0.0))
                  for k, v in _kv_layers(getattr(out, self._cache_arg))]
        self._join(slots, layers, mask)
        return {slot: out.logits[row, -1].float() for row, slot in enumerate(slots)}

    def _join(self, slots: list[int], layers: list[tuple[Any, Any]], mask: Any) -> None:
        import torch

        if self._order:
            width = max(self._mask.shape[1], mask.shape[1])
            layers = [(torch.cat([_left_pad(k, width), _left_pad(layers[i][0], width)]),
                       torch.cat([_left_pad(v, width), _left_pad(layers[i][1], width)]))
                      for i, (k, v) in enumerate(_kv_layers(self._cache))]
            mask = torch.cat([_left_pad(self._mask, width), _left_pad(mask, width)])
        self._cache, self._mask = _as_cache(layers), mask
        for slot in slots:
            self._order.append(slot)
            self._lengths[slot] = int(self._mask[len(self._order) - 1].sum())


def _left_pad(tensor: Any, width: int) -> Any:
    """``tensor`` (a mask ``[rows, n]`` or a cache ``[rows, heads, n, dim]``) with zeros before its
    positions, up to ``width`` of them."""
    import torch

    dim = 1 if tensor.dim() == 2 else 2
    missing = width - tensor.shape[dim]
    if missing == 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([torch.zeros(shape, dtype=tensor.dtype), tensor], dim=dim)
