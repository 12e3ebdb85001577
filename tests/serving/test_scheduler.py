"""The rolling batch on the CPU backend: slots, admission at every step, per-row settings, cancellation
and exactness against unbatched transformers, on the sharp tiny GPT-J (logits far from flat)."""
from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from inf2_serving.cpu_backend import CpuDecodeBatch
from inf2_serving.engine import CANCELLED, PreparedPrompt
from inf2_serving.scheduler import SlotScheduler
from inf2_serving.schema import GenerationParams

PROMPTS = [
    "Hello there my friend",
    "The quick brown fox jumps over",
    "A",
    "Once upon a time in a land far far away there lived",
    "Numbers: 1 2 3",
    "Why",
]


@pytest.fixture(scope="module")
def sharp(sharp_gptj: Path):
    """(model, tokenizer) of the sharp tiny GPT-J."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(sharp_gptj).eval(), AutoTokenizer.from_pretrained(sharp_gptj)


@pytest.fixture(scope="module")
def unbatched(sharp) -> Callable[[str, int], list[int]]:
    """Greedy token ids of one prompt alone, from transformers' generate(): the ground truth."""
    import torch

    model, tokenizer = sharp

    def generate(prompt: str, max_new_tokens: int) -> list[int]:
        ids = tokenizer(prompt, return_tensors="pt")
        with torch.no_grad():
            out = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.eos_token_id)
        return out[0, ids["input_ids"].shape[1]:].tolist()

    return generate


def _scheduler(sharp, slots: int) -> SlotScheduler:
    model, tokenizer = sharp
    return SlotScheduler(CpuDecodeBatch(model, slots), tokenizer, tokenizer.eos_token_id)


def _prepared(sharp, prompt: str, **params) -> PreparedPrompt:
    tokenizer = sharp[1]
    return PreparedPrompt(prompt, tuple(tokenizer(prompt)["input_ids"]), GenerationParams(**params))


def _ignore(*_args) -> None:
    return None


def _drain(scheduler: SlotScheduler, limit: int = 1000) -> None:
    for _ in range(limit):
        if not scheduler.step():
            return
    raise AssertionError("the scheduler did not finish")


def test_staggered_greedy_rows_equal_their_unbatched_tokens(sharp, unbatched) -> None:
    scheduler = _scheduler(sharp, slots=2)
    rows = [scheduler.submit(_prepared(sharp, p, max_new_tokens=4 + 5 * i), _ignore, i)
            for i, p in enumerate(PROMPTS)]
    _drain(scheduler)
    for i, row in enumerate(rows):
        assert row.state.finish_reason == "length"
        assert row.state.tokens == unbatched(PROMPTS[i], 4 + 5 * i)
    assert scheduler.stats.admitted == len(PROMPTS) and scheduler.stats.completed == len(PROMPTS)


def test_rows_join_at_the_next_step_after_a_slot_frees(sharp) -> None:
    scheduler = _scheduler(sharp, slots=2)
    first_token_step: dict[str, int] = {}

    def recorder(name: str):
        def on_token(token_id: int, text: str, final) -> None:
            first_token_step.setdefault(name, scheduler.stats.steps)
        return on_token

    scheduler.submit(_prepared(sharp, PROMPTS[0], max_new_tokens=3), recorder("short"))
    scheduler.submit(_prepared(sharp, PROMPTS[1], max_new_tokens=40), recorder("long"))
    scheduler.submit(_prepared(sharp, PROMPTS[2], max_new_tokens=3), recorder("waiting"))
    scheduler.step()
    assert (scheduler.active, scheduler.waiting) == (2, 1)
    _drain(scheduler)
    # "short" ends at step 3 and frees its slot then; "waiting" is prefilled at step 4,
    # long before the 40-token row ends: no head-of-line blocking.
    assert first_token_step == {"short": 1, "long": 1, "waiting": 4}


