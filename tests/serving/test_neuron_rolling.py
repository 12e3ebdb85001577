"""The Neuron rolling batch on the strict transformers-neuronx stand-in: left-aligned rows, a replay
from offset 0 on admission, the admission policy, and greedy tokens equal to transformers' unbatched ones.

The model is tiny-gptj with weight matrices of std 0.16 (``sharp_gptj``), so that a row fed at a
wrong position or seeing a batch mate's tokens changes its greedy tokens. Time is a fake clock
that advances by a fixed step at every graph ``forward``, so the policy's decisions are exact.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field

import pytest
import torch
from inf2_serving.engine import PreparedPrompt
from inf2_serving.scheduler import RollingEngine, ScheduledRow, SlotScheduler
from inf2_serving.schema import GenerationParams, InvalidRequest, parse_request

STEP_SECONDS = 1.0
"""Fake time per graph forward: policy thresholds below read as steps."""

PROMPTS = {
    "hi": "Hi",  # 1 token
    "world": "Hello world",  # 2
    "france": "The capital of France is",  # 5
    "once": "Once upon a time there was a little",  # 8
    "weather": "A much longer prompt, about the weather in the mountains this week",  # 13
}


@dataclass
class ForwardLog:
    """Every graph ``forward``: the token fed to each slot, and the cache offset."""

    ids: list[list[int]] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)

    def since(self, call: int) -> list[tuple[list[int], int]]:
        return list(zip(self.ids[call:], self.offsets[call:], strict=True))


@pytest.fixture
def neuron(standins, monkeypatch, tmp_path):
    """The stand-ins importable; the cwd and the compiler env, which the backend sets, restored afterwards."""
    monkeypatch.chdir(tmp_path)
    for name in ("NEURON_COMPILE_CACHE_URL", "NEURON_CC_FLAGS"):
        monkeypatch.setenv(name, "")  # the backend reads empty as unset


@pytest.fixture(scope="module")
def transformers_gptj(sharp_gptj):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoTokenizer.from_pretrained(sharp_gptj), AutoModelForCausalLM.from_pretrained(sharp_gptj).eval()


@pytest.fixture(scope="module")
def unbatched(transformers_gptj):
    """``unbatched(ids, n)``: transformers' greedy tokens for one row alone (stopping at EOS)."""
    tokenizer, model = transformers_gptj

    @functools.cache
    def greedy(ids: tuple[int, ...], max_new_tokens: int) -> list[int]:
        prompt = torch.tensor([ids])
        with torch.no_grad():
            out = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=max_new_tokens,
                                 do_sample=False, pad_token_id=tokenizer.eos_token_id)
        return out[0, len(ids):].tolist()

    return greedy


def _ids(tokenizer, name: str) -> tuple[int, ...]:
    return tuple(tokenizer(PROMPTS[name])["input_ids"])


@pytest.fixture
def make_backend(neuron, sharp_gptj, transformers_gptj, tmp_path, monkeypatch, clock):
    """``make_backend(batch_size, replay_interval_ms)``: a NeuronBackend on the stand-in whose model's
    forwards are logged (``backend.forwards``) and advance ``clock`` by :data:`STEP_SECONDS`."""
    from inf2_serving.config import ServingConfig
    from inf2_serving.neuron_backend import NeuronBackend
    from transformers import AutoConfig

    def make(batch_size: int, replay_interval_ms: int = 1000) -> NeuronBackend:
        config = ServingConfig.from_properties({
            "model_dir": str(tmp_path), "model_id": str(sharp_gptj), "backend": "neuron", "n_positions": "128",
            "dtype": "fp32", "tensor_parallel_degree": "2", "batch_size": str(batch_size),
            "replay_interval_ms": str(replay_interval_ms)})
        backend = NeuronBackend(config, AutoConfig.from_pretrained(sharp_gptj), transformers_gptj[0].eos_token_id)
        log, real_forward = ForwardLog(), backend.model.forward

        def forward(input_ids, cache_offset, start_ids=None):
            assert input_ids.shape == (batch_size, 1) and input_ids.dtype == torch.long
            assert cache_offset.shape == (1,) and cache_offset.dtype == torch.int32  # what the graph's input takes
            log.ids.append(input_ids[:, 0].tolist())
            log.offsets.append(int(cache_offset[0]))
            clock.advance(STEP_SECONDS)
            return real_forward(input_ids, cache_offset, start_ids)

        monkeypatch.setattr(backend.model, "forward", forward)
        backend.forwards = log
        return backend

    return make


