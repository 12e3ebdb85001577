"""Iteration-level (rolling) batching: a slot scheduler over a backend's decode batch.

The static :class:`~inf2_serving.engine.Engine` forms a batch, runs it to its longest
member and only then forms the next one. Here the batch has ``batch_size`` slots and
every step:

1. drops cancelled rows, freeing their slots;
2. admits waiting rows into free slots, in arrival order, when the backend's
   :meth:`DecodeBatch.can_admit` allows (the Neuron batch bounds its replay cost);
3. runs one :meth:`DecodeBatch.step` and gives each row that got logits its next
   token, chosen by the row's own :class:`~inf2_serving.sampling.TokenSelector`;
4. ends rows at EOS, a stop sequence or ``max_new_tokens`` (:class:`RowState`'s
   rules, shared with the static engine) and frees their slots at once.

Rows with different sampling settings share a batch. Nothing waits for a batch to
fill: a request that finds a free slot starts at the next step.

Driving: the scheduler runs only when someone calls :meth:`SlotScheduler.step`. DJL's
rolling-batch loop calls ``handle()`` once per step (:mod:`inf2_serving.djl`); in a
process without that loop, every caller of :meth:`RollingEngine.run` steps the shared
scheduler until its own rows are done, one step at a time under a lock, so the
model runs one step at a time and idles when nobody waits.
"""
from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from .engine import CANCELLED, Backend, Engine, IncrementalDecoder, PreparedPrompt, RowState, TokenCallback
from .sampling import TokenSelector, row_seed
from .schema import Completion

__all__ = ["DecodeBatch", "RollingEngine", "RowCallback", "ScheduledRow", "SchedulerStats", "SlotScheduler"]

logger = logging.getLogger(__name__)

RowCallback = Callable[[int, str, "Completion | None"], "bool | None"]
"""Told of each of a row's tokens: id, text delta, and the completion with the last one.
Returning ``False`` cancels the row."""


class DecodeBatch(Protocol):
    """A backend's batch of ``slots`` decode slots, stepped one token at a time."""

    slots: int

    def admit(self, slot: int, context: Sequence[int]) -> None:
        """Start a row in a free ``slot`` with its prompt's token ids."""

    def release(self, slot: int) -> None:
        """Forget the row in ``slot``; the slot is free from the next step."""

    def can_admit(self) -> bool:
        """Whether rows may be admitted before the next step."""

    def clear(self) -> None:
        """Forget every row, as after a failed step, whatever state that step left."""

    def step(self, appended: Mapping[int, int]) -> dict[int, Any]:
        """Run one step.

        Args:
            appended: per slot, the token chosen from that slot's logits at the last step.

        Returns:
            Float ``[vocab]`` logits for each slot whose next token is due now.
        """


@dataclass(eq=False)
class ScheduledRow:
    """A row in the scheduler: waiting, in a slot, or finished."""

    state: RowState
    selector: TokenSelector
    on_token: RowCallback
    slot: int | None = None
    cancelled: bool = False
    error: BaseException | None = None
    """Why the row failed: the exception a step raised while it was waiting or active."""
    finished: threading.Event = field(default_factory=threading.Event)

    @property
    def context(self) -> list[int]:
        """Prompt and generated tokens."""
        return list(self.state.prepared.input_ids) + self.state.tokens


@dataclass
class SchedulerStats:
    """Counters since the scheduler started."""

    steps: int = 0
    admitted: int = 0
    completed: int = 0
    cancelled: int = 0


