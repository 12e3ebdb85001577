"""Engine rules on the tiny GPT-J (CPU): decoding, limits, stops, batching and padding."""
from __future__ import annotations

import pytest
from fuzz_budget import examples
from hypothesis import given, settings
from hypothesis import strategies as st
from inf2_serving.engine import IncrementalDecoder
from inf2_serving.schema import GenerationParams, InvalidRequest


@pytest.fixture(scope="module")
def tokenizer(cpu_handler):
    return cpu_handler.engine.tokenizer


def test_decoder_holds_back_split_characters(tokenizer) -> None:
    ids = tokenizer("é😀")["input_ids"]
    assert len(ids) > 2  # byte-level BPE splits the emoji across tokens
    decoder = IncrementalDecoder(tokenizer)
    deltas = [decoder.push(i) for i in ids]
    assert "\ufffd" not in "".join(deltas)
    assert "" in deltas  # something was held back until its character was complete
    assert "".join(deltas) + decoder.flush() == "é😀"


@settings(max_examples=examples(40), deadline=None)
@given(st.text(min_size=1, max_size=12))
def test_decoder_deltas_join_to_the_full_decode(tokenizer, text: str) -> None:
    ids = tokenizer(text)["input_ids"]
    decoder = IncrementalDecoder(tokenizer)
    deltas = [decoder.push(i) for i in ids]
    joined = "".join(deltas) + decoder.flush()
    assert joined == tokenizer.decode(ids, skip_special_tokens=True)
    for delta in deltas:
        assert not delta.endswith("\ufffd") or "\ufffd" in text


def test_flush_of_an_incomplete_character_gives_a_replacement(tokenizer) -> None:
    ids = tokenizer("😀")["input_ids"]
    decoder = IncrementalDecoder(tokenizer)
    assert decoder.push(ids[0]) == ""
    assert decoder.flush() == "\ufffd"


def test_prompt_too_long_names_both_numbers(cpu_handler) -> None:
    engine = cpu_handler.engine
    prompt = "word" + " word" * 119  # 120 tokens; n_positions is 128
    with pytest.raises(InvalidRequest) as info:
        engine.prepare(prompt, GenerationParams(max_new_tokens=10))
    message = str(info.value)
    assert info.value.code == 400
    assert "120 tokens" in message and "max_new_tokens is 10" in message and "n_positions 128" in message
    assert len(engine.prepare(prompt, GenerationParams(max_new_tokens=8)).input_ids) == 120


def test_stop_sequence_ends_generation_and_is_kept(cpu_handler, reference) -> None:
    engine = cpu_handler.engine
    full = reference("The capital of France is", 12)
    stop = full.split()[3]
    prepared = engine.prepare("The capital of France is", GenerationParams(max_new_tokens=12, stop=(stop,)))
    (completion,) = engine.run([prepared])
    assert completion.finish_reason == "stop_sequence"
    assert completion.text.endswith(stop) and full.startswith(completion.text)
    assert len(completion.token_ids) < 12


def test_eos_ends_a_row_early(cpu_handler, monkeypatch) -> None:
    engine = cpu_handler.engine
    first = engine.run([engine.prepare("Hello", GenerationParams(max_new_tokens=3))])[0].token_ids[0]
    monkeypatch.setattr(engine, "eos_token_id", first)  # make the first greedy token the "eos"
    (completion,) = engine.run([engine.prepare("Hello", GenerationParams(max_new_tokens=5))])
    assert completion.finish_reason == "eos_token"
    assert completion.token_ids == (first,) and completion.text == ""


def test_lists_larger_than_batch_size_are_split(cpu_handler, monkeypatch, reference) -> None:
    engine = cpu_handler.engine
    shapes = []
    original = engine.backend.generate

    def spy(input_ids, *args):
        shapes.append(tuple(input_ids.shape))
        return original(input_ids, *args)

    monkeypatch.setattr(engine.backend, "generate", spy)
    prompts = [f"Number {i} is" for i in range(6)]
    params = GenerationParams(max_new_tokens=4)
    completions = engine.run([engine.prepare(p, params) for p in prompts])
    assert [rows for rows, _ in shapes] == [4, 2]  # batch_size is 4
    assert [c.text for c in completions] == [reference(p, 4) for p in prompts]


def test_per_row_max_new_tokens_in_one_batch(cpu_handler, reference) -> None:
    engine = cpu_handler.engine
    short = engine.prepare("One two", GenerationParams(max_new_tokens=2))
    long = engine.prepare("Three four five", GenerationParams(max_new_tokens=6))
    a, b = engine.run([short, long])
    assert (len(a.token_ids), len(b.token_ids)) == (2, 6)
    assert (a.text, b.text) == (reference("One two", 2), reference("Three four five", 6))


def test_sampling_is_reproducible_with_a_seed(cpu_handler) -> None:
    engine = cpu_handler.engine
    params = GenerationParams(max_new_tokens=8, do_sample=True, seed=7)
    first = engine.run([engine.prepare("Once upon a time", params)])[0]
    again = engine.run([engine.prepare("Once upon a time", params)])[0]
    other = engine.run([engine.prepare("Once upon a time", GenerationParams(max_new_tokens=8, do_sample=True,
                                                                              seed=8))])[0]
    assert first == again and first.seed == 7
    assert other.token_ids != first.token_ids


def test_sampling_without_a_seed_reports_the_one_used(cpu_handler) -> None:
    engine = cpu_handler.engine
    params = GenerationParams(max_new_tokens=6, do_sample=True, top_k=5, top_p=0.9, temperature=0.7)
    completion = engine.run([engine.prepare("Hello there", params)])[0]
    replay = GenerationParams(max_new_tokens=6, do_sample=True, top_k=5, top_p=0.9, temperature=0.7,
                              seed=completion.seed)
    assert isinstance(completion.seed, int)
    assert engine.run([engine.prepare("Hello there", replay)])[0].token_ids == completion.token_ids