def test_each_row_keeps_its_own_settings_in_one_batch(sharp, unbatched) -> None:
    scheduler = _scheduler(sharp, slots=3)
    greedy = scheduler.submit(_prepared(sharp, PROMPTS[0], max_new_tokens=12), _ignore)
    sampled = scheduler.submit(_prepared(sharp, PROMPTS[1], max_new_tokens=12, do_sample=True,
                                         temperature=1.5, top_k=20, seed=7), _ignore)
    penalized = scheduler.submit(_prepared(sharp, PROMPTS[3], max_new_tokens=12, repetition_penalty=50.0),
                                 _ignore)
    _drain(scheduler)
    assert greedy.state.tokens == unbatched(PROMPTS[0], 12)
    assert sampled.state.seed == 7 and sampled.state.tokens != unbatched(PROMPTS[1], 12)
    context = list(penalized.state.prepared.input_ids)
    assert len(set(penalized.state.tokens)) == 12 and not set(penalized.state.tokens) & set(context)


def test_a_seeded_row_draws_the_same_tokens_whatever_its_batch_mates(sharp) -> None:
    params = dict(max_new_tokens=15, do_sample=True, temperature=1.3, top_p=0.9, seed=1234)

    def seeded_tokens(mates: list[str], slots: int) -> list[int]:
        scheduler = _scheduler(sharp, slots)
        for index, mate in enumerate(mates):
            scheduler.submit(_prepared(sharp, mate, max_new_tokens=5 + index, do_sample=True, seed=index), _ignore)
        row = scheduler.submit(_prepared(sharp, PROMPTS[1], **params), _ignore)
        _drain(scheduler)
        return row.state.tokens

    alone = seeded_tokens([], 1)
    assert seeded_tokens(PROMPTS[2:5], 4) == alone
    assert seeded_tokens(PROMPTS[:2], 2) == alone  # admitted late, after a mate finished
    assert len(set(alone)) > 1


def test_stop_and_eos_end_only_their_row(sharp, unbatched) -> None:
    tokenizer = sharp[1]
    full = unbatched(PROMPTS[0], 10)
    stop = tokenizer.decode(full[:4])[-3:]
    scheduler = _scheduler(sharp, slots=2)
    stopped = scheduler.submit(_prepared(sharp, PROMPTS[0], max_new_tokens=10, stop=(stop,)), _ignore)
    other = scheduler.submit(_prepared(sharp, PROMPTS[1], max_new_tokens=10), _ignore)
    _drain(scheduler)
    assert stopped.state.finish_reason == "stop_sequence" and stopped.state.decoder.text.endswith(stop)
    assert stopped.state.tokens == full[:len(stopped.state.tokens)] and len(stopped.state.tokens) < 10
    assert other.state.tokens == unbatched(PROMPTS[1], 10)


def test_cancelling_frees_the_slot_at_the_next_step(sharp, unbatched) -> None:
    scheduler = _scheduler(sharp, slots=1)
    seen: list[int] = []

    def leaves_after_two(token_id: int, text: str, final) -> bool:
        seen.append(token_id)
        return len(seen) < 2

    leaving = scheduler.submit(_prepared(sharp, PROMPTS[0], max_new_tokens=30), leaves_after_two)
    waiting = scheduler.submit(_prepared(sharp, PROMPTS[1], max_new_tokens=6), _ignore)
    scheduler.step()
    scheduler.step()
    assert leaving.state.finish_reason == CANCELLED and leaving.finished.is_set() and len(seen) == 2
    scheduler.step()  # the freed slot takes the waiting row at once
    assert (scheduler.active, scheduler.waiting) == (1, 0) and len(waiting.state.tokens) == 1
    _drain(scheduler)
    assert waiting.state.tokens == unbatched(PROMPTS[1], 6)
    assert scheduler.stats.cancelled == 1


def test_a_row_cancelled_while_waiting_is_never_run(sharp) -> None:
    scheduler = _scheduler(sharp, slots=1)
    running = scheduler.submit(_prepared(sharp, PROMPTS[0], max_new_tokens=4), _ignore)
    queued = scheduler.submit(_prepared(sharp, PROMPTS[1], max_new_tokens=4), _ignore)
    scheduler.step()
    scheduler.cancel(queued)
    _drain(scheduler)
    assert queued.state.tokens == [] and queued.state.finish_reason == CANCELLED
    assert running.state.finish_reason == "length" and scheduler.stats.admitted == 1