@pytest.fixture
def make_scheduler(make_backend, transformers_gptj, clock):
    """``make_scheduler(batch_size, replay_interval_ms)``: ``(backend, scheduler)`` over its decode batch."""
    tokenizer = transformers_gptj[0]

    def make(batch_size: int, replay_interval_ms: int):
        backend = make_backend(batch_size, replay_interval_ms)
        return backend, SlotScheduler(backend.decode_batch(clock), tokenizer, tokenizer.eos_token_id)

    return make


class Greedy:
    """Steps a decode batch as the scheduler does, appending each due row's argmax to its tokens."""

    def __init__(self, batch) -> None:
        self.batch = batch
        self.tokens: dict[int, list[int]] = {}
        self.logits: dict[int, list[torch.Tensor]] = {}
        self._appended: dict[int, int] = {}

    def step(self, count: int = 1) -> None:
        for _ in range(count):
            logits = self.batch.step(self._appended)
            self._appended = {slot: int(row.argmax()) for slot, row in logits.items()}
            for slot, row in logits.items():
                self.logits.setdefault(slot, []).append(row)
                self.tokens.setdefault(slot, []).append(self._appended[slot])


def _prepared(tokenizer, name: str, max_new_tokens: int) -> PreparedPrompt:
    return PreparedPrompt(PROMPTS[name], _ids(tokenizer, name), GenerationParams(max_new_tokens=max_new_tokens))


def _submit(scheduler: SlotScheduler, tokenizer, name: str, max_new_tokens: int, on_token=None) -> ScheduledRow:
    return scheduler.submit(_prepared(tokenizer, name, max_new_tokens), on_token or (lambda *_: None))


def test_rows_are_left_aligned_and_get_logits_when_their_context_ends(
        make_backend, transformers_gptj, unbatched, clock) -> None:
    tokenizer, model = transformers_gptj
    backend = make_backend(3)
    batch = backend.decode_batch(clock)
    short, long = _ids(tokenizer, "world"), _ids(tokenizer, "france")
    batch.admit(0, short)
    batch.admit(2, long)  # slot 1 stays empty
    driver = Greedy(batch)
    driver.step(len(long) + 5)
    tokens = driver.tokens

    feeds = backend.forwards.since(0)
    assert [offset for _, offset in feeds] == list(range(len(long) + 5))  # one shared offset, one token a step
    assert [fed[1] for fed, _ in feeds] == [tokenizer.eos_token_id] * len(feeds)  # the empty slot feeds padding
    assert [fed[2] for fed, _ in feeds] == list(long) + tokens[2][:-1]  # token i at position i
    assert [fed[0] for fed, _ in feeds] == list(short) + tokens[0][:-1]
    # The short row's first token comes while the long prompt is still being fed.
    assert len(tokens[0]) == len(long) + 5 - (len(short) - 1) and len(tokens[2]) == 6
    assert tokens[0] == unbatched(short, len(tokens[0])) and tokens[2] == unbatched(long, 6)
    with torch.no_grad():  # each logits row is transformers' for that row alone
        wanted = model(torch.tensor([list(long) + tokens[2][:2]])).logits[0, -1]
    torch.testing.assert_close(driver.logits[2][2], wanted, atol=1e-4, rtol=1e-4)
    assert (batch.stats.admissions, batch.stats.admitted, batch.stats.replays) == (1, 2, 0)


