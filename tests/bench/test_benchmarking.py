"""bench() against fake streaming targets with an injected clock."""
from __future__ import annotations

import json

import pytest
from bench_fakes import FakeStreamingTarget
from inf2_deploy.benchmarking.config import BenchConfig, default_requests
from inf2_deploy.benchmarking.prompts import make_prompts
from inf2_deploy.benchmarking.runner import BenchResult, bench
from inf2_deploy.errors import ConfigError
from inf2_deploy.spec.catalog import INSTANCES
from support.clock import FakeClock


def test_prompts_have_exactly_the_asked_token_count(tokenizer):
    for length in (1, 7, 128):
        prompts = make_prompts(tokenizer, length, count=5, seed=3)
        if length > 1:
            assert len(set(prompts)) == 5
        assert all(len(tokenizer(p)["input_ids"]) == length for p in prompts)
    assert make_prompts(tokenizer, 16, count=3, seed=1) == make_prompts(tokenizer, 16, count=3, seed=1)


def test_timings_come_from_token_arrivals(clock, tokenizer):
    target = FakeStreamingTarget(clock, ttft=0.2, tpot=0.05)
    config = BenchConfig(concurrency=(1,), requests=5, prompt_tokens=32, max_new_tokens=11, price_per_hour=3.6)
    result = bench(target, config=config, tokenizer=tokenizer, clock=clock)
    assert isinstance(result, BenchResult)
    level = result.level(1)
    stats = level.stats
    assert stats.requests == 5 and stats.errors == 0
    assert stats.ttft.p(50) == pytest.approx(0.2) and stats.ttft.p(99) == pytest.approx(0.2)
    assert stats.tpot.p(90) == pytest.approx(0.05)
    assert stats.e2e.p(50) == pytest.approx(0.2 + 10 * 0.05)
    # back to back at concurrency 1: 55 tokens over 5 * 0.7 s
    assert stats.output_tokens == 55
    assert stats.wall_seconds == pytest.approx(3.5)
    assert stats.output_tokens_per_second == pytest.approx(55 / 3.5)
    assert stats.requests_per_second == pytest.approx(5 / 3.5)
    assert stats.cost_per_million_output_tokens == pytest.approx(3.6 / (55 / 3.5 * 3600) * 1e6)
    # the warm-up request plus five measured ones, each of 32 tokens with the asked max_new_tokens
    assert len(target.calls) == 6
    assert all(len(tokenizer(p)["input_ids"]) == 32 and kw == {"max_new_tokens": 11} for p, kw in target.calls)
    assert result.price_source == "--price-per-hour"


def test_failures_are_counted_not_raised(clock, tokenizer):
    target = FakeStreamingTarget(clock, fail_every=3, fail_after=2)
    config = BenchConfig(concurrency=(1, 2), requests=9, prompt_tokens=8, max_new_tokens=4, warmup=0)
    result = bench(target, config=config, tokenizer=tokenizer, clock=clock)
    first, second = result.level(1).stats, result.level(2).stats
    assert (first.requests, first.errors) == (9, 3)
    assert first.error_kinds == {"InvocationError 503": 3}
    assert first.output_tokens == 6 * 4  # partial streams of failed requests are not output
    assert (second.requests, second.errors) == (9, 3)
    assert result.price_per_hour is None and first.cost_per_million_output_tokens is None


def test_concurrency_runs_requests_in_parallel(tokenizer):
    import threading
    import time

    in_flight = 0
    peak = 0
    lock = threading.Lock()

    class SlowTarget:
        endpoint_name = "slow"

        def stream_events(self, prompt, **params):
            nonlocal in_flight, peak
            with lock:
                in_flight += 1
                peak = max(peak, in_flight)
            try:
                time.sleep(0.05)
                yield {"token": {"id": 1, "text": "a"}, "generated_text": "a"}
            finally:
                with lock:
                    in_flight -= 1

    config = BenchConfig(concurrency=(4,), requests=12, prompt_tokens=4, max_new_tokens=1, warmup=0)
    result = bench(SlowTarget(), config=config, tokenizer=tokenizer)
    assert peak == 4
    assert result.level(4).stats.requests == 12


def test_duration_mode_and_progress(clock, tokenizer):
    target = FakeStreamingTarget(clock, ttft=0.5, tpot=0.25)  # exact in binary floating point
    events = []
    config = BenchConfig(concurrency=(1,), duration=3.0, prompt_tokens=4, max_new_tokens=3, warmup=0)
    result = bench(target, config=config, tokenizer=tokenizer, clock=clock, progress=events.append)
    # each request takes 1.0 s on the fake clock: sends at 0, 1, 2 s; none starts at 3 s
    assert result.level(1).stats.requests == 3
    assert [e.completed for e in events] == [1, 2, 3]
    assert events[-1].total is None and events[-1].duration == 3.0
    assert events[-1].elapsed == pytest.approx(3.0)


def test_catalog_price_and_instance_count(clock, tokenizer):
    target = FakeStreamingTarget(clock)
    config = BenchConfig(concurrency=(1,), requests=2, prompt_tokens=4, max_new_tokens=3,
                         instance_type="ml.inf2.8xlarge", instance_count=2)
    result = bench(target, config=config, tokenizer=tokenizer, clock=clock)
    reference = INSTANCES["ml.inf2.8xlarge"].reference_price_per_hour
    assert result.price_per_hour == reference
    assert "catalog" in result.price_source
    stats = result.level(1).stats
    assert stats.cost_per_million_output_tokens == pytest.approx(
        reference * 2 / (stats.output_tokens_per_second * 3600) * 1e6)


def test_result_json_round_trips(clock, tokenizer, tmp_path):
    config = BenchConfig(concurrency=(1, 2), requests=4, prompt_tokens=4, max_new_tokens=3)
    result = bench(FakeStreamingTarget(clock), config=config, tokenizer=tokenizer, clock=clock)
    path = result.save_json(tmp_path / "out" / "results.json")
    data = json.loads(path.read_text())
    assert [level["concurrency"] for level in data["levels"]] == [1, 2]
    level = data["levels"][0]
    for key in ("ttft_s", "tpot_s", "e2e_s"):
        assert set(level[key]) >= {"p50", "p90", "p99", "mean", "count"}
    assert len(level["request_timings"]) == 4
    assert data["target"] == "fake-endpoint" and data["target_kind"] == "object"


def test_default_requests():
    assert default_requests(1) == 16 and default_requests(8) == 32


@pytest.mark.parametrize("kwargs", [
    {"concurrency": ()},
    {"concurrency": (0,)},
    {"requests": 3, "duration": 1.0},
    {"requests": 0},
    {"prompt_tokens": 0},
    {"max_new_tokens": 0},
    {"price_per_hour": -1.0},
    {"instance_count": 0},
])
def test_invalid_settings_are_refused_by_the_config(kwargs):
    with pytest.raises(ConfigError) as caught:
        BenchConfig(**kwargs)
    assert caught.value.field == next(iter(kwargs))


def test_config_defaults_and_repr():
    config = BenchConfig(concurrency=[2, 4], requests=8)
    assert config.concurrency == (2, 4)
    assert repr(config) == "BenchConfig(concurrency=(2, 4), requests=8)"
    assert repr(BenchConfig()) == "BenchConfig()"
    assert (BenchConfig().requests_at(8), config.requests_at(8), BenchConfig(duration=2.0).requests_at(8)) == (
        default_requests(8), 8, None)


def test_a_target_without_tokenizer_needs_one():
    with pytest.raises(ConfigError, match="tokenizer"):
        bench(FakeStreamingTarget(FakeClock()), config=BenchConfig(requests=1))
