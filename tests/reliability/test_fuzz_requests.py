"""Fuzzed requests: the parser, the DJL handler and the local server never answer 5xx or hang.

Every answer must be a valid LMI response or a 4xx JSON error naming the problem,
and the server must still be healthy afterwards. Example counts are fixed (and
recorded in docs/reliability.md) so that a run is repeatable in time.
"""
from __future__ import annotations

import json
import math
from typing import Any

import pytest
from fuzz_budget import examples
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from inf2_serving.schema import GenerationRequest, InvalidRequest, parse_body, parse_request
from support import standin_packages

PARSER_EXAMPLES = examples(300)
HANDLER_EXAMPLES = examples(120)
HTTP_EXAMPLES = examples(150)
HTTP_BYTES_EXAMPLES = examples(100)
# Bodies that once got a 500: a lone surrogate, escaped and as raw UTF-8 bytes (surrogatepass).
SURROGATE_BODIES = (b'{"inputs": "\\ud800"}', b'{"inputs": "\xed\xa0\x80"}')

PARAMETER_NAMES = ("max_new_tokens", "temperature", "top_k", "top_p", "do_sample", "repetition_penalty",
                   "stop", "seed", "return_full_text", "details")

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**300), max_value=2**300)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from([0, 1, -1, 0.0, 5e-324, 1e-300, 1e300, 2**63, 2**64, 0.5, 1.0])
    | st.text(max_size=20)
)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=10,
)
# Mostly small generations so that valid requests stay cheap; large values are rejected before generating.
parameter_values = st.one_of(st.integers(min_value=-3, max_value=12), st.floats(min_value=-2, max_value=3), json_values)
parameters = st.dictionaries(st.sampled_from(PARAMETER_NAMES + ("bogus", "")), parameter_values, max_size=5)
requests = st.fixed_dictionaries(
    {},
    optional={
        "inputs": st.text(max_size=30) | st.lists(st.text(max_size=10), max_size=3) | json_values,
        "parameters": parameters | json_values,
        "stream": st.booleans() | json_values,
        "extra": json_values,
    },
)
# Well-formed requests with edge values, so that generation itself runs (sampling, stops, streams).
valid_requests = st.fixed_dictionaries(
    {
        "inputs": st.text(min_size=1, max_size=30).filter(str.strip),
        "parameters": st.fixed_dictionaries({"max_new_tokens": st.integers(1, 6)}, optional={
            "temperature": st.sampled_from([0, 1e-6, 1e-5, 0.7, 1, 50, 1e30]) | st.floats(0, 100),
            "top_k": st.integers(0, 10**6),
            "top_p": st.floats(1e-300, 1),
            "do_sample": st.booleans(),
            "repetition_penalty": st.floats(0.01, 100),
            "stop": st.lists(st.text(min_size=1, max_size=3), max_size=3),
            "seed": st.integers(0, 2**63 - 1),
            "return_full_text": st.booleans(),
            "details": st.booleans(),
        }),
    },
    optional={"stream": st.booleans()},
)
# What a client may send: request-shaped JSON (NaN and Infinity written as JS literals), any JSON, or bytes.
bodies = st.one_of(
    valid_requests.map(lambda r: json.dumps(r).encode()),
    requests.map(lambda r: json.dumps(r, allow_nan=True).encode()),
    json_values.map(lambda v: json.dumps(v, allow_nan=True).encode()),
    st.binary(max_size=200),
    st.text(max_size=100).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.sampled_from([b"", b"{", b"[" * 100_000, b'{"inputs": "\xff\xfe"}', b'{"inputs": "a"}' * 2,
                     b'\xef\xbb\xbf{"inputs": "a"}', b'{"inputs": "a", "parameters": {"seed": 1e400}}']),
)


def _check_request(request: GenerationRequest) -> None:
    """Invariants of anything the parser accepts."""
    assert request.prompts and all(isinstance(p, str) and p.strip() for p in request.prompts)
    params = request.params
    for value in (params.temperature, params.top_p, params.repetition_penalty):
        assert value is None or math.isfinite(value)
    assert isinstance(params.max_new_tokens, int) and params.max_new_tokens >= 1
    assert not (request.stream and request.is_list)


@settings(max_examples=PARSER_EXAMPLES, deadline=None)
@given(body=bodies)
@example(body=SURROGATE_BODIES[0])
@example(body=SURROGATE_BODIES[1])
def test_parse_body_accepts_or_raises_invalid_request(body: bytes) -> None:
    try:
        request = parse_body(body)
    except InvalidRequest as exc:
        event("rejected")
        assert 400 <= exc.code < 500
        assert str(exc)
        return
    _check_request(request)


