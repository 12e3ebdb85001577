"""Request validation and response shaping of the LMI/TGI schema."""
import pytest
from inf2_serving.schema import (
    Completion,
    GenerationParams,
    InvalidRequest,
    parse_body,
    parse_request,
    response_body,
    stream_line,
)

INVALID = [
    # (body, field the message must name)
    (b"{not json", None),
    (b'["a list"]', None),
    (b"{}", "inputs"),
    (b'{"inputs": 3}', "inputs"),
    (b'{"inputs": []}', "inputs"),
    (b'{"inputs": ["ok", 1]}', "inputs"),
    (b'{"inputs": "   "}', "inputs"),
    (b'{"inputs": "hi", "prompt": "x"}', "prompt"),
    (b'{"inputs": "hi", "parameters": [1]}', "parameters"),
    (b'{"inputs": "hi", "parameters": {"max_tokens": 5}}', "max_tokens"),
    (b'{"inputs": "hi", "parameters": {"max_new_tokens": 0}}', "max_new_tokens"),
    (b'{"inputs": "hi", "parameters": {"max_new_tokens": 2.5}}', "max_new_tokens"),
    (b'{"inputs": "hi", "parameters": {"max_new_tokens": true}}', "max_new_tokens"),
    (b'{"inputs": "hi", "parameters": {"temperature": -0.1}}', "temperature"),
    (b'{"inputs": "hi", "parameters": {"temperature": "hot"}}', "temperature"),
    (b'{"inputs": "hi", "parameters": {"top_p": 0}}', "top_p"),
    (b'{"inputs": "hi", "parameters": {"top_p": 1.5}}', "top_p"),
    (b'{"inputs": "hi", "parameters": {"top_k": -1}}', "top_k"),
    (b'{"inputs": "hi", "parameters": {"repetition_penalty": 0}}', "repetition_penalty"),
    (b'{"inputs": "hi", "parameters": {"seed": -3}}', "seed"),
    (b'{"inputs": "hi", "parameters": {"do_sample": "yes"}}', "do_sample"),
    (b'{"inputs": "hi", "parameters": {"details": 1}}', "details"),
    (b'{"inputs": "hi", "parameters": {"return_full_text": "no"}}', "return_full_text"),
    (b'{"inputs": "hi", "parameters": {"stop": 5}}', "stop"),
    (b'{"inputs": "hi", "parameters": {"stop": [""]}}', "parameters.stop[0]"),
    (b'{"inputs": "hi", "parameters": {"stop": ["ok", 7]}}', "parameters.stop[1]"),
    (b'{"inputs": "hi", "parameters": {"repetition_penalty": 100.5}}', "repetition_penalty"),
    (b'{"inputs": "hi", "parameters": {"seed": 9223372036854775808}}', "seed"),
    (b'{"inputs": "hi", "parameters": {"stop": ["a","b","c","d","e","f","g","h","i"]}}', "stop"),
    (b'{"inputs": "hi", "stream": "yes"}', "stream"),
    (b'{"inputs": ["a", "b"], "stream": true}', "stream"),
]


@pytest.mark.parametrize(("body", "field"), INVALID)
def test_invalid_requests_name_the_field(body: bytes, field: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_body(body)
    assert info.value.code == 400
    assert info.value.field == field
    if field is not None:
        assert field in str(info.value)


def test_defaults_and_full_parameters() -> None:
    assert parse_request({"inputs": "hi"}) == parse_request({"inputs": "hi", "parameters": {}})
    request = parse_request({
        "inputs": ["a", "b"], "stream": False,
        "parameters": {"max_new_tokens": 7, "temperature": 0.5, "top_k": 3, "top_p": 0.9, "do_sample": True,
                       "repetition_penalty": 1.1, "stop": "\n", "seed": 42, "return_full_text": True,
                       "details": True},
    })
    assert request.prompts == ("a", "b") and request.is_list
    assert request.params == GenerationParams(7, 0.5, 3, 0.9, True, 1.1, ("\n",), 42, True, True)
    assert request.params.sampling
    assert not GenerationParams(do_sample=True, temperature=0).sampling


def test_null_parameters_take_defaults() -> None:
    assert parse_request({"inputs": "x", "parameters": {"seed": None, "stop": None}}).params == GenerationParams()


def _completion(text: str = " world") -> Completion:
    return Completion("Hello", text, (995,), "length", 1, None)


def test_response_shapes() -> None:
    plain = parse_request({"inputs": "Hello"})
    assert response_body(plain, [_completion()]) == {"generated_text": " world"}
    full = parse_request({"inputs": ["Hello"], "parameters": {"return_full_text": True, "details": True}})
    assert response_body(full, [_completion()]) == [{
        "generated_text": "Hello world",
        "details": {"finish_reason": "length", "generated_tokens": 1, "prompt_tokens": 1, "seed": None},
    }]


def test_stream_lines() -> None:
    assert stream_line(995, " world") == {"token": {"id": 995, "text": " world"}}
    last = stream_line(995, " world", _completion(), GenerationParams(details=True))
    assert last["generated_text"] == " world" and last["details"]["finish_reason"] == "length"
