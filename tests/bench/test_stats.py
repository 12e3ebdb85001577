"""The benchmark statistics on synthetic timings."""
from __future__ import annotations

import numpy as np
import pytest
from fuzz_budget import examples
from hypothesis import given, settings
from hypothesis import strategies as st
from inf2_deploy.benchmarking.stats import (
    PERCENTILES,
    RequestTiming,
    cost_per_million_tokens,
    distribution,
    percentile,
    summarize,
)


@given(values=st.lists(st.floats(min_value=-1e6, max_value=1e6), min_size=1, max_size=60),
       q=st.floats(min_value=0, max_value=100))
@settings(max_examples=examples(200), deadline=None)
def test_percentile_matches_numpy_linear(values, q):
    assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)), rel=1e-9, abs=1e-6)


@pytest.mark.parametrize(("values", "q", "expected"), [
    ([1.0, 2.0, 3.0, 4.0], 50, 2.5),
    ([10.0], 99, 10.0),
    ([4.0, 1.0, 3.0, 2.0], 0, 1.0),
    ([4.0, 1.0, 3.0, 2.0], 100, 4.0),
    (list(range(1, 101)), 90, 90.1),
])
def test_percentile_known_values(values, q, expected):
    assert percentile(values, q) == pytest.approx(expected)


@pytest.mark.parametrize(("values", "q"), [([], 50), ([1.0], -1), ([1.0], 101)])
def test_percentile_rejects_bad_input(values, q):
    with pytest.raises(ValueError):
        percentile(values, q)


def test_ttft_tpot_e2e_from_arrival_times():
    timing = RequestTiming(start=10.0, token_times=(10.25, 10.30, 10.40, 10.55), end=10.6)
    assert timing.ttft == pytest.approx(0.25)
    # (last - first) / (tokens - 1) = 0.30 / 3
    assert timing.tpot == pytest.approx(0.10)
    assert timing.e2e == pytest.approx(0.6)
    assert timing.output_tokens == 4


def test_zero_and_one_token_requests_leave_metrics_undefined():
    empty = RequestTiming(start=0.0, token_times=(), end=0.5)
    one = RequestTiming(start=0.0, token_times=(0.2,), end=0.3)
    assert (empty.ttft, empty.tpot) == (None, None)
    assert (one.ttft, one.tpot) == (pytest.approx(0.2), None)
    stats = summarize([empty, one], concurrency=1)
    assert stats.ttft.count == 1 and stats.tpot.count == 0
    assert stats.tpot.p(50) is None and stats.tpot.to_dict()["p99"] is None
    assert stats.e2e.count == 2
    assert stats.output_tokens == 1


def test_cost_arithmetic():
    # $1.9679/h for one instance at 100 tok/s: 1.9679 / 360000 tokens * 1e6
    assert cost_per_million_tokens(1.9679, 1, 100.0) == pytest.approx(1.9679 / 0.36)
    assert cost_per_million_tokens(2.0, 3, 1000.0) == pytest.approx(6.0 / 3.6)
    assert cost_per_million_tokens(None, 1, 100.0) is None
    assert cost_per_million_tokens(2.0, 1, 0.0) is None


def test_summarize_aggregates_over_the_wall_window():
    timings = [
        RequestTiming(0.0, (0.1, 0.2, 0.3), 0.3),
        RequestTiming(0.1, (0.3, 0.5), 0.6),
        RequestTiming(0.5, (0.8, 0.9, 1.0, 1.1, 1.2), 2.0),
    ]
    stats = summarize(timings, concurrency=2, price_per_hour=3.6, instance_count=2)
    assert stats.wall_seconds == pytest.approx(2.0)
    assert stats.output_tokens == 10
    assert stats.output_tokens_per_second == pytest.approx(5.0)
    assert stats.requests_per_second == pytest.approx(1.5)
    assert stats.cost_per_million_output_tokens == pytest.approx(3.6 * 2 / (5.0 * 3600) * 1e6)
    ttfts = [0.1, 0.2, 0.3]
    for q in PERCENTILES:
        assert stats.ttft.p(q) == pytest.approx(np.percentile(ttfts, q))
    assert stats.tpot.mean == pytest.approx((0.1 + 0.2 + 0.1) / 3)
    assert stats.errors == 0 and stats.error_rate == 0.0


def test_errors_are_counted_by_kind_and_excluded_from_latency():
    timings = [
        RequestTiming(0.0, (0.1, 0.2), 0.2),
        RequestTiming(0.0, (), 0.05, error="InvocationError 503"),
        RequestTiming(0.1, (0.15,), 0.4, error="InvocationError 503"),
        RequestTiming(0.2, (), 0.3, error="ConnectError"),
    ]
    stats = summarize(timings, concurrency=4, price_per_hour=1.0)
    assert stats.requests == 4 and stats.errors == 3
    assert stats.error_rate == pytest.approx(0.75)
    assert stats.error_kinds == {"ConnectError": 1, "InvocationError 503": 2}
    assert stats.ttft.count == 1 and stats.e2e.count == 1
    assert stats.output_tokens == 2  # the failed request's token is not output
    assert stats.wall_seconds == pytest.approx(0.4)
    assert stats.requests_per_second == pytest.approx(1 / 0.4)


def test_all_failed_level_has_no_throughput_or_cost():
    stats = summarize([RequestTiming(0.0, (), 1.0, error="boom")], concurrency=1, price_per_hour=1.0)
    assert stats.output_tokens_per_second == 0.0
    assert stats.cost_per_million_output_tokens is None
    data = stats.to_dict()
    assert data["errors"] == 1 and data["ttft_s"]["count"] == 0


def test_empty_level():
    stats = summarize([], concurrency=1)
    assert stats.requests == 0 and stats.wall_seconds == 0.0 and stats.error_rate == 0.0


def test_distribution_skips_none():
    dist = distribution([None, 1.0, 3.0, None])
    assert dist.count == 2 and dist.mean == 2.0 and dist.minimum == 1.0 and dist.maximum == 3.0