@settings(max_examples=PARSER_EXAMPLES, deadline=None)
@given(payload=requests | json_values)
def test_parse_request_on_decoded_values(payload: Any) -> None:
    try:
        request = parse_request(payload)
    except InvalidRequest as exc:
        assert 400 <= exc.code < 500
        if exc.field in PARAMETER_NAMES:
            assert exc.field in str(exc)
        return
    _check_request(request)


def test_deep_nesting_and_non_json_numbers_are_400() -> None:
    for body in (b"[" * 200_000, b'{"inputs": "a", "parameters": {"temperature": NaN}}',
                 b'{"inputs": "a", "parameters": {"temperature": 1e400}}',
                 b'{"inputs": "a", "parameters": {"temperature": ' + b"9" * 400 + b"}}"):
        with pytest.raises(InvalidRequest) as info:
            parse_body(body)
        assert info.value.code == 400


# ---------------------------------------------------------------- DJL handler


def _djl_input(bodies: list[bytes]) -> Any:
    """A ``djl_python.inputs.Input`` as DJL's front end builds it (one request, or a batch).

    Only the start-up call carries the model properties; a request's properties are its headers.
    """
    from djl_python.inputs import Input

    item = Input()
    if len(bodies) == 1:
        item.properties = {"content-type": "application/json"}
        item.content.add("data", bodies[0])
        return item
    item.properties = {"batch_size": str(len(bodies))}
    for index, body in enumerate(bodies):
        item.properties[f"batch_{index:03d}_content-type"] = "application/json"
        item.content.add(f"batch_{index:03d}_data", body)
    return item


def _check_json_answer(data: bytes) -> Any:
    answer = json.loads(data)
    if isinstance(answer, dict) and "error" in answer:
        assert 400 <= answer["code"] < 500, answer
    else:
        items = answer if isinstance(answer, list) else [answer]
        assert all(isinstance(item["generated_text"], str) for item in items), answer
    return answer


@pytest.fixture(scope="module")
def djl_handle(cpu_artifact):  # noqa: ANN001, ANN201
    from inf2_deploy.local.server import load_artifact_properties
    from inf2_serving import djl

    with standin_packages.on_path():  # DJL's djl_python exists only in the container
        from djl_python.inputs import Input

        properties = load_artifact_properties(cpu_artifact, backend="cpu")
        warmup = Input()
        warmup.properties = dict(properties)
        assert djl.handle(warmup) is None  # DJL's empty start-up call loads the model
        yield lambda bodies: djl.handle(_djl_input(bodies))


@settings(max_examples=HANDLER_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=st.lists(bodies, min_size=1, max_size=3))
@example(batch=list(SURROGATE_BODIES))
def test_djl_handle_answers_every_input(djl_handle, batch: list[bytes]) -> None:  # noqa: ANN001
    output = djl_handle(batch)
    event(f"DJL {output.code}, batch of {len(batch)}")
    assert output.code == 200 or 400 <= output.code < 500, output.code
    if output.stream_content is not None:
        lines = output.stream_bytes().decode("utf-8").splitlines()
        assert lines and all("token" in json.loads(line) for line in lines)
        assert "generated_text" in json.loads(lines[-1])
        return
    if len(batch) == 1:
        _check_json_answer(bytes(output.content.value_at(0)))
    else:
        assert output.content.get_keys() == [f"batch_{i}." for i in range(len(batch))]
        for index, data in enumerate(output.content.get_values()):
            if output.properties.get(f"batch_{index}_Content-Type") == "application/jsonlines":
                lines = [json.loads(line) for line in bytes(data).decode("utf-8").splitlines()]
                assert lines and all("token" in line for line in lines) and "generated_text" in lines[-1]
            else:
                _check_json_answer(bytes(data))


def test_djl_handle_still_serves_after_fuzz(djl_handle) -> None:  # noqa: ANN001
    output = djl_handle([b'{"inputs": "Hello", "parameters": {"max_new_tokens": 3}}'])
    assert output.code == 200
    assert isinstance(json.loads(bytes(output.content.value_at(0)))["generated_text"], str)


@pytest.fixture(scope="module")
def djl_rolling(rolling_artifact):  # noqa: ANN001, ANN201
    """``inf2_serving.djl`` over a rolling handler, driven by a mirror of DJL's Java rolling-batch loop."""
    from inf2_deploy.local.server import load_artifact_properties
    from inf2_serving import djl
    from inf2_serving.djl_rolling import DjlRollingBatch
    from inf2_serving.handler import ModelHandler

    handler = ModelHandler()
    handler.initialize(load_artifact_properties(rolling_artifact, backend="cpu"))
    with standin_packages.on_path(), pytest.MonkeyPatch.context() as patch:
        patch.setattr(djl, "handler", handler)
        patch.setattr(djl, "rolling", DjlRollingBatch())
        yield djl


