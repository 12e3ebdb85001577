"""A stream whose consumer is gone stops generating; the other rows of its batch are unaffected."""
from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import httpx
import pytest
from inf2_deploy.local.batcher import ClientGone, DynamicBatcher
from inf2_serving.engine import CANCELLED
from inf2_serving.schema import GenerationParams, parse_request
from support.servers import post_then_hang_up


def _cancel_after(count: int, index: int = 0):
    """A token callback that gives up on row ``index`` after ``count`` tokens."""
    seen = {}

    def on_token(i: int, token_id: int, text: str, final: Any) -> bool:
        seen[i] = seen.get(i, 0) + 1
        return not (i == index and seen[i] >= count)

    return on_token


def test_a_cancelled_row_stops_and_its_batch_mate_is_unchanged(cpu_handler, record_steps, reference) -> None:
    engine = cpu_handler.engine
    log = record_steps(engine.backend)
    gone = engine.prepare("Count to a hundred", GenerationParams(max_new_tokens=100))
    kept = engine.prepare("The capital of France is", GenerationParams(max_new_tokens=20))
    cancelled, finished = engine.run([gone, kept], on_token=_cancel_after(3))
    assert cancelled.finish_reason == CANCELLED and len(cancelled.token_ids) == 3
    assert finished.finish_reason == "length" and finished.text == reference("The capital of France is", 20)
    assert log.steps == [20]  # the batch ran for the remaining row only, not to 100
    assert [done[0] for _, done in log.runs[0]] == [False, False] + [True] * 18


def test_a_batch_whose_rows_are_all_cancelled_stops_at_once(cpu_handler, record_steps) -> None:
    engine = cpu_handler.engine
    log = record_steps(engine.backend)
    params = GenerationParams(max_new_tokens=100)
    prompts = [engine.prepare(p, params) for p in ("One two three", "Count to a hundred")]
    completions = engine.run(prompts, on_token=lambda *token: False)
    assert [c.finish_reason for c in completions] == [CANCELLED, CANCELLED]
    assert [len(c.token_ids) for c in completions] == [1, 1]
    assert log.steps == [1]


def test_on_line_false_cancels_that_stream_only(cpu_handler, record_steps, reference) -> None:
    log = record_steps(cpu_handler.engine.backend)
    requests = [parse_request(payload) for payload in (
        {"inputs": "Count to a hundred", "stream": True, "parameters": {"max_new_tokens": 100}},
        {"inputs": "Hello world", "parameters": {"max_new_tokens": 10}},
        {"inputs": "Good morning", "stream": True, "parameters": {"max_new_tokens": 12}},
    )]
    seen: dict[int, list] = {}

    def on_line(position: int, line: dict) -> bool:
        seen.setdefault(position, []).append(line)
        return not (position == 0 and len(seen[0]) == 2)  # the first stream's client leaves

    gone, plain, kept = cpu_handler.generate_many(requests, on_line=on_line)
    assert len(seen[0]) == 2 and gone == seen[0]
    assert all("generated_text" not in line for line in gone)
    assert plain == {"generated_text": reference("Hello world", 10)}
    assert len(kept) == 12 and kept[-1]["generated_text"] == reference("Good morning", 12)
    assert log.steps == [12]


def test_the_djl_style_call_without_on_line_is_unaffected(cpu_handler, reference) -> None:
    request = parse_request({"inputs": "Once upon a time", "stream": True, "parameters": {"max_new_tokens": 6}})
    (lines,) = cpu_handler.generate_many([request])
    assert len(lines) == 6 and lines[-1]["generated_text"] == reference("Once upon a time", 6)


def test_the_batcher_drops_a_request_whose_client_left_while_it_waited(cpu_handler, record_steps) -> None:
    log = record_steps(cpu_handler.engine.backend)

    async def gone() -> bool:
        return True

    async def here() -> bool:
        return False

    async def main():
        batcher = DynamicBatcher(cpu_handler, max_delay_s=0.05)
        task = asyncio.get_running_loop().create_task(batcher.run())
        try:
            plain = parse_request({"inputs": "Hello world", "parameters": {"max_new_tokens": 3}})
            stream = parse_request({"inputs": "Hello world", "stream": True, "parameters": {"max_new_tokens": 3}})
            with pytest.raises(ClientGone):
                await batcher.submit(plain, gone)
            with pytest.raises(ClientGone):
                await anext(batcher.stream(stream, gone))
            return await batcher.submit(plain, here)
        finally:
            task.cancel()
            batcher.close()

    assert "generated_text" in asyncio.run(main())
    assert log.steps == [3]  # only the request whose client stayed was generated


# End to end: a real server, its clients over real sockets.

STEP_DELAY_S = 0.05  # per generation step: 200 steps take 10 s, so early stops are plain to see


@pytest.fixture
def slow_steps(long_server, record_steps):
    """The long server's steps, recorded and slowed to ``STEP_DELAY_S`` each."""
    return record_steps(long_server[1].engine.backend, delay=STEP_DELAY_S)


@pytest.fixture
def completions(long_server, monkeypatch) -> list[list[Any]]:
    """Every ``Engine.run`` of the long server: its completions, cancelled ones included."""
    engine = long_server[1].engine
    original = engine.run
    runs: list[list[Any]] = []

    def run(prompts, *args, **kwargs):
        result = original(prompts, *args, **kwargs)
        runs.append(result)
        return result

    monkeypatch.setattr(engine, "run", run)
    return runs


