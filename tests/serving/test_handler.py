"""The handler core on the CPU backend: readiness, responses, streaming."""
from __future__ import annotations

import pytest
from inf2_serving.config import ConfigError
from inf2_serving.handler import HandlerNotReady, ModelHandler, ReadinessState
from inf2_serving.schema import InvalidRequest, parse_request


def test_readiness_moves_from_not_ready_to_ready(artifact) -> None:
    from inf2_deploy.local.server import load_artifact_properties

    handler = ModelHandler()
    assert handler.state is ReadinessState.NOT_READY
    with pytest.raises(HandlerNotReady):
        handler.generate(parse_request({"inputs": "Hi"}))
    handler.initialize(load_artifact_properties(artifact))
    assert handler.state is ReadinessState.READY
    engine = handler.engine
    handler.initialize({})  # a second call is a no-op, even with other properties
    assert handler.engine is engine and handler.config.batch_size == 4


def test_failed_initialization_is_reported_and_sticks(tmp_path) -> None:
    handler = ModelHandler()
    with pytest.raises(ConfigError, match="dtype"):
        handler.initialize({"model_dir": str(tmp_path), "dtype": "int3"})
    assert handler.state is ReadinessState.FAILED and "dtype" in handler.error
    with pytest.raises(HandlerNotReady, match="failed earlier"):
        handler.initialize({"model_dir": str(tmp_path)})


def test_generate_matches_transformers_greedy(cpu_handler, reference) -> None:
    body = cpu_handler.generate(parse_request({"inputs": "The capital of France is",
                                               "parameters": {"max_new_tokens": 10, "details": True}}))
    assert body["generated_text"] == reference("The capital of France is", 10)
    assert body["details"] == {"finish_reason": "length", "generated_tokens": 10, "prompt_tokens": 5,
                               "seed": None}


def test_list_inputs_give_a_list_in_order(cpu_handler, reference) -> None:
    prompts = ["Hello world, my name is", "The capital of France is", "A"]
    body = cpu_handler.generate(parse_request({"inputs": prompts, "parameters": {"max_new_tokens": 5,
                                                                                 "return_full_text": True}}))
    assert [b["generated_text"] for b in body] == [p + reference(p, 5) for p in prompts]


def test_generate_many_isolates_invalid_requests(cpu_handler, reference) -> None:
    good = parse_request({"inputs": "Good morning", "parameters": {"max_new_tokens": 3}})
    too_long = parse_request({"inputs": "word" + " word" * 126, "parameters": {"max_new_tokens": 3}})
    answers = cpu_handler.generate_many([good, too_long, good])
    assert answers[0] == answers[2] == {"generated_text": reference("Good morning", 3)}
    assert isinstance(answers[1], InvalidRequest) and "n_positions 128" in str(answers[1])


def test_stream_lines_join_to_the_final_text(cpu_handler, reference) -> None:
    request = parse_request({"inputs": "Once upon a time", "stream": True,
                             "parameters": {"max_new_tokens": 9, "details": True}})
    lines = list(cpu_handler.stream(request))
    assert len(lines) == 9
    assert all(set(line["token"]) == {"id", "text"} for line in lines)
    assert all("generated_text" not in line for line in lines[:-1])
    final = lines[-1]
    assert final["generated_text"] == "".join(line["token"]["text"] for line in lines)
    assert final["generated_text"] == reference("Once upon a time", 9)
    assert final["details"]["generated_tokens"] == 9


def test_stream_validates_before_returning(cpu_handler) -> None:
    with pytest.raises(InvalidRequest, match="n_positions"):
        cpu_handler.stream(parse_request({"inputs": "word" * 200, "stream": True}))


def test_closing_a_stream_early_stops_generation(cpu_handler) -> None:
    request = parse_request({"inputs": "Count", "stream": True, "parameters": {"max_new_tokens": 60}})
    lines = cpu_handler.stream(request)
    assert "token" in next(lines)
    lines.close()
    # The engine is free again: a following request completes normally.
    body = cpu_handler.generate(parse_request({"inputs": "Count", "parameters": {"max_new_tokens": 2}}))
    assert isinstance(body["generated_text"], str)