def _check_rolling_answer(request: Any) -> None:
    """A request of DJL's loop got its last chunk, and a 200 answer or a 400 error body (424 would be a
    failed step: the handler's backend-failure code, which bad input must never cause)."""
    assert request.closed and request.code in (200, 400), (request.code, request.body)
    event(f"rolling DJL {request.code}")
    if request.code != 200:
        assert json.loads(request.body)["code"] == request.code
    elif request.properties.get("Content-Type") == "application/jsonlines":
        lines = [json.loads(line) for line in request.body.decode("utf-8").splitlines()]
        assert lines and all("token" in line for line in lines) and "generated_text" in lines[-1]
    else:
        _check_json_answer(request.body)


@settings(max_examples=HANDLER_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=st.lists(bodies, min_size=1, max_size=3))
@example(batch=list(SURROGATE_BODIES))
def test_djl_rolling_loop_answers_every_request(djl_rolling, batch: list[bytes]) -> None:  # noqa: ANN001
    from support.djl_loop import RollingBatchLoop

    loop = RollingBatchLoop(djl_rolling.handle)
    good = loop.add_input({"inputs": "Hello", "stream": True, "parameters": {"max_new_tokens": 4}})
    loop.step()  # the fuzzed requests join a running stream
    fuzzed = [loop.add_input(body) for body in batch]
    loop.run()
    for request in [good, *fuzzed]:
        _check_rolling_answer(request)
    assert good.code == 200 and len(good.body.decode("utf-8").splitlines()) == 4


# ---------------------------------------------------------------- local server over HTTP


@pytest.fixture(scope="module")
def http(live_server):  # noqa: ANN001, ANN201
    """An httpx client (30 s timeout: a hang fails the test) to uvicorn on 127.0.0.1."""
    return live_server[1]


def _check_http(response: Any) -> None:
    event(f"HTTP {response.status_code}")
    assert response.status_code < 500, (response.status_code, response.text[:300])
    if response.status_code >= 400:
        body = response.json()
        assert body["code"] == response.status_code and body["error"]
        return
    assert response.status_code == 200
    if response.headers["content-type"].startswith("application/jsonlines"):
        lines = [json.loads(line) for line in response.text.splitlines()]
        assert lines and "error" not in lines[-1] and "generated_text" in lines[-1], lines[-1:]
    else:
        _check_json_answer(response.content)


@settings(max_examples=HTTP_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=bodies, by_name=st.booleans())
@example(body=SURROGATE_BODIES[0], by_name=False)
@example(body=SURROGATE_BODIES[1], by_name=True)
def test_http_invocations_never_5xx(http, live_server, body: bytes, by_name: bool) -> None:  # noqa: ANN001
    path = f"/predictions/{live_server[2].name}" if by_name else "/invocations"
    _check_http(http.post(path, content=body, headers={"content-type": "application/json"}))


@settings(max_examples=HTTP_BYTES_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=st.binary(max_size=2000), content_type=st.sampled_from(["application/json", "text/plain",
                                                                     "application/octet-stream", ""]))
def test_http_raw_bytes_never_5xx(http, body: bytes, content_type: str) -> None:  # noqa: ANN001
    _check_http(http.post("/invocations", content=body, headers={"content-type": content_type}))


def test_http_body_over_limit_is_413(http) -> None:  # noqa: ANN001
    from inf2_deploy.local.server import DEFAULT_BODY_LIMIT

    prompt = "hello " * (DEFAULT_BODY_LIMIT // 6 + 10)
    response = http.post("/invocations", content=json.dumps({"inputs": prompt}))
    assert response.status_code == 413 and response.json()["code"] == 413

    def chunks():  # no Content-Length: the limit must hold while streaming the body in
        for _ in range(DEFAULT_BODY_LIMIT // 65536 + 2):
            yield b"x" * 65536

    response = http.post("/invocations", content=chunks())
    assert response.status_code == 413


def test_http_huge_prompt_under_limit_is_400_quickly(http) -> None:  # noqa: ANN001
    response = http.post("/invocations", content=json.dumps({"inputs": "hello " * 150_000}))
    assert response.status_code == 400 and "n_positions" in response.json()["error"]


def test_http_healthy_after_fuzz(http) -> None:  # noqa: ANN001
    assert http.get("/ping").status_code == 200
    response = http.post("/invocations", json={"inputs": "Hello", "parameters": {"max_new_tokens": 4}})
    assert response.status_code == 200 and isinstance(response.json()["generated_text"], str)
    response = http.post("/invocations", json={"inputs": "Hello", "stream": True,
                                               "parameters": {"max_new_tokens": 4}})
    assert response.status_code == 200 and "generated_text" in response.text.splitlines()[-1]