async def _leave_after(http: httpx.AsyncClient, prompt: str, lines: int) -> float:
    """Stream a 200-token answer, read ``lines`` lines, hang up; returns when it hung up."""
    body = {"inputs": prompt, "stream": True, "parameters": {"max_new_tokens": 200}}
    async with http.stream("POST", "/invocations", json=body) as response:
        assert response.status_code == 200
        read = 0
        async for text in response.aiter_lines():
            read += bool(text)
            if read == lines:
                break
    return time.monotonic()  # leaving the block closed the connection mid-stream


async def _stream_text(http: httpx.AsyncClient, prompt: str, new_tokens: int) -> list[dict[str, Any]]:
    body = {"inputs": prompt, "stream": True, "parameters": {"max_new_tokens": new_tokens}}
    async with http.stream("POST", "/invocations", json=body) as response:
        assert response.status_code == 200
        return [json.loads(text) async for text in response.aiter_lines() if text]


async def _timed_plain(http: httpx.AsyncClient, prompt: str, new_tokens: int) -> tuple[dict[str, Any], float]:
    started = time.monotonic()
    response = await http.post("/invocations", json={"inputs": prompt, "parameters": {"max_new_tokens": new_tokens}})
    assert response.status_code == 200, response.text
    return response.json(), time.monotonic() - started


def _steps_after(run: list[tuple[float, list[bool]]], row: int, moment: float) -> int:
    """Steps that ended after ``moment`` before (and including the one where) ``row`` was done."""
    return sum(1 for ended, done in run if ended > moment and not done[row]) + 1


@pytest.mark.slow
def test_a_stream_left_mid_batch_stops_while_its_batch_mate_finishes(
        long_server, slow_steps, completions, reference, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="inf2_serving")
    url, _ = long_server

    async def main():
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            left = asyncio.ensure_future(_leave_after(http, "Count to a hundred", 3))
            kept = asyncio.ensure_future(_stream_text(http, "The capital of France is", 40))
            left_at = await left
            # Sent once the hang-up happened: served as soon as the 40-token row is done.
            plain, waited = await _timed_plain(http, "Hello world", 4)
            return left_at, await kept, plain, waited

    left_at, kept, plain, waited = asyncio.run(main())
    first_batch = completions[0]
    gone = next(c for c in first_batch if c.prompt == "Count to a hundred")
    assert len(first_batch) == 2 and gone.finish_reason == CANCELLED
    assert slow_steps.steps[0] == 40  # the batch ended with its remaining stream, not at 200 tokens
    row = [c.prompt for c in first_batch].index("Count to a hundred")
    assert _steps_after(slow_steps.runs[0], row, left_at) <= 5
    assert len(kept) == 40 and kept[-1]["generated_text"] == reference("The capital of France is", 40)
    assert "".join(line["token"]["text"] for line in kept) == kept[-1]["generated_text"]
    assert plain == {"generated_text": reference("Hello world", 4)}
    assert waited < 40 * STEP_DELAY_S + 3  # at most the rest of the batch, not 160 more steps (8 s)
    assert not [record for record in caplog.records if record.name.startswith("inf2_serving")]


@pytest.mark.slow
def test_a_lone_stream_left_early_frees_the_model(long_server, slow_steps, completions, reference) -> None:
    url, _ = long_server

    async def main():
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            left_at = await _leave_after(http, "Once upon a time", 3)
            plain, waited = await _timed_plain(http, "Hello world", 4)
            return left_at, plain, waited

    left_at, plain, waited = asyncio.run(main())
    (gone,), (answered,) = completions
    assert gone.finish_reason == CANCELLED and len(gone.token_ids) <= 8
    assert slow_steps.steps[0] == len(gone.token_ids) and _steps_after(slow_steps.runs[0], 0, left_at) <= 5
    assert plain == {"generated_text": reference("Hello world", 4)} and answered.finish_reason == "length"
    assert waited < 3  # the model was free: no wait for 200 steps (10 s)


@pytest.mark.slow
def test_requests_whose_clients_left_while_queued_are_not_generated(
        long_server, slow_steps, completions, reference, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="inf2_serving")
    url, _ = long_server

    async def main():
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            busy = asyncio.ensure_future(_timed_plain(http, "The capital of France is", 30))
            while not slow_steps.runs:  # the model is busy with the first request
                await asyncio.sleep(0.02)
            for body in ({"inputs": "Hello world", "parameters": {"max_new_tokens": 5}},
                         {"inputs": "Good morning", "stream": True, "parameters": {"max_new_tokens": 5}}):
                await asyncio.to_thread(post_then_hang_up, url, body, lambda: time.sleep(0.3))
            (first, _), (later, _) = await busy, await _timed_plain(http, "One two three", 4)
            return first, later

    first, later = asyncio.run(main())
    assert first == {"generated_text": reference("The capital of France is", 30)}
    assert later == {"generated_text": reference("One two three", 4)}
    generated = [c.prompt for run in completions for c in run]
    assert generated == ["The capital of France is", "One two three"]  # the two hung-up requests never ran
    assert slow_steps.steps == [30, 4]
    # Both were read and queued (a body lost to the hang-up would have logged an error).
    assert not [record for record in caplog.records if record.name.startswith("inf2_serving")]
