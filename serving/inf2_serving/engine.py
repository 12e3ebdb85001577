"""Backend-independent generation: tokenization, static batching, stop rules and decoding.

This is the engine for ``rolling_batch=disable``: whole batches, each run to its
longest member. With the rolling batch on, :class:`inf2_serving.scheduler.RollingEngine`
(a subclass) admits rows at every step instead; both share :meth:`Engine.prepare`
and :class:`RowState`'s stop rules.

A backend (:mod:`cpu_backend`, :mod:`neuron_backend`) only turns a left-padded batch
of token ids into new tokens, reporting each step to a :class:`StepObserver`. All
rules that decide what the client sees live here, so both backends answer alike.

Batching: prompts whose sampling settings match run together, at most
``batch_size`` rows at a time. A backend with a fixed compiled batch (Neuron) gets
the batch padded with rows of ``eos`` to ``batch_size``; their output is dropped.
Rows are left padded with ``eos`` to the longest prompt.

GPT-J's Neuron ``forward`` ignores ``start_ids``: there is no per-row padding mask,
so a left-padded row of a batch with prompts of unequal token length can differ
from the same prompt run alone. Batches of equal-length prompts are exact; prefer
them (the CPU backend applies the attention mask and is exact either way).

Cancellation: a :class:`TokenCallback` that returns ``False`` says nobody wants that
row any more (its streaming client left). The row ends at once with the finish reason
``"cancelled"`` and its done flag turns True; the other rows run on unchanged. When
every row is done the backend stops at that step, so a batch whose clients all left
frees the model at once. Under transformers' ``generate()`` (the CPU backend and the
Neuron adapter) a done row still rides along in the batch's forward passes, its new
tokens replaced by padding, until the whole batch is done. The Neuron ``sample()``
fallback has generated every step before the first is reported, so there a cancel
only stops the replay to the client; the device time is already spent.
"""
from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from .schema import Completion, GenerationParams, InvalidRequest

__all__ = ["CANCELLED", "Backend", "Engine", "IncrementalDecoder", "PreparedPrompt", "RowState", "StepObserver",
           "TokenCallback"]

logger = logging.getLogger(__name__)

CANCELLED = "cancelled"
"""Finish reason of a row whose consumer left; nobody is sent its completion."""


class TokenCallback(Protocol):
    """Told of every generated token: its row's index in the submitted list, the id,
    the text delta, and the row's completion when this token finished it.

    Returning ``False`` cancels the row: it gets no more tokens. ``None`` or ``True``
    keeps it going.
    """

    def __call__(self, index: int, token_id: int, text: str, final: Completion | None) -> bool | None: ...


class Backend(Protocol):
    """What the engine needs from a model backend."""

    name: str
    batch_size: int
    n_positions: int
    fixed_batch: bool

    def generate(
        self, input_ids: Any, attention_mask: Any, params: GenerationParams, max_new_tokens: int,
        observer: StepObserver,
    ) -> None:
        """Generate up to ``max_new_tokens`` for each row, calling ``observer.on_step`` per step."""

    def next_token_logits(self, input_ids: Any) -> Any:
        """Float32 ``[rows, vocab]`` logits for the token after each unpadded row of ``input_ids``."""

    def decode_batch(self) -> Any:
        """A :class:`inf2_serving.scheduler.DecodeBatch` of ``batch_size`` slots, for the rolling batch."""


class IncrementalDecoder:
    """Turns a growing list of token ids into text deltas.

    Byte-level BPE tokens can end inside a multi-byte UTF-8 character; decoding
    such a prefix yields U+FFFD. The decoder holds text back until the character is
    complete, so deltas never contain a split character.
    """

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer
        self._ids: list[int] = []
        self._emitted = ""

    @property
    def text(self) -> str:
        """The text emitted so far."""
        return self._emitted

    def push(self, token_id: int) -> str:
        """Add a token and return the newly complete text (may be empty)."""
        self._ids.append(token_id)
        full = self._tokenizer.decode(self._ids, skip_special_tokens=True)
        if full.endswith("\ufffd") or not full.startswith(self._emitted):
            return ""
        delta = full[len(self._emitted):]
        self._emitted = full
        return delta

    def flush(self) -> str:
        """Return whatever is held back (an incomplete character decodes as U+FFFD)."""
        full = self._tokenizer.decode(self._ids, skip_special_tokens=True)
        delta = full[len(self._emitted):] if full.startswith(self._emitted) else ""
        self._emitted += delta
        return delta