class SlotScheduler:
    """Admits rows into a :class:`DecodeBatch`'s slots at every step (see the module doc).

    Args:
        batch: the backend's decode batch.
        tokenizer: decodes token deltas.
        eos_token_id: ends a row.
    """

    def __init__(self, batch: DecodeBatch, tokenizer: Any, eos_token_id: int) -> None:
        self.batch = batch
        self.tokenizer = tokenizer
        self.eos_token_id = eos_token_id
        self.stats = SchedulerStats()
        self._waiting: deque[ScheduledRow] = deque()
        self._active: dict[int, ScheduledRow] = {}
        self._appended: dict[int, int] = {}
        self._lock = threading.Lock()  # guards _waiting and the rows' cancelled flags

    @property
    def waiting(self) -> int:
        """Rows waiting for a slot."""
        return len(self._waiting)

    @property
    def active(self) -> int:
        """Rows in a slot."""
        return len(self._active)

    def submit(self, prepared: PreparedPrompt, on_token: RowCallback, index: int = 0,
               seed: int | None = None) -> ScheduledRow:
        """Queue a prompt; it gets a slot at a coming step. Thread-safe.

        Args:
            index: the row's index in its caller's list (kept in its :class:`RowState`).
            seed: used when the request sets none (DJL sends one per request).
        """
        seed = row_seed(prepared.params, seed)
        state = RowState(prepared, index, IncrementalDecoder(self.tokenizer), seed)
        row = ScheduledRow(state, TokenSelector(prepared.params, seed), on_token)
        with self._lock:
            self._waiting.append(row)
        return row

    def cancel(self, row: ScheduledRow) -> None:
        """End ``row`` at the next step, freeing its slot. Thread-safe; a finished row is left alone."""
        with self._lock:
            row.cancelled = True

    def reset(self) -> None:
        """Cancel every row, waiting or active (DJL's ``reset_rollingbatch``)."""
        with self._lock:
            for row in list(self._waiting) + list(self._active.values()):
                row.cancelled = True

    def step(self) -> bool:
        """Run one iteration; returns whether rows remain (waiting or active).

        Raises:
            Exception: whatever the backend raised. Every row, waiting or active, then
                ends with it as its :attr:`ScheduledRow.error`, and every slot is free.
        """
        try:
            self._drop_cancelled()
            self._admit()
            if self._active:
                logits = self.batch.step(self._appended)
                self.stats.steps += 1
                self._appended = {}
                for slot, row_logits in logits.items():
                    self._advance(self._active[slot], row_logits)
        except Exception as exc:
            self._fail_all(exc)
            raise
        return bool(self._active or self._waiting)

    def _fail_all(self, exc: Exception) -> None:
        # A failed step leaves the backend's batch in an unknown state: no row can go on.
        with self._lock:
            rows = list(self._waiting) + list(self._active.values())
            self._waiting.clear()
        self._active.clear()
        self._appended = {}
        self.batch.clear()
        for row in rows:
            row.error = exc
            row.finished.set()

    def _drop_cancelled(self) -> None:
        with self._lock:
            gone = [row for row in self._waiting if row.cancelled]
            self._waiting = deque(row for row in self._waiting if not row.cancelled)
        gone += [row for row in self._active.values() if row.cancelled]
        for row in gone:
            row.state.finish_reason = row.state.finish_reason or CANCELLED
            self.stats.cancelled += 1
            self._finish(row)

    def _admit(self) -> None:
        free = [slot for slot in range(self.batch.slots) if slot not in self._active]
        if not free or not self._waiting or not self.batch.can_admit():
            return
        with self._lock:
            taken = [self._waiting.popleft() for _ in range(min(len(free), len(self._waiting)))]
        for slot, row in ((free[i], taken[i]) for i in range(len(taken))):
            row.slot = slot
            self._active[slot] = row
            self.batch.admit(slot, row.state.prepared.input_ids)
            self.stats.admitted += 1
        logger.debug("admitted %d rows; %d active, %d waiting", len(taken), len(self._active), len(self._waiting))

    def _advance(self, row: ScheduledRow, logits: Any) -> None:
        token = row.selector.select(logits, row.context if row.selector.uses_context else ())
        text = row.state.accept(token, self.eos_token_id)
        final = row.state.completion() if row.state.finish_reason is not None else None
        if row.on_token(token, text, final) is False and final is None:
            row.state.finish_reason = CANCELLED
            self.stats.cancelled += 1
        if row.state.finish_reason is None:
            self._appended[row.slot] = token  # type: ignore[index]
            return
        if row.state.finish_reason != CANCELLED:
            self.stats.completed += 1
        self._finish(row)

    def _finish(self, row: ScheduledRow) -> None:
        if row.slot is not None and self._active.get(row.slot) is row:
            del self._active[row.slot]
            self._appended.pop(row.slot, None)
            self.batch.release(row.slot)
        row.finished.set()


class _RunHandle:
    """What :meth:`RollingEngine.run` hands to ``observer_ready``: setting
    :attr:`cancelled` ends all of the run's rows at the next step, as with the
    static engine's :class:`~inf2_serving.engine.StepObserver`."""

    def __init__(self, scheduler: SlotScheduler, rows: list[ScheduledRow]) -> None:
        self._scheduler = scheduler
        self._rows = rows

    @property
    def cancelled(self) -> bool:
        return all(row.cancelled for row in self._rows)

    @cancelled.setter
    def cancelled(self, value: bool) -> None:
        if value:
            for row in self._rows:
                self._scheduler.cancel(row)


class RollingEngine(Engine):
    """An :class:`Engine` whose rows go through a :class:`SlotScheduler` instead of static batches.

    Args:
        backend: a backend with ``decode_batch()``.
        tokenizer: a transformers tokenizer for the same model.
        eos_token_id: end-of-sequence id.
    """

    def __init__(self, backend: Backend, tokenizer: Any, eos_token_id: int) -> None:
        super().__init__(backend, tokenizer, eos_token_id)
        self.scheduler = SlotScheduler(backend.decode_batch(), tokenizer, eos_token_id)  # type: ignore[attr-defined]

    def step(self) -> bool:
        """One scheduler step, serialized with every other driver; returns whether rows remain."""
        with self._lock:
            return self.scheduler.step()

    def run(
        self, prompts: Sequence[PreparedPrompt], on_token: TokenCallback | None = None,
        observer_ready: Callable[[Any], None] | None = None,
    ) -> list[Completion]:
        """Generate for every prompt, stepping the shared scheduler until they are done.

        Raises:
            Exception: what the backend raised during a step that involved these rows.
        """
        rows = [self.scheduler.submit(prepared, _row_callback(on_token, index), index)
                for index, prepared in enumerate(prompts)]
        if observer_ready is not None:
            observer_ready(_RunHandle(self.scheduler, rows))
        for row in rows:
            while not row.finished.is_set():
                # Another caller may be stepping: wait for its step to end, then check again.
                with self._lock:
                    if not row.finished.is_set():
                        self.scheduler.step()
            if row.error is not None:
                raise row.error
        return [row.state.completion() for row in rows]


def _row_callback(on_token: TokenCallback | None, index: int) -> RowCallback:
    def callback(token_id: int, text: str, final: Completion | None) -> bool | None:
        return None if on_token is None else on_token(index, token_id, text, final)

    return callback
