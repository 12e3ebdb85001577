"""The rolling batch on GPT-J's Neuron graph: left-aligned rows, replayed on admission.

What the graph allows (transformers-neuronx at c8d6bdc, ``gptj/model.py``):
``forward(input_ids, cache_offset, start_ids=None)`` takes one cache offset for the
whole compiled batch, runs one token per graph call and ignores ``start_ids``; there
is no per-row position and no per-row padding mask. So every row of the KV cache
sits at the same offset, and a row can only be exact if its token ``i`` sits at
position ``i``: rows are left-aligned. With the causal decode mask of
:mod:`inf2_serving.neuron_mask` (position <= cache_offset), a token at offset ``t``
attends to positions ``0..t`` of its own row, which is what it would see alone.

Stepping: all rows share the offset ``t``. Each step feeds every slot its row's
context token at ``t`` (an empty slot feeds the pad token, its output ignored) and
returns logits for the rows whose context ends at ``t``. A row with a longer context
is still replaying and gets nothing this step; a new row with a short prompt starts
generating while longer rows catch up.

Admission: a new row's prompt starts at position 0, so admitting while rows are
active means starting over from offset 0 and replaying every active row's whole
context (prompt and generated tokens) together with the new prompts, LMI's "naive"
rolling batch with correct positions. The running rows stall for about their
context's length in single-token steps. With no row active an admission is a fresh
start and replays nothing. A released row is forgotten: its slot feeds padding and
the next replay leaves it out.

No ``reset()`` before a restart: it writes zeros over the whole KV cache (3.76 GB at
n_positions 2048, batch 4, fp16) and changes nothing. GPT-J's graph computes
``score * mask + (1 - mask) * large_neg`` (``gptj/hlo.py:101-110``), so a cached key
past the offset adds exactly the same masked score whatever it holds, and every
position up to the offset is rewritten before it is read.

Policy (:meth:`NeuronDecodeBatch.can_admit`): admit at once when no row is active;
otherwise only after as much decoding since the batch last restarted from offset 0
as ``replay_interval`` and as that restart's replay took. Decoding time is the time
of steps that produced tokens outside a replay. The first bound caps replays per
second of decoding; the second keeps replaying under half of the time whatever the
contexts' length. The scheduler admits every waiting row that fits in the free slots
at once, so one replay serves several arrivals.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["NeuronDecodeBatch", "ReplayStats"]

logger = logging.getLogger(__name__)


@dataclass
class ReplayStats:
    """What the Neuron rolling batch did since it was made."""

    admissions: int = 0
    """Restarts from offset 0 that took new rows (fresh starts and replays)."""
    admitted: int = 0
    """Rows admitted."""
    replays: int = 0
    """Admissions that replayed rows already running."""
    replayed_tokens: int = 0
    """Context tokens of running rows that were in the KV cache and were fed again."""
    steps: int = 0
    """Single-token graph steps."""
    replay_steps: int = 0
    """Steps at offsets where a running row was still catching up after a replay."""
    longest_replay: int = 0
    """The most steps one replay took until its last running row was due again."""

    @property
    def replayed_per_admitted(self) -> float:
        """Replayed tokens per admitted row."""
        return self.replayed_tokens / self.admitted if self.admitted else 0.0

    @property
    def replay_share(self) -> float:
        """The share of steps spent replaying."""
        return self.replay_steps / self.steps if self.steps else 0.0


class NeuronDecodeBatch:
    """A :class:`~inf2_serving.scheduler.DecodeBatch` over a ``GPTJForSampling`` (see the module doc).

    The batch owns the model's KV cache while rows are active: the backend's static
    paths (``next_token_logits``, ``generate``) write it and must not run in between.

    Args:
        model: the compiled ``GPTJForSampling``; its batch size is ``slots``.
        slots: the compiled batch size.
        pad_token_id: fed to empty slots.
        replay_interval: seconds of decoding between two admissions that replay running rows.
        clock: seconds, monotonic; measures decoding time.
    """

    def __init__(self, model: Any, slots: int, pad_token_id: int, replay_interval: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.model = model
        self.slots = slots
        self.replay_interval = replay_interval
        self.stats = ReplayStats()
        self._pad = pad_token_id
        self._clock = clock
        self.clear()

    def clear(self) -> None:
        """See :class:`~inf2_serving.scheduler.DecodeBatch`: the next admission starts from offset 0."""
        self._contexts: dict[int, list[int]] = {}  # per slot, the row's prompt and generated tokens
        self._new: set[int] = set()  # slots admitted since the last step
        self._offset = 0  # the cache offset of the next step; every row has this many tokens cached
        self._replay_end = 0  # offsets below this re-feed a running row's tokens
        self._decoded = 0.0  # seconds of decoding since the last restart
        self._replaying = 0.0  # seconds the last restart's replay has taken

    def can_admit(self) -> bool:
        """See :class:`~inf2_serving.scheduler.DecodeBatch`: when no row is active, or after
        ``replay_interval`` seconds of decoding since the last restart, and at least as long
        as that restart's replay."""
        return not self._contexts or self._decoded >= max(self.replay_interval, self._replaying)

    def admit(self, slot: int, context: Sequence[int]) -> None:
        """See :class:`~inf2_serving.scheduler.DecodeBatch`; the replay runs at the next step."""
        self._contexts[slot] = list(context)
        self._new.add(slot)
        self.stats.admitted += 1

    def release(self, slot: int) -> None:
        """See :class:`~inf2_serving.scheduler.DecodeBatch`: the slot feeds padding from the next step."""
        self._contexts.pop(slot, None)
        self._new.discard(slot)

    def step(self, appended: Mapping[int, int]) -> dict[int, Any]:
        """See :class:`~inf2_serving.scheduler.DecodeBatch`: one graph step at the shared offset."""
        import torch

        for slot, token in appended.items():
            self._contexts[slot].append(token)
        if self._new:
            self._restart()
        offset = self._offset
        ids = torch.tensor([[self._token(slot, offset)] for slot in range(self.slots)], dtype=torch.long)
        started = self._clock()
        with torch.no_grad():
            logits = self.model(ids, torch.tensor([offset], dtype=torch.int32))
        elapsed = self._clock() - started
        self._offset += 1
        self.stats.steps += 1
        due = {slot: logits[slot].float() for slot, context in self._contexts.items() if len(context) == offset + 1}
        if offset < self._replay_end:
            self.stats.replay_steps += 1
            self._replaying += elapsed
        elif due:
            self._decoded += elapsed
        return due

    def _token(self, slot: int, offset: int) -> int:
        context = self._contexts.get(slot)
        return self._pad if context is None else context[offset]

    def _restart(self) -> None:
        """Start over from offset 0 with every active row: the new ones and those already running."""
        running = [slot for slot in self._contexts if slot not in self._new]
        if running:
            # Every running row has exactly ``_offset`` tokens in the cache; all of them are fed again.
            self.stats.replays += 1
            self.stats.replayed_tokens += self._offset * len(running)
            self._replay_end = max(len(self._contexts[slot]) - 1 for slot in running)
            self.stats.longest_replay = max(self.stats.longest_replay, self._replay_end)
        else:
            self._replay_end = 0
        logger.debug("restart from offset 0: %d new rows, %d running rows replayed from offset %d",
                     len(self._new), len(running), self._offset)
        self.stats.admissions += 1
        self._offset = 0
        self._decoded = self._replaying = 0.0
        self._new.clear()