@dataclass(frozen=True)
class PreparedPrompt:
    """A validated, tokenized prompt ready for :meth:`Engine.run`."""

    prompt: str
    input_ids: tuple[int, ...]
    params: GenerationParams


@dataclass
class RowState:
    """One prompt's generation so far, and the rules that end it.

    Both engines use it, so a row stops for the same reasons (EOS, a stop
    sequence, ``max_new_tokens``) and reports the same completion either way.
    """

    prepared: PreparedPrompt
    index: int
    decoder: IncrementalDecoder
    seed: int | None
    tokens: list[int] = field(default_factory=list)
    finish_reason: str | None = None

    def accept(self, token: int, eos_token_id: int) -> str:
        """Record a new token and return its text delta; sets :attr:`finish_reason` when it ends the row."""
        self.tokens.append(token)
        params = self.prepared.params
        if token == eos_token_id:
            text = ""
            self.finish_reason = "eos_token"
        else:
            text = self.decoder.push(token)
            if any(stop in self.decoder.text for stop in params.stop):
                self.finish_reason = "stop_sequence"
            elif len(self.tokens) >= params.max_new_tokens:
                self.finish_reason = "length"
        if self.finish_reason is not None:
            text += self.decoder.flush()
        return text

    def completion(self) -> Completion:
        """The row's result (finish reason ``length`` when none was set)."""
        return Completion(
            prompt=self.prepared.prompt,
            text=self.decoder.text,
            token_ids=tuple(self.tokens),
            finish_reason=self.finish_reason or "length",
            prompt_tokens=len(self.prepared.input_ids),
            seed=self.seed,
        )


class StepObserver:
    """Receives each generation step's tokens and decides which rows are done.

    Rows are the submitted prompts followed by padding rows (``None``), which are
    done from the start. A row whose token callback returns ``False`` ends with
    :data:`CANCELLED`; setting :attr:`cancelled` ends all rows at the next step.
    """

    def __init__(self, rows: Sequence[RowState | None], eos_token_id: int, on_token: TokenCallback | None):
        self._rows = list(rows)
        self._eos = eos_token_id
        self._on_token = on_token
        self.cancelled = False

    @property
    def done(self) -> list[bool]:
        """Per row: no more tokens are wanted."""
        return [self.cancelled or row is None or row.finish_reason is not None for row in self._rows]

    def on_step(self, tokens: Sequence[int]) -> list[bool]:
        """Record one new token per row; return the per-row done flags."""
        for row, token in _pairs(self._rows, tokens):
            if row is None or row.finish_reason is not None:
                continue
            text = row.accept(int(token), self._eos)
            if self._on_token is not None:
                final = row.completion() if row.finish_reason is not None else None
                wanted = self._on_token(row.index, int(token), text, final)
                if wanted is False and row.finish_reason is None:
                    row.finish_reason = CANCELLED
        return self.done

    def finish(self) -> None:
        """Close rows the backend stopped without a reason of ours (cancel, length cap)."""
        for row in self._rows:
            if row is not None and row.finish_reason is None:
                row.finish_reason = "length"
                row.decoder.flush()


def _pairs(rows: Sequence[RowState | None], tokens: Sequence[int]) -> Iterable[tuple[RowState | None, int]]:
    if len(rows) != len(tokens):
        raise ValueError(f"backend returned {len(tokens)} tokens for {len(rows)} rows")
    return ((rows[i], tokens[i]) for i in range(len(rows)))


def _group_key(params: GenerationParams) -> tuple[Any, ...]:
    # Parameters that shape the whole batch's sampling; stop and max_new_tokens are per row.
    if not params.sampling:
        return (False, params.repetition_penalty)
    return (True, params.temperature, params.top_k, params.top_p, params.repetition_penalty, params.seed)


