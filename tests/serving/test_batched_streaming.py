"""Streaming and plain requests share the dynamic batcher: batched together, one generation at a time,
each stream's lines delivered while its batch runs."""
from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from inf2_serving.schema import InvalidRequest, parse_request


@dataclass
class RunRecord:
    """What the engine saw: prompts per ``Engine.run`` call, when each ended, and the most at once."""

    sizes: list[int] = field(default_factory=list)
    ended_at: list[float] = field(default_factory=list)
    active: int = 0
    max_active: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


@pytest.fixture
def engine_runs(cpu_handler, monkeypatch) -> RunRecord:
    """Wrap the shared engine's ``run`` to record batch sizes and concurrent generations."""
    engine = cpu_handler.engine
    original = engine.run
    record = RunRecord()

    def run(prompts, *args, **kwargs):
        with record.lock:
            record.sizes.append(len(prompts))
            record.active += 1
            record.max_active = max(record.max_active, record.active)
        try:
            return original(prompts, *args, **kwargs)
        finally:
            with record.lock:
                record.active -= 1
                record.ended_at.append(time.monotonic())

    monkeypatch.setattr(engine, "run", run)
    return record


@dataclass
class Streamed:
    lines: list[dict[str, Any]]
    first_line_at: float

    @property
    def joined(self) -> str:
        return "".join(line["token"]["text"] for line in self.lines if "token" in line)


