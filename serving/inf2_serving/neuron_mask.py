"""A correct attention mask for GPT-J's Neuron graph, installed while it is built.

transformers-neuronx 0.11.351 (aws-neuron/transformers-neuronx at c8d6bdc, the release
in the LMI 0.29.0 neuronx image) builds GPT-J's attention mask with
``hlo.decoder_attention_mask_legacy(position_ids, dtype, n_positions)``
(``gptj/hlo.py:296``). That function (``hlo.py:901-913``) returns
``(p <= position_ids[i]) * (i >= p)`` where ``i`` is the index of the active token, not
its position. GPT-J's graph always runs one active token (``gptj/model.py:71``:
``build_gptj_program(config, 1, ...)``), so ``i`` is 0 and only ``p = 0`` survives:
every token, prompt tokens included, attends to position 0 and to nothing else, and
the text is garbage (upstream issue #28, "Completely meaningless words").

:func:`causal_decode_mask` is the mask that graph needs: ``p <= position_ids[i]``. It
is written in the same HLO-building DSL (``torch_neuronx.pyhlo.scribe``) and has the
real function's signature, so the library builds it into the real compiled graph.
``gptj/hlo.py`` looks the function up on the ``transformers_neuronx.hlo`` module while
``to_neuron()`` builds the graphs, so :func:`decode_mask_installed` swaps the module
attribute for the duration of ``to_neuron()`` and puts the original back afterwards
(GPT-2's graph in the same library calls it too, and is none of our business).
"""
from __future__ import annotations

import contextlib
import inspect
import logging
from collections.abc import Iterator
from typing import Any

__all__ = ["MASK_FUNCTION", "causal_decode_mask", "decode_mask_installed"]

logger = logging.getLogger(__name__)

MASK_FUNCTION = "decoder_attention_mask_legacy"
"""The ``transformers_neuronx.hlo`` function GPT-J's graph builder calls for its mask."""

_SIGNATURE = ["position_ids", "dtype", "n_positions"]


def causal_decode_mask(position_ids: Any, dtype: Any, n_positions: int) -> Any:
    """The ``[n_active, n_positions]`` mask ``position <= cache_offset`` (1 = attend).

    Right for any graph that runs one active token at a time, which GPT-J's always
    does: the token at ``cache_offset`` sees every cached position up to its own.

    Args:
        position_ids: the graph's ``s32[n_active]`` cache-offset parameter (a scribe shape).
        dtype: the scribe element type of the mask, e.g. ``scribe.f32``.
        n_positions: the bucket's cache length.
    """
    (n_active,) = position_ids.sizes
    sizes = n_active, n_positions
    int_dtype = position_ids.dtype
    pred = position_ids.scribe.pred
    positions = int_dtype[sizes].Iota(dimensions=[1])
    offsets = int_dtype[sizes].Broadcast(position_ids, dimensions=[0])
    visible = pred[sizes].Compare(positions, offsets, comparison_direction="LE")
    return dtype[sizes].Convert(visible)


@contextlib.contextmanager
def decode_mask_installed(enabled: bool) -> Iterator[bool]:
    """While open, GPT-J's graphs are built with :func:`causal_decode_mask`.

    Gated on what the library has, not on its version string (which still reads
    0.10.x at c8d6bdc): the swap happens only when ``transformers_neuronx.hlo`` has a
    ``decoder_attention_mask_legacy(position_ids, dtype, n_positions)``. Yields whether
    the correction is in place; the startup self-check catches a graph that is still wrong.
    """
    if not enabled:
        logger.warning("Neuron decode mask: correction off (correct_decode_mask=false); GPT-J's graph is "
                       "built with the library's own mask")
        yield False
        return
    try:
        from transformers_neuronx import hlo
    except ImportError:
        hlo = None
    original = getattr(hlo, MASK_FUNCTION, None)
    if original is causal_decode_mask:
        yield True
        return
    if hlo is None or original is None or list(inspect.signature(original).parameters) != _SIGNATURE:
        logger.warning("Neuron decode mask: transformers_neuronx.hlo has no %s(%s); the graph keeps the "
                       "library's mask", MASK_FUNCTION, ", ".join(_SIGNATURE))
        yield False
        return
    setattr(hlo, MASK_FUNCTION, causal_decode_mask)
    logger.info("Neuron decode mask: building GPT-J's graphs with the causal mask position <= cache_offset "
                "instead of transformers_neuronx.hlo.%s, which attends to position 0 only", MASK_FUNCTION)
    try:
        yield True
    finally:
        setattr(hlo, MASK_FUNCTION, original)
