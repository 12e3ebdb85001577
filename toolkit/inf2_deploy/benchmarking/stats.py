"""Latency and throughput statistics for LLM serving benchmarks. Pure: no I/O, no clock.

Definitions (one streamed request, times in seconds from one monotonic clock):

- TTFT, time to first token: arrival of the first token minus the send time.
- TPOT, time per output token: (last token arrival - first token arrival) / (tokens - 1);
  undefined for fewer than two tokens.
- E2E, end-to-end latency: completion of the response minus the send time.

A level (one concurrency setting) aggregates over its wall window, from the first
send to the last completion: output tokens per second and successful requests per
second. Cost per 1M output tokens is ``price_per_hour * instance_count /
(tokens_per_second * 3600) * 1e6``.

Percentiles use linear interpolation between the closest ranks, numpy's default
``method="linear"`` (Hyndman and Fan's type 7): the q-th percentile of n sorted
values sits at rank ``q / 100 * (n - 1)``.
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "PERCENTILES",
    "RequestTiming",
    "Distribution",
    "LevelStats",
    "percentile",
    "distribution",
    "cost_per_million_tokens",
    "summarize",
]

PERCENTILES = (50.0, 90.0, 99.0)
"""The percentiles every latency distribution reports."""


@dataclass(frozen=True)
class RequestTiming:
    """The timestamps of one request.

    Args:
        start: when the request was sent.
        token_times: when each output token arrived, in order.
        end: when the response was complete (or failed).
        error: a short description of the failure (its kind, for counting), or None when it succeeded.
        message: the failure's full message.
    """

    start: float
    token_times: tuple[float, ...]
    end: float
    error: str | None = None
    message: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def output_tokens(self) -> int:
        return len(self.token_times)

    @property
    def ttft(self) -> float | None:
        """Seconds from send to the first token; None without tokens."""
        return self.token_times[0] - self.start if self.token_times else None

    @property
    def tpot(self) -> float | None:
        """Mean seconds between tokens after the first; None with fewer than two tokens."""
        if len(self.token_times) < 2:
            return None
        return (self.token_times[-1] - self.token_times[0]) / (len(self.token_times) - 1)

    @property
    def e2e(self) -> float:
        """Seconds from send to the end of the response."""
        return self.end - self.start

    def to_dict(self) -> dict[str, Any]:
        return {"start": self.start, "end": self.end, "output_tokens": self.output_tokens,
                "ttft": self.ttft, "tpot": self.tpot, "e2e": self.e2e, "error": self.error,
                "message": self.message}


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile of ``values`` by linear interpolation (numpy's default method).

    Args:
        values: at least one number, in any order.
        q: the percentile, from 0 to 100.

    Raises:
        ValueError: ``values`` is empty or ``q`` is outside [0, 100].
    """
    if not values:
        raise ValueError("percentile of no values")
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile {q} is outside [0, 100]")
    ordered = sorted(values)
    rank = q / 100.0 * (len(ordered) - 1)
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    fraction = rank - low
    return ordered[low] + (ordered[high] - ordered[low]) * fraction


@dataclass(frozen=True)
class Distribution:
    """Summary of one latency metric over the requests that define it (seconds)."""

    count: int
    mean: float | None = None
    minimum: float | None = None
    maximum: float | None = None
    #: {50.0: p50, 90.0: p90, 99.0: p99}; empty when count is 0
    percentiles: dict[float, float] = field(default_factory=dict)

    def p(self, q: float) -> float | None:
        """The ``q``-th percentile, or None when there were no values."""
        return self.percentiles.get(float(q))

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"count": self.count, "mean": self.mean, "min": self.minimum, "max": self.maximum}
        for q in PERCENTILES:
            data[f"p{q:g}"] = self.p(q)
        return data


def distribution(values: Iterable[float | None]) -> Distribution:
    """Summarize ``values``, skipping None (a metric a request does not define)."""
    present = [v for v in values if v is not None]
    if not present:
        return Distribution(count=0)
    return Distribution(
        count=len(present),
        mean=sum(present) / len(present),
        minimum=min(present),
        maximum=max(present),
        percentiles={q: percentile(present, q) for q in PERCENTILES},
    )


def cost_per_million_tokens(price_per_hour: float | None, instance_count: int,
                            tokens_per_second: float) -> float | None:
    """USD per 1M output tokens at a sustained ``tokens_per_second``.

    Returns None when the price is unknown or nothing was generated.
    """
    if price_per_hour is None or tokens_per_second <= 0:
        return None
    return price_per_hour * instance_count / (tokens_per_second * 3600.0) * 1e6


@dataclass(frozen=True)
class LevelStats:
    """Everything measured at one concurrency level."""

    concurrency: int
    requests: int
    errors: int
    #: error description -> count
    error_kinds: dict[str, int]
    ttft: Distribution
    tpot: Distribution
    e2e: Distribution
    output_tokens: int
    wall_seconds: float
    output_tokens_per_second: float
    requests_per_second: float
    cost_per_million_output_tokens: float | None

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "concurrency": self.concurrency,
            "requests": self.requests,
            "errors": self.errors,
            "error_rate": self.error_rate,
            "error_kinds": dict(self.error_kinds),
            "ttft_s": self.ttft.to_dict(),
            "tpot_s": self.tpot.to_dict(),
            "e2e_s": self.e2e.to_dict(),
            "output_tokens": self.output_tokens,
            "wall_seconds": self.wall_seconds,
            "output_tokens_per_second": self.output_tokens_per_second,
            "requests_per_second": self.requests_per_second,
            "cost_per_million_output_tokens": self.cost_per_million_output_tokens,
        }


def summarize(timings: Sequence[RequestTiming], *, concurrency: int, price_per_hour: float | None = None,
              instance_count: int = 1) -> LevelStats:
    """Aggregate the requests of one concurrency level.

    Latencies and throughput count successful requests only; failed requests count
    as errors and still bound the wall window (they occupied the endpoint).

    Args:
        timings: every request sent at this level, failed ones included.
        concurrency: how many requests were in flight at once.
        price_per_hour: USD per instance-hour, or None when unknown.
        instance_count: instances behind the endpoint.
    """
    good = [t for t in timings if t.ok]
    errors = Counter(t.error for t in timings if not t.ok)
    wall = max(t.end for t in timings) - min(t.start for t in timings) if timings else 0.0
    tokens = sum(t.output_tokens for t in good)
    tokens_per_second = tokens / wall if wall > 0 else 0.0
    return LevelStats(
        concurrency=concurrency,
        requests=len(timings),
        errors=sum(errors.values()),
        error_kinds={str(kind): count for kind, count in sorted(errors.items())},
        ttft=distribution(t.ttft for t in good),
        tpot=distribution(t.tpot for t in good),
        e2e=distribution(t.e2e for t in good),
        output_tokens=tokens,
        wall_seconds=wall,
        output_tokens_per_second=tokens_per_second,
        requests_per_second=len(good) / wall if wall > 0 else 0.0,
        cost_per_million_output_tokens=cost_per_million_tokens(price_per_hour, instance_count, tokens_per_second),
    )
