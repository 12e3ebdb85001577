"""The local server with the rolling batch (``option.rolling_batch=auto``): each request joins the slot
scheduler at once, and a slot freed by a finished or cancelled row takes the next waiting request at the
next step. Real sockets, the CPU backend and the sharp tiny model; orderings are read from the scheduler."""
from __future__ import annotations

import asyncio
import functools
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from inf2_serving.engine import CANCELLED
from support.artifacts import write_artifact
from support.servers import post_then_hang_up, uvicorn_thread

SLOTS = 2
WAIT_S = 60.0  # an awaited event that does not come within this fails the test; it never passes one
SLOW_STEP_S = 0.02  # per step while a test holds the model back: 300 steps take 6 s, ample to act in
LONG = 300

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def rolling(tmp_path_factory: pytest.TempPathFactory, sharp_gptj: Path):
    """(URL, handler) of a rolling server with 2 slots; its max_batch_delay of 60 s would stall a static one."""
    from inf2_deploy.local.server import create_app, load_artifact_properties
    from inf2_serving.handler import ModelHandler

    artifact = write_artifact(
        tmp_path_factory.mktemp("artifacts") / "sharp-rolling", sharp_gptj, backend="cpu", n_positions="512",
        dtype="fp32", rolling_batch="auto", model_level={"batch_size": str(SLOTS), "max_batch_delay": "60000"})
    handler = ModelHandler()
    handler.initialize(load_artifact_properties(artifact))
    with uvicorn_thread(create_app(artifact, backend=None, handler=handler)) as url:
        yield url, handler


@pytest.fixture(scope="module")
def greedy(rolling) -> Callable[[str, int], str]:
    """Unbatched greedy continuation by transformers' ``generate`` on the served model: the ground truth."""
    import torch

    engine = rolling[1].engine

    @functools.cache
    def generate(prompt: str, max_new_tokens: int) -> str:
        ids = engine.tokenizer(prompt, return_tensors="pt")
        with torch.no_grad():
            out = engine.backend.model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False,
                                                pad_token_id=engine.eos_token_id)
        return engine.tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)

    return generate