def test_reset_ends_every_row(sharp) -> None:
    scheduler = _scheduler(sharp, slots=1)
    rows = [scheduler.submit(_prepared(sharp, p, max_new_tokens=20), _ignore) for p in PROMPTS[:3]]
    scheduler.step()
    scheduler.reset()
    assert scheduler.step() is False
    assert all(row.finished.is_set() and row.state.finish_reason == CANCELLED for row in rows)
    after = scheduler.submit(_prepared(sharp, PROMPTS[4], max_new_tokens=3), _ignore)
    _drain(scheduler)
    assert after.state.finish_reason == "length"


def test_a_failed_step_fails_every_row_and_frees_the_slots(sharp, unbatched, monkeypatch) -> None:
    scheduler = _scheduler(sharp, slots=2)
    rows = [scheduler.submit(_prepared(sharp, p, max_new_tokens=20), _ignore) for p in PROMPTS[:3]]
    scheduler.step()
    scheduler.step()

    def device_lost(appended):
        raise RuntimeError("device lost")

    monkeypatch.setattr(scheduler.batch, "step", device_lost)
    with pytest.raises(RuntimeError, match="device lost"):
        scheduler.step()
    assert all(isinstance(row.error, RuntimeError) and row.finished.is_set() for row in rows)
    assert (scheduler.active, scheduler.waiting) == (0, 0)
    monkeypatch.undo()  # the device is back: the batch starts empty and serves exactly again
    after = scheduler.submit(_prepared(sharp, PROMPTS[4], max_new_tokens=5), _ignore)
    _drain(scheduler)
    assert after.error is None and after.state.tokens == unbatched(PROMPTS[4], 5)


def test_concurrent_callers_share_the_batch(sharp_gptj: Path, unbatched) -> None:
    from inf2_serving.config import ServingConfig
    from inf2_serving.handler import load_engine
    from inf2_serving.scheduler import RollingEngine

    engine = load_engine(ServingConfig.from_properties(
        {"model_dir": str(sharp_gptj), "backend": "cpu", "batch_size": "2", "rolling_batch": "auto"}))
    assert isinstance(engine, RollingEngine)
    results: dict[int, list[int]] = {}

    def call(index: int) -> None:
        (completion,) = engine.run([engine.prepare(PROMPTS[index], GenerationParams(max_new_tokens=8))])
        results[index] = list(completion.token_ids)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(PROMPTS))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert results == {i: unbatched(p, 8) for i, p in enumerate(PROMPTS)}
    assert engine.scheduler.stats.admitted == len(PROMPTS) and engine.scheduler.active == 0


@pytest.fixture(scope="module")
def rolling_handler(tmp_path_factory: pytest.TempPathFactory, sharp_gptj: Path):
    """A handler over the sharp model with the rolling batch on (2 slots)."""
    from inf2_deploy.local.server import load_artifact_properties
    from inf2_serving.handler import ModelHandler
    from support.artifacts import write_artifact

    folder = write_artifact(tmp_path_factory.mktemp("artifacts") / "sharp-rolling", sharp_gptj, backend="cpu",
                            n_positions="128", dtype="fp32", batch_size="2", rolling_batch="auto")
    handler = ModelHandler()
    handler.initialize(load_artifact_properties(folder))
    return handler


def test_the_handler_answers_through_the_scheduler(rolling_handler, unbatched, sharp) -> None:
    from inf2_serving.schema import parse_request

    tokenizer = sharp[1]
    request = parse_request({"inputs": PROMPTS[:3], "parameters": {"max_new_tokens": 6}})
    before = rolling_handler.engine.scheduler.stats.admitted
    body = rolling_handler.generate(request)
    assert [item["generated_text"] for item in body] == [tokenizer.decode(unbatched(p, 6)) for p in PROMPTS[:3]]
    assert rolling_handler.engine.scheduler.stats.admitted == before + 3


def test_closing_a_stream_cancels_its_row(rolling_handler) -> None:
    from inf2_serving.schema import parse_request

    scheduler = rolling_handler.engine.scheduler
    cancelled = scheduler.stats.cancelled
    lines = rolling_handler.stream(parse_request({"inputs": PROMPTS[0], "stream": True,
                                                  "parameters": {"max_new_tokens": 100}}))
    first = next(lines)
    lines.close()
    assert "generated_text" not in first
    follow_up = rolling_handler.generate(parse_request({"inputs": PROMPTS[1], "parameters": {"max_new_tokens": 2}}))
    assert follow_up["generated_text"]
    assert scheduler.stats.cancelled == cancelled + 1 and scheduler.active == 0