async def _stream(http: httpx.AsyncClient, prompt: str, new_tokens: int) -> Streamed:
    body = {"inputs": prompt, "stream": True, "parameters": {"max_new_tokens": new_tokens}}
    lines, first_line_at = [], 0.0
    async with http.stream("POST", "/invocations", json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/jsonlines")
        async for text in response.aiter_lines():
            if text:
                first_line_at = first_line_at or time.monotonic()
                lines.append(json.loads(text))
    return Streamed(lines, first_line_at)


async def _plain(http: httpx.AsyncClient, prompt: str, new_tokens: int) -> dict[str, Any]:
    body = {"inputs": prompt, "parameters": {"max_new_tokens": new_tokens}}
    response = await http.post("/invocations", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def _gather(live_server: str, *calls) -> list[Any]:
    async def main():
        async with httpx.AsyncClient(base_url=live_server, timeout=60) as http:
            return await asyncio.gather(*(call(http) for call in calls))

    return asyncio.run(main())


def _check_stream(streamed: Streamed, expected: str, new_tokens: int) -> None:
    assert len(streamed.lines) == new_tokens
    assert all("generated_text" not in line for line in streamed.lines[:-1])
    assert streamed.joined == streamed.lines[-1]["generated_text"] == expected


def test_generate_many_streams_lines_and_keeps_them_in_the_slot(cpu_handler, reference) -> None:
    requests = [parse_request(payload) for payload in (
        {"inputs": "Once upon a time", "stream": True, "parameters": {"max_new_tokens": 5}},
        {"inputs": "Hello world", "parameters": {"max_new_tokens": 4}},
        {"inputs": "word" * 200, "stream": True},
        {"inputs": "Good morning", "stream": True, "parameters": {"max_new_tokens": 3}},
    )]
    seen: dict[int, list] = {}
    answers = cpu_handler.generate_many(
        requests, on_line=lambda position, line: seen.setdefault(position, []).append(line))
    assert set(seen) == {0, 3}  # only streaming requests that passed validation have lines
    assert answers[0] == seen[0] and answers[3] == seen[3]
    assert answers[0][-1]["generated_text"] == reference("Once upon a time", 5) and len(answers[0]) == 5
    assert answers[3][-1]["generated_text"] == reference("Good morning", 3)
    assert answers[1] == {"generated_text": reference("Hello world", 4)}
    assert isinstance(answers[2], InvalidRequest)


@pytest.mark.slow
def test_concurrent_streams_share_one_batch_and_stream_live(live_server, engine_runs, reference) -> None:
    prompts = ["Hello world, my name is", "The capital of France is", "One two three", "Good"]
    results = _gather(live_server, *(lambda http, p=p: _stream(http, p, 100) for p in prompts))
    assert engine_runs.sizes == [4]  # batch_size 4: the four streams ran as one batch
    for prompt, streamed in zip(prompts, results, strict=True):
        _check_stream(streamed, reference(prompt, 100), 100)
        # Live: each stream's first line reached the client before its batch finished generating.
        assert streamed.first_line_at < engine_runs.ended_at[0]


@pytest.mark.slow
def test_streaming_and_plain_requests_share_a_batch(live_server, engine_runs, reference) -> None:
    results = _gather(live_server,
                      lambda http: _stream(http, "Once upon a time", 7),
                      lambda http: _plain(http, "The capital of France is", 6),
                      lambda http: _stream(http, "Hello world", 5),
                      lambda http: _plain(http, "One two three", 4))
    assert engine_runs.sizes == [4]
    _check_stream(results[0], reference("Once upon a time", 7), 7)
    assert results[1] == {"generated_text": reference("The capital of France is", 6)}
    _check_stream(results[2], reference("Hello world", 5), 5)
    assert results[3] == {"generated_text": reference("One two three", 4)}


@pytest.mark.slow
def test_the_model_never_runs_two_generations_at_once(live_server, engine_runs, reference) -> None:
    streams = [(f"Story number {i} begins", 6 + 3 * i) for i in range(6)]
    plain = [(f"Question {i}:", 5 + i) for i in range(4)]

    async def invalid(http):
        response = await http.post("/invocations", json={"inputs": "word" * 200, "stream": True})
        return response.status_code, response.json()

    calls = [lambda http, p=p, n=n: _stream(http, p, n) for p, n in streams]
    calls += [lambda http, p=p, n=n: _plain(http, p, n) for p, n in plain]
    results = _gather(live_server, *calls, invalid)
    assert engine_runs.max_active == 1
    assert sum(engine_runs.sizes) == len(streams) + len(plain) and max(engine_runs.sizes) <= 4
    for (prompt, new_tokens), streamed in zip(streams, results[:6], strict=True):
        _check_stream(streamed, reference(prompt, new_tokens), new_tokens)
    for (prompt, new_tokens), body in zip(plain, results[6:10], strict=True):
        assert body == {"generated_text": reference(prompt, new_tokens)}
    status, body = results[10]  # failed validation in its batch, yet a 400 before any line
    assert status == 400 and "n_positions" in body["error"]


@pytest.mark.slow
def test_a_client_leaving_mid_stream_does_not_hold_up_later_requests(
        live_server, engine_runs, reference, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="inf2_serving")

    async def leave_early(http):
        body = {"inputs": "Count to a hundred", "stream": True, "parameters": {"max_new_tokens": 100}}
        async with http.stream("POST", "/invocations", json=body) as response:
            lines = response.aiter_lines()
            first = await lines.__anext__()
        return json.loads(first)  # leaving the block closes the connection mid-stream

    async def main():
        async with httpx.AsyncClient(base_url=live_server, timeout=60) as http:
            assert "token" in await leave_early(http)
            started = time.monotonic()
            later = await asyncio.gather(_stream(http, "Once upon a time", 6), _plain(http, "Hello world", 4))
            return later, time.monotonic() - started

    (streamed, plain), elapsed = asyncio.run(main())
    assert elapsed < 10
    _check_stream(streamed, reference("Once upon a time", 6), 6)
    assert plain == {"generated_text": reference("Hello world", 4)}
    assert engine_runs.sizes == [1, 2] and engine_runs.max_active == 1
    assert not [record for record in caplog.records if record.name.startswith("inf2_serving")]


@pytest.mark.slow
def test_a_batch_failing_mid_stream_ends_streams_with_an_error_line(
        live_server, cpu_handler, fail_mid_generation) -> None:
    fail_mid_generation(cpu_handler.engine.backend)  # two real steps reach the clients

    async def failing_plain(http):
        response = await http.post("/invocations", json={"inputs": "Hi", "parameters": {"max_new_tokens": 5}})
        return response.status_code, response.json()

    streamed, (status, body) = _gather(live_server, lambda http: _stream(http, "Once upon a time", 8),
                                       failing_plain)
    assert [("token" in line) for line in streamed.lines] == [True, True, False]
    assert streamed.lines[-1] == {"error": "generation failed: device lost", "code": 500}
    assert status == 500 and "device lost" in body["error"]