class SchedulerSpy:
    """The rolling server's scheduler seen from its own thread: what it was given, admitted, released and
    finished, in order, each as ``(kind, prompt)``; and, while :attr:`hold` says so, slowed steps."""

    def __init__(self, handler: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        self.scheduler = handler.engine.scheduler
        self.tokenizer = handler.engine.tokenizer
        self.log: list[tuple[str, str]] = []
        self.rows: dict[str, Any] = {}
        self.slots: dict[int, str] = {}
        self.most_occupied = 0
        self.hold: Callable[[], bool] = lambda: False
        self._events: dict[tuple[str, str], threading.Event] = {}
        self._lock = threading.Lock()
        batch = self.scheduler.batch
        submit, admit, release, step = self.scheduler.submit, batch.admit, batch.release, batch.step

        def spied_submit(prepared, on_token, *args, **kwargs):
            prompt = prepared.prompt

            def on_spied_token(token_id, text, final):
                if not self.event("first", prompt).is_set():
                    self.record("first", prompt)
                wanted = on_token(token_id, text, final)
                if final is not None:
                    self.record("final", prompt)
                return wanted

            self.rows[prompt] = row = submit(prepared, on_spied_token, *args, **kwargs)
            self.record("submit", prompt)
            return row

        def spied_admit(slot, context):
            self.slots[slot] = self.tokenizer.decode(list(context))
            self.most_occupied = max(self.most_occupied, len(self.slots))
            self.record("admit", self.slots[slot])
            return admit(slot, context)

        def spied_release(slot):
            if slot in self.slots:  # not a row of an earlier test that ends while this spy is set up
                self.record("release", self.slots.pop(slot))
            return release(slot)

        def spied_step(appended):
            if self.hold():
                time.sleep(SLOW_STEP_S)
            return step(appended)

        monkeypatch.setattr(self.scheduler, "submit", spied_submit)
        monkeypatch.setattr(batch, "admit", spied_admit)
        monkeypatch.setattr(batch, "release", spied_release)
        monkeypatch.setattr(batch, "step", spied_step)

    def event(self, kind: str, prompt: str) -> threading.Event:
        with self._lock:
            return self._events.setdefault((kind, prompt), threading.Event())

    def record(self, kind: str, prompt: str) -> None:
        self.log.append((kind, prompt))
        self.event(kind, prompt).set()

    def wait(self, kind: str, prompt: str) -> None:
        """Block until the scheduler did ``kind`` for ``prompt``."""
        assert self.event(kind, prompt).wait(WAIT_S), f"no {kind} for {prompt!r}"

    async def reached(self, kind: str, prompt: str) -> None:
        """:meth:`wait`, off the event loop."""
        await asyncio.to_thread(self.wait, kind, prompt)

    def finished(self, prompt: str) -> bool:
        return prompt in self.rows and self.rows[prompt].finished.is_set()

    def index(self, kind: str, prompt: str) -> int:
        return self.log.index((kind, prompt))


@pytest.fixture
def spy(rolling, monkeypatch: pytest.MonkeyPatch) -> SchedulerSpy:
    return SchedulerSpy(rolling[1], monkeypatch)


async def _plain(http: httpx.AsyncClient, prompt: Any, new_tokens: int) -> Any:
    response = await http.post("/invocations", json={"inputs": prompt, "parameters": {"max_new_tokens": new_tokens}})
    assert response.status_code == 200, response.text
    return response.json()


async def _stream(http: httpx.AsyncClient, prompt: str, new_tokens: int,
                  leave: asyncio.Event | None = None) -> list[dict[str, Any]]:
    """The stream's lines; when ``leave`` is set, hang up at the next line instead."""
    body = {"inputs": prompt, "stream": True, "parameters": {"max_new_tokens": new_tokens}}
    lines = []
    async with http.stream("POST", "/invocations", json=body) as response:
        assert response.status_code == 200
        async for text in response.aiter_lines():
            if leave is not None and leave.is_set():
                break  # leaving the block closes the connection mid-stream
            if text:
                lines.append(json.loads(text))
    return lines


def _text(lines: list[dict[str, Any]]) -> str:
    assert lines[-1]["generated_text"] == "".join(line["token"]["text"] for line in lines)
    return lines[-1]["generated_text"]


def _run(url: str, main: Callable[[httpx.AsyncClient], Any]) -> Any:
    async def with_client():
        async with httpx.AsyncClient(base_url=url, timeout=WAIT_S) as http:
            return await main(http)

    return asyncio.run(with_client())


def test_a_lone_request_does_not_wait_for_a_batch_to_fill(rolling, greedy) -> None:
    url, handler = rolling
    assert handler.config.batch_size == SLOTS and handler.config.rolling
    expected = greedy("Hello world", 6)
    # The artifact's max_batch_delay is 60 s: a static server would hold this request that long.
    response = httpx.post(f"{url}/invocations", json={"inputs": "Hello world", "parameters": {"max_new_tokens": 6}},
                          timeout=WAIT_S / 4)
    assert response.json() == {"generated_text": expected}


def test_a_short_request_is_answered_while_a_long_stream_runs(rolling, spy, greedy) -> None:
    long_prompt, short_prompt = "Once upon a time", "The capital of France is"
    expected_long, expected_short = greedy(long_prompt, LONG), greedy(short_prompt, 8)
    spy.hold = lambda: not spy.finished(short_prompt)  # the long stream cannot end first by speed alone

    async def main(http):
        long = asyncio.ensure_future(_stream(http, long_prompt, LONG))
        await spy.reached("first", long_prompt)
        short = await _plain(http, short_prompt, 8)
        return short, long.done(), await long

    short, long_done_then, long_lines = _run(rolling[0], main)
    assert short == {"generated_text": expected_short}
    assert not long_done_then  # the answer came while the long stream was still open
    assert spy.index("admit", long_prompt) < spy.index("admit", short_prompt)
    assert spy.index("final", short_prompt) < spy.index("final", long_prompt)
    assert len(long_lines) == LONG and _text(long_lines) == expected_long  # its batch mate changed nothing


def test_a_cancelled_stream_frees_its_slot_for_a_queued_request(rolling, spy, greedy) -> None:
    gone, kept, queued = "Count to a hundred", "Good morning to you", "One two three"
    expected_kept, expected_queued = greedy(kept, LONG), greedy(queued, 8)
    cancelled_before = spy.scheduler.stats.cancelled
    spy.hold = lambda: not spy.finished(gone)  # no slot frees by speed alone before the client leaves

    async def main(http):
        leave = asyncio.Event()
        left = asyncio.ensure_future(_stream(http, gone, LONG, leave))
        stays = asyncio.ensure_future(_stream(http, kept, LONG))
        await spy.reached("first", gone)
        await spy.reached("first", kept)
        answer = asyncio.ensure_future(_plain(http, queued, 8))
        await spy.reached("submit", queued)  # both slots are taken: it waits in the queue
        leave.set()
        return await left, await answer, await stays

    left_lines, answer, kept_lines = _run(rolling[0], main)
    assert spy.log.count(("admit", queued)) == 1
    assert spy.index("release", gone) < spy.index("admit", queued) < spy.index("final", kept)
    assert spy.index("final", queued) < spy.index("final", kept)
    row = spy.rows[gone]
    assert row.state.finish_reason == CANCELLED and len(row.state.tokens) < LONG
    assert "generated_text" not in left_lines[-1]
    assert spy.scheduler.stats.cancelled == cancelled_before + 1
    assert answer == {"generated_text": expected_queued}
    assert len(kept_lines) == LONG and _text(kept_lines) == expected_kept
    assert spy.most_occupied == SLOTS


def test_requests_whose_clients_left_while_queued_are_never_admitted(rolling, spy, greedy) -> None:
    url = rolling[0]
    busy = ["Story number one begins", "Story number two begins"]
    left = {"Hello world": False, "Good evening": True}  # prompt: streaming
    expected = [greedy(prompt, LONG) for prompt in busy]
    spy.hold = lambda: not all(spy.finished(prompt) for prompt in left)  # the slots stay taken meanwhile

    async def main(http):
        running = [asyncio.ensure_future(_stream(http, prompt, LONG)) for prompt in busy]
        for prompt in busy:
            await spy.reached("first", prompt)
        for prompt, stream in left.items():
            body = {"inputs": prompt, "stream": stream, "parameters": {"max_new_tokens": 5}}
            # Hung up once the scheduler has it queued.
            await asyncio.to_thread(post_then_hang_up, url, body, functools.partial(spy.wait, "submit", prompt))
        results = [await task for task in running]
        return results, await _plain(http, "One two three", 4)

    results, later = _run(url, main)
    for prompt in left:
        assert ("admit", prompt) not in spy.log
        assert spy.rows[prompt].state.finish_reason == CANCELLED and spy.rows[prompt].state.tokens == []
    assert [_text(lines) for lines in results] == expected
    assert later == {"generated_text": greedy("One two three", 4)}
    admitted = [prompt for kind, prompt in spy.log if kind == "admit"]
    assert sorted(admitted[:2]) == sorted(busy) and admitted[2:] == ["One two three"]


def test_more_requests_than_slots_queue_and_all_complete_exactly(rolling, spy, greedy) -> None:
    streams = [(f"Question {i}: why", 5 + 7 * i) for i in range(3)]
    plain = [("The weather today", 9), (["Hello world", "Good"], 6), ("A long time ago", 3)]
    expected_streams = [greedy(p, n) for p, n in streams]
    expected_plain = [greedy(p, n) if isinstance(p, str) else [greedy(q, n) for q in p] for p, n in plain]

    async def main(http):
        calls = [_stream(http, p, n) for p, n in streams] + [_plain(http, p, n) for p, n in plain]
        return await asyncio.gather(*calls)

    results = _run(rolling[0], main)
    assert [_text(lines) for lines in results[:3]] == expected_streams
    assert [len(lines) for lines in results[:3]] == [n for _, n in streams]
    bodies = results[3:]
    assert bodies[0] == {"generated_text": expected_plain[0]}
    assert bodies[1] == [{"generated_text": text} for text in expected_plain[1]]
    assert bodies[2] == {"generated_text": expected_plain[2]}
    assert len([kind for kind, _ in spy.log if kind == "admit"]) == 7  # one row per prompt
    assert spy.most_occupied == SLOTS  # the rest waited for a slot


@pytest.mark.parametrize("stream", [False, True])
def test_a_bad_request_is_a_400_naming_the_field_and_its_neighbour_is_served(rolling, greedy, stream) -> None:
    too_long = {"inputs": "word " * 20, "stream": stream, "parameters": {"max_new_tokens": 500}}

    async def main(http):
        bad = http.post("/invocations", json=too_long)
        good = _plain(http, "Hello world", 5)
        return await asyncio.gather(bad, good)

    bad, good = _run(rolling[0], main)
    assert bad.status_code == 400
    assert bad.json()["code"] == 400 and "n_positions 512" in bad.json()["error"]
    assert good == {"generated_text": greedy("Hello world", 5)}


def test_a_failing_step_ends_its_requests_and_the_next_one_is_served(rolling, greedy, monkeypatch) -> None:
    url, handler = rolling
    batch = handler.engine.scheduler.batch
    real_step, calls = batch.step, []

    def step(appended):
        calls.append(appended)
        if len(calls) == 3:  # two steps reach the client first
            raise RuntimeError("device lost")
        return real_step(appended)

    monkeypatch.setattr(batch, "step", step)
    streamed = _run(url, lambda http: _stream(http, "Once upon a time", 8))
    assert [("token" in line) for line in streamed] == [True, True, False]
    assert streamed[-1] == {"error": "generation failed: device lost", "code": 500}
    calls.clear()
    failed = httpx.post(f"{url}/invocations", json={"inputs": "Hi there", "parameters": {"max_new_tokens": 5}},
                        timeout=WAIT_S)
    assert failed.status_code == 500 and "device lost" in failed.json()["error"]
    assert _run(url, lambda http: _plain(http, "Hi there", 5)) == {"generated_text": greedy("Hi there", 5)}


def test_the_runtime_api_works_with_the_rolling_batch(rolling, greedy, fake_aws_env, monkeypatch) -> None:
    import boto3

    monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", rolling[0])
    runtime = boto3.client("sagemaker-runtime")
    body = {"inputs": "The capital of France is", "parameters": {"max_new_tokens": 10}}
    plain = runtime.invoke_endpoint(EndpointName="sharp-local", Body=json.dumps(body), ContentType="application/json")
    assert json.loads(plain["Body"].read()) == {"generated_text": greedy("The capital of France is", 10)}
    streamed = runtime.invoke_endpoint_with_response_stream(
        EndpointName="sharp-local", Body=json.dumps(body), ContentType="application/json")
    events = list(streamed["Body"])
    assert len(events) > 1  # parts leave as tokens are produced
    lines = [json.loads(line) for line in b"".join(e["PayloadPart"]["Bytes"] for e in events).splitlines()]
    assert len(lines) == 10 and _text(lines) == greedy("The capital of France is", 10)
    runtime.close()