def test_an_admission_replays_the_running_rows_from_offset_zero_without_a_reset(
        make_backend, transformers_gptj, unbatched, clock) -> None:
    tokenizer, _ = transformers_gptj
    backend = make_backend(2, replay_interval_ms=1)
    batch = backend.decode_batch(clock)
    first, second = _ids(tokenizer, "france"), _ids(tokenizer, "world")
    batch.admit(0, first)
    driver = Greedy(batch)
    driver.step(len(first) + 3)  # 4 tokens; the 4th is not fed yet
    assert batch.can_admit()
    resets, before = backend.model.reset_calls, len(backend.forwards.offsets)
    batch.admit(1, second)
    running = list(first) + driver.tokens[0]
    driver.step(len(running) + 4)

    assert backend.model.reset_calls == resets  # stale cache entries past the offset are masked out
    feeds = backend.forwards.since(before)
    assert [offset for _, offset in feeds] == list(range(len(running) + 4))
    assert [fed[0] for fed, _ in feeds][:len(running)] == running  # the whole context again, from position 0
    assert [fed[1] for fed, _ in feeds][:len(second)] == list(second)
    # The new row generates during the replay; the running row resumes once its context is fed again.
    assert len(driver.tokens[1]) == len(running) + 4 - (len(second) - 1) and len(driver.tokens[0]) == 4 + 5
    assert driver.tokens[1] == unbatched(second, len(driver.tokens[1]))
    assert driver.tokens[0] == unbatched(first, 9)
    stats = batch.stats
    assert (stats.replays, stats.replayed_tokens) == (1, len(first) + 3)  # the offset the row had reached
    assert stats.replay_steps == stats.longest_replay == len(running) - 1
    assert stats.replayed_per_admitted == (len(first) + 3) / 2


def test_admission_waits_for_the_interval_of_decoding_and_replay_steps_do_not_count(
        make_backend, transformers_gptj, clock) -> None:
    tokenizer, _ = transformers_gptj
    backend = make_backend(2, replay_interval_ms=3000)  # 3 decoding steps of the fake clock
    batch = backend.decode_batch(clock)
    assert batch.can_admit()  # nothing active: a fresh start costs no replay
    prompt = _ids(tokenizer, "france")
    batch.admit(0, prompt)
    driver = Greedy(batch)
    admissible = []
    for _ in range(len(prompt) - 1 + 3):
        driver.step()
        admissible.append(batch.can_admit())
    # Prompt steps give no token and do not count; the third token's step completes the interval.
    assert admissible == [False] * (len(prompt) - 1 + 2) + [True]

    batch.admit(1, _ids(tokenizer, "hi"))
    replayed = len(prompt) + 2  # the running row's context ends there: the steps before it replay
    # The replay took longer than the interval: as much decoding as it took must follow.
    decoding = max(3, replayed)
    admissible = []
    for _ in range(replayed + decoding):
        driver.step()
        admissible.append(batch.can_admit())
    assert batch.stats.replay_steps == replayed and len(driver.tokens[1]) == replayed + decoding
    assert admissible == [False] * (replayed + decoding - 1) + [True]


def test_staggered_arrivals_through_the_scheduler_give_every_row_its_unbatched_tokens(
        make_scheduler, transformers_gptj, unbatched) -> None:
    tokenizer, _ = transformers_gptj
    backend, scheduler = make_scheduler(3, 2000)
    arrivals = [("once", 12), ("hi", 20), ("weather", 6), ("france", 15), ("world", 9), ("hi", 4), ("once", 7)]
    rows = []
    for name, max_new in arrivals:  # two steps apart: more rows than slots, admitted while others run
        rows.append(_submit(scheduler, tokenizer, name, max_new))
        scheduler.step()
        scheduler.step()
    while scheduler.step():
        pass

    for row, (name, max_new) in zip(rows, arrivals, strict=True):
        assert row.state.tokens == unbatched(_ids(tokenizer, name), max_new), name
    stats = scheduler.batch.stats
    assert scheduler.stats.completed == len(arrivals) and stats.admitted == len(arrivals)
    # Rows joined running ones more than once, and some admissions took several rows at once.
    assert stats.replays >= 2 and stats.replayed_tokens > 0 and stats.admitted > stats.admissions > stats.replays
    assert max(backend.forwards.offsets) < max(len(_ids(tokenizer, n)) + m for n, m in arrivals)


