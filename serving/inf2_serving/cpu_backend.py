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
    would alone and is never re-prefilled. An admitted row is prefilled alone, then
    joins the batch cache; a released row leaves it, and columns that are padding
    in every row are cut off.
    """

    def __init__(self, model: Any, slots: int) -> None:
        import inspect

        self.model = model
        self.slots = slots
        # transformers 5.2x renamed the forward argument and output field past_key_values to cache.
        parameters = inspect.signature(model.forward).parameters
        self._cache_arg = "cache" if "cache" in parameters else "past_key_values"
        # A prefill needs the last position's logits only. Where forward can skip the vocabulary
        # projection of the other prompt positions, it does (on tiny-gptj that projection is
        # most of a prefill's time); the container's transformers 4.43 cannot.
        self._last_logits = {name: 1 for name in ("logits_to_keep", "num_logits_to_keep") if name in parameters}
        self._order: list[int] = []  # the slot of each row of the batch cache
        self._lengths: dict[int, int] = {}  # real tokens per slot in the cache
        self._layers: list[tuple[Any, Any]] = []
        self._mask: Any = None
        self._pending: dict[int, tuple[int, ...]] = {}

    def can_admit(self) -> bool:
        """See :class:`inf2_serving.scheduler.DecodeBatch`: always, admission costs one prefill."""
        return True

    def admit(self, slot: int, context: Sequence[int]) -> None:
        """See :class:`inf2_serving.scheduler.DecodeBatch`."""
        self._pending[slot] = tuple(context)

    def release(self, slot: int) -> None:
        """See :class:`inf2_serving.scheduler.DecodeBatch`."""
        self._pending.pop(slot, None)
        if slot not in self._lengths:
            return
        keep = [row for row, owner in enumerate(self._order) if owner != slot]
        self._order.remove(slot)
        del self._lengths[slot]
        if not self._order:
            self._layers, self._mask = [], None
            return
        width = self._mask.shape[1]
        start = width - max(self._lengths.values())
        self._layers = [(k[keep, :, start:], v[keep, :, start:]) for k, v in self._layers]
        self._mask = self._mask[keep, start:]

    def step(self, appended: Mapping[int, int]) -> dict[int, Any]:
        """See :class:`inf2_serving.scheduler.DecodeBatch`."""
        import torch

        logits: dict[int, Any] = {}
        with torch.no_grad():
            if self._order:
                logits.update(self._decode(appended))
            for slot, context in list(self._pending.items()):
                logits[slot] = self._prefill(slot, context)
            self._pending.clear()
        return logits

    def _decode(self, appended: Mapping[int, int]) -> dict[int, Any]:
        import torch

        ids = torch.tensor([[appended[slot]] for slot in self._order], dtype=torch.long)
        positions = torch.tensor([[self._lengths[slot]] for slot in self._order], dtype=torch.long)
        mask = torch.cat([self._mask, torch.ones((len(self._order), 1), dtype=torch.long)], dim=1)
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True,
                         **{self._cache_arg: _as_cache(self._layers)})
        self._layers, self._mask = _kv_layers(getattr(out, self._cache_arg)), mask
        for slot in self._order:
            self._lengths[slot] += 1
        return {slot: out.logits[row, -1].float() for row, slot in enumerate(self._order)}

    def _prefill(self, slot: int, context: tuple[int, ...]) -> Any:
        import torch

        out = self.model(input_ids=torch.tensor([context], dtype=torch.long), use_cache=True, **self._last_logits)
        self._join(slot, _kv_layers(getattr(out, self._cache_arg)), len(context))
        return out.logits[0, -1].float()

    def _join(self, slot: int, layers: list[tuple[Any, Any]], length: int) -> None:
        import torch

        mask = torch.ones((1, length), dtype=torch.long)
        if self._order:
            width = max(self._mask.shape[1], length)
            self._layers = [(torch.cat([_left_pad(k, width), _left_pad(layers[i][0], width)]),
                             torch.cat([_left_pad(v, width), _left_pad(layers[i][1], width)]))
                            for i, (k, v) in enumerate(self._layers)]
            mask = torch.cat([_left_pad(self._mask, width), _left_pad(mask, width)])
        else:
            self._layers = layers
        self._mask = mask
        self._order.append(slot)
        self._lengths[slot] = length


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