class Engine:
    """Runs prepared prompts through a backend, one batch at a time.

    Args:
        backend: the loaded model.
        tokenizer: a transformers tokenizer for the same model.
        eos_token_id: end-of-sequence id, also used for padding.
    """

    def __init__(self, backend: Backend, tokenizer: Any, eos_token_id: int) -> None:
        self.backend = backend
        self.tokenizer = tokenizer
        self.eos_token_id = eos_token_id
        # One model, one generation at a time: batches and streams take turns.
        self._lock = threading.Lock()

    def prepare(self, prompt: str, params: GenerationParams) -> PreparedPrompt:
        """Tokenize and check that prompt plus ``max_new_tokens`` fits ``n_positions``.

        Raises:
            InvalidRequest: the prompt is empty after tokenization or too long.
        """
        ids = tuple(self.tokenizer(prompt)["input_ids"])
        if not ids:
            raise InvalidRequest("the prompt has no tokens; send some text in inputs", field="inputs")
        limit = self.backend.n_positions
        if len(ids) + params.max_new_tokens > limit:
            raise InvalidRequest(
                f"the prompt has {len(ids)} tokens and max_new_tokens is {params.max_new_tokens}, "
                f"but the model was compiled for n_positions {limit}: shorten the prompt to at most "
                f"{max(limit - params.max_new_tokens, 0)} tokens or lower max_new_tokens",
                field="inputs",
            )
        return PreparedPrompt(prompt, ids, params)

    def run(
        self, prompts: Sequence[PreparedPrompt], on_token: TokenCallback | None = None,
        observer_ready: Callable[[StepObserver], None] | None = None,
    ) -> list[Completion]:
        """Generate for every prompt; the results are in the order given."""
        results: dict[int, Completion] = {}
        for chunk in self._chunks(prompts):
            for index, completion in self._run_chunk(chunk, on_token, observer_ready):
                results[index] = completion
        return [results[i] for i in range(len(prompts))]

    def _chunks(self, prompts: Sequence[PreparedPrompt]) -> Iterable[list[tuple[int, PreparedPrompt]]]:
        groups: dict[tuple[Any, ...], list[tuple[int, PreparedPrompt]]] = {}
        for index, prepared in enumerate(prompts):
            groups.setdefault(_group_key(prepared.params), []).append((index, prepared))
        for members in groups.values():
            chunk: list[tuple[int, PreparedPrompt]] = []
            for item in members:
                candidate = chunk + [item]
                longest = max(len(p.input_ids) for _, p in candidate)
                most_new = max(p.params.max_new_tokens for _, p in candidate)
                # Left padding to the longest prompt must still fit the compiled context.
                if chunk and (len(candidate) > self.backend.batch_size
                              or longest + most_new > self.backend.n_positions):
                    yield chunk
                    chunk = [item]
                else:
                    chunk = candidate
            if chunk:
                yield chunk

    def _run_chunk(
        self, chunk: list[tuple[int, PreparedPrompt]], on_token: TokenCallback | None,
        observer_ready: Callable[[StepObserver], None] | None,
    ) -> list[tuple[int, Completion]]:
        import torch

        params = chunk[0][1].params
        seed = None
        if params.sampling:
            seed = params.seed if params.seed is not None else random.randrange(2**31)
        rows: list[RowState | None] = [
            RowState(prepared, index, IncrementalDecoder(self.tokenizer), seed) for index, prepared in chunk
        ]
        if self.backend.fixed_batch:
            rows += [None] * (self.backend.batch_size - len(rows))
        width = max(len(p.input_ids) for _, p in chunk)
        ids = torch.full((len(rows), width), self.eos_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for r, row in enumerate(rows):
            seq = row.prepared.input_ids if row is not None else (self.eos_token_id,)
            ids[r, width - len(seq):] = torch.tensor(seq, dtype=torch.long)
            mask[r, width - len(seq):] = 1
        observer = StepObserver(rows, self.eos_token_id, on_token)
        if observer_ready is not None:
            observer_ready(observer)
        max_new = max(p.params.max_new_tokens for _, p in chunk)
        with self._lock:
            if seed is not None:
                torch.manual_seed(seed)
            logger.debug("generate: %d rows (%d real), width %d", len(rows), len(chunk), width)
            self.backend.generate(ids, mask, params, max_new, observer)
        observer.finish()
        return [(row.index, row.completion()) for row in rows if row is not None]