def test_a_cancelled_row_frees_its_slot_and_the_next_replay_leaves_it_out(
        make_scheduler, transformers_gptj, unbatched) -> None:
    tokenizer, _ = transformers_gptj
    backend, scheduler = make_scheduler(2, 1)
    kept = _submit(scheduler, tokenizer, "france", 12)
    leaving = _submit(scheduler, tokenizer, "once", 12, on_token=lambda *_: len(leaving.state.tokens) < 3)
    later = _submit(scheduler, tokenizer, "world", 8)
    while leaving.slot is None or not leaving.finished.is_set():
        scheduler.step()
    assert leaving.state.finish_reason == "cancelled" and later.slot is None
    offset, before = backend.forwards.offsets[-1] + 1, len(backend.forwards.offsets)
    scheduler.step()  # admits the waiting row into the freed slot: a replay of the kept row only

    assert later.slot == leaving.slot
    first_fed, first_offset = backend.forwards.since(before)[0]
    assert first_offset == 0 and first_fed[later.slot] == _ids(tokenizer, "world")[0]
    assert scheduler.batch.stats.replayed_tokens == offset  # one running row at that offset
    while scheduler.step():
        pass
    assert leaving.state.tokens == unbatched(_ids(tokenizer, "once"), 12)[:3]
    assert kept.state.tokens == unbatched(_ids(tokenizer, "france"), 12)
    assert later.state.tokens == unbatched(_ids(tokenizer, "world"), 8)


def test_waiting_rows_are_admitted_together_once_the_interval_has_passed(
        make_scheduler, transformers_gptj, unbatched) -> None:
    tokenizer, _ = transformers_gptj
    _, scheduler = make_scheduler(3, 4000)
    first = _submit(scheduler, tokenizer, "world", 16)
    scheduler.step()
    scheduler.step()  # the first row's first token
    second = _submit(scheduler, tokenizer, "hi", 10)
    scheduler.step()
    third = _submit(scheduler, tokenizer, "france", 6)
    waited = 0
    while second.slot is None:
        scheduler.step()
        waited += 1
    batch = scheduler.batch
    assert waited == 3 and third.slot is not None  # two waiting rows, one admission, one replay
    assert (batch.stats.admissions, batch.stats.replays, batch.stats.admitted) == (2, 1, 3)
    assert batch.stats.replayed_tokens == len(_ids(tokenizer, "world")) + 4 - 1
    while scheduler.step():
        pass
    for row, name, max_new in ((first, "world", 16), (second, "hi", 10), (third, "france", 6)):
        assert row.state.tokens == unbatched(_ids(tokenizer, name), max_new), name


def test_a_row_as_long_as_n_positions_runs_to_its_end(make_backend, transformers_gptj, unbatched, clock) -> None:
    tokenizer, _ = transformers_gptj
    backend = make_backend(2, replay_interval_ms=1)
    engine = RollingEngine(backend, tokenizer, tokenizer.eos_token_id)
    long_ids = _ids(tokenizer, "weather")
    fits = GenerationParams(max_new_tokens=128 - len(long_ids))
    with pytest.raises(InvalidRequest):  # Engine.prepare keeps every row within n_positions
        engine.prepare(PROMPTS["weather"], GenerationParams(max_new_tokens=fits.max_new_tokens + 1))
    done = engine.run([engine.prepare(PROMPTS["weather"], fits),
                       engine.prepare(PROMPTS["hi"], GenerationParams(max_new_tokens=40))])

    assert list(done[0].token_ids) == unbatched(long_ids, fits.max_new_tokens)
    assert list(done[1].token_ids) == unbatched(_ids(tokenizer, "hi"), 40)
    assert max(backend.forwards.offsets) == 128 - 2  # the last token is returned, never fed


def test_the_handler_serves_mixed_lengths_through_the_neuron_rolling_batch(
        neuron, sharp_gptj, transformers_gptj, tmp_path, unbatched) -> None:
    from inf2_serving.handler import ModelHandler

    tokenizer, _ = transformers_gptj
    handler = ModelHandler()
    handler.initialize({"model_dir": str(tmp_path), "model_id": str(sharp_gptj), "backend": "neuron",
                        "n_positions": "128", "dtype": "fp32", "batch_size": "2", "rolling_batch": "auto",
                        "replay_interval_ms": "1"})
    engine = handler.engine
    assert isinstance(engine, RollingEngine) and engine.scheduler.batch.stats.admitted == 1  # the warm-up
    names = ["weather", "hi", "france", "world", "once"]
    body = handler.generate(parse_request({"inputs": [PROMPTS[n] for n in names],
                                           "parameters": {"max_new_tokens": 10}}))
    assert [item["generated_text"] for item in body] == [
        tokenizer.decode(unbatched(_ids(tokenizer, n), 10), skip_special_tokens=True) for n in names]
    assert engine.scheduler.batch.stats.admitted == 1 + len(names)
