"""How a benchmark runs: the load at each concurrency level, the prompts, and the price.

:class:`BenchConfig` is checked when it is made, so a bad setting fails before
any tokenizer is loaded or request sent.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

from ..errors import ConfigError

__all__ = [
    "DEFAULT_CONCURRENCY",
    "DEFAULT_MAX_NEW_TOKENS",
    "DEFAULT_PROMPT_TOKENS",
    "DEFAULT_WARMUP",
    "BenchConfig",
    "default_requests",
]

DEFAULT_CONCURRENCY = (1, 4, 8)
DEFAULT_PROMPT_TOKENS = 128
DEFAULT_MAX_NEW_TOKENS = 64
DEFAULT_WARMUP = 1


def default_requests(concurrency: int) -> int:
    """Requests per level when neither ``requests`` nor ``duration`` is given: 4 per worker, at least 16."""
    return max(16, 4 * concurrency)


def _levels(concurrency: Sequence[int]) -> tuple[int, ...]:
    levels = tuple(concurrency)
    if not levels or any(not isinstance(c, int) or isinstance(c, bool) or c < 1 for c in levels):
        raise ConfigError("must be one or more whole numbers >= 1", field="concurrency", value=concurrency)
    return levels


@dataclass(frozen=True, kw_only=True, repr=False)
class BenchConfig:
    """The settings of one benchmark run.

    Args:
        concurrency: the levels to measure, in order.
        requests: requests per level; default :func:`default_requests`. Excludes ``duration``.
        duration: seconds per level instead (requests in flight finish).
        prompt_tokens: the exact token length of every prompt.
        max_new_tokens: tokens to generate per request.
        warmup: unmeasured requests sent before the first level.
        seed: seed of the prompt word shuffle.
        price_per_hour: USD per instance-hour; default the catalog's reference for the instance type.
        instance_type: overrides the endpoint's instance type (for the price).
        instance_count: overrides the endpoint's instance count (default 1 when unknown).

    Raises:
        ConfigError: a setting is out of range, or both ``requests`` and ``duration`` are given.
    """

    concurrency: Sequence[int] = DEFAULT_CONCURRENCY
    requests: int | None = None
    duration: float | None = None
    prompt_tokens: int = DEFAULT_PROMPT_TOKENS
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    warmup: int = DEFAULT_WARMUP
    seed: int = 0
    price_per_hour: float | None = None
    instance_type: str | None = None
    instance_count: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "concurrency", _levels(self.concurrency))
        if self.requests is not None and self.duration is not None:
            raise ConfigError("give requests or duration, not both", field="requests", value=self.requests)
        checks = (("requests", self.requests, self.requests is None or self.requests >= 1),
                  ("duration", self.duration, self.duration is None or self.duration > 0),
                  ("prompt_tokens", self.prompt_tokens, self.prompt_tokens >= 1),
                  ("max_new_tokens", self.max_new_tokens, self.max_new_tokens >= 1),
                  ("instance_count", self.instance_count, self.instance_count is None or self.instance_count >= 1),
                  ("price_per_hour", self.price_per_hour, self.price_per_hour is None or self.price_per_hour >= 0))
        for name, value, ok in checks:
            if not ok:
                raise ConfigError("must be positive", field=name, value=value)

    def requests_at(self, concurrency: int) -> int | None:
        """Requests to send at ``concurrency``; None when each level runs for ``duration`` instead."""
        if self.requests is not None or self.duration is not None:
            return self.requests
        return default_requests(concurrency)

    def __repr__(self) -> str:
        # Only what differs from the defaults, so a repr reads like the call that made it.
        changed = [f"{f.name}={getattr(self, f.name)!r}" for f in fields(self)
                   if getattr(self, f.name) != f.default]
        return f"{type(self).__name__}({', '.join(changed)})"
