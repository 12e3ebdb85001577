"""Benchmark a deployed model the way LLM serving is judged: streamed requests at several concurrencies.

Each request streams (``stream_events``) and every token is timestamped as it
arrives, so time to first token and time per output token come from the wire,
not from the server's own report. For each concurrency level, that many threads
send requests back to back until ``requests`` are done or ``duration`` seconds
have passed; :mod:`inf2_deploy.benchmarking.stats` turns the timestamps into percentiles,
throughput and cost.

Prompts have exactly ``prompt_tokens`` tokens under the model's own tokenizer
(:mod:`inf2_deploy.benchmarking.prompts`). The tokenizer comes from
``tokenizer=`` (a folder, an artifact folder or a Hub id), else from the local
deployment's artifact, else from the SageMaker endpoint's model data on S3 (the
tokenizer files only). The settings of a run are a
:class:`~inf2_deploy.benchmarking.config.BenchConfig`.

Failed requests are counted by kind and never stop the run.
"""
from __future__ import annotations

import datetime
import json
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ..atomic import atomic_write_text
from ..errors import ConfigError, Inf2DeployError
from .config import BenchConfig
from .prompts import load_tokenizer, make_prompts
from .stats import LevelStats, RequestTiming, summarize

__all__ = [
    "BenchProgress",
    "BenchResult",
    "LevelResult",
    "StreamingTarget",
    "TargetInfo",
    "bench",
    "bench_target",
]


class StreamingTarget(Protocol):
    """What bench needs from a target: :class:`~inf2_deploy.client.predictor.Predictor` and LocalPredictor fit."""

    endpoint_name: str

    def stream_events(self, prompt: str, **parameters: Any) -> Any:
        """Yield each streamed JSON line as it arrives."""


@dataclass(frozen=True)
class TargetInfo:
    """What bench learned about its target.

    Args:
        name: the endpoint name, local deployment name or URL.
        kind: ``sagemaker``, ``local`` or ``object`` (a predictor passed in).
        instance_type: the endpoint's instance type, when known.
        instance_count: instances behind the endpoint.
        tokenizer_source: where the tokenizer can be loaded from (folder or s3:// prefix), if known.
    """

    name: str
    kind: str
    instance_type: str | None = None
    instance_count: int = 1
    tokenizer_source: str | None = None


@dataclass(frozen=True)
class BenchProgress:
    """Reported after every finished request.

    Args:
        concurrency: the level being measured.
        completed: requests finished at this level (failed ones included).
        errors: requests that failed at this level.
        total: requests planned for this level, or None when running for a duration.
        elapsed: seconds since the level started.
        duration: the level's duration in seconds, or None when counting requests.
    """

    concurrency: int
    completed: int
    errors: int
    total: int | None
    elapsed: float
    duration: float | None


@dataclass(frozen=True)
class LevelResult:
    """One concurrency level: its statistics and every request's timings."""

    stats: LevelStats
    timings: tuple[RequestTiming, ...]

    @property
    def concurrency(self) -> int:
        return self.stats.concurrency

    def to_dict(self) -> dict[str, Any]:
        return {**self.stats.to_dict(), "request_timings": [t.to_dict() for t in self.timings]}


@dataclass(frozen=True)
class BenchResult:
    """The outcome of :func:`bench`."""

    target: str
    target_kind: str
    levels: tuple[LevelResult, ...]
    prompt_tokens: int
    max_new_tokens: int
    #: requests per level, or None when each level ran for ``duration`` seconds
    requests: int | None
    duration: float | None
    tokenizer: str
    instance_type: str | None
    instance_count: int
    price_per_hour: float | None
    #: where the price came from: "--price-per-hour", the catalog's source, or None
    price_source: str | None
    started_at: str = field(default_factory=lambda: datetime.datetime.now(datetime.timezone.utc).isoformat())

    @property
    def first_error(self) -> str | None:
        """The earliest failed request's error, as ``kind: message``; None when none failed."""
        failed = sorted((t for level in self.levels for t in level.timings if not t.ok), key=lambda t: t.start)
        if not failed:
            return None
        return f"{failed[0].error}: {failed[0].message}" if failed[0].message else failed[0].error

    def level(self, concurrency: int) -> LevelResult:
        """The result at ``concurrency``.

        Raises:
            KeyError: that level was not measured.
        """
        for level in self.levels:
            if level.concurrency == concurrency:
                return level
        raise KeyError(concurrency)

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "target_kind": self.target_kind,
            "started_at": self.started_at,
            "prompt_tokens": self.prompt_tokens,
            "max_new_tokens": self.max_new_tokens,
            "requests_per_level": self.requests,
            "duration_per_level_s": self.duration,
            "tokenizer": self.tokenizer,
            "instance_type": self.instance_type,
            "instance_count": self.instance_count,
            "price_per_hour": self.price_per_hour,
            "price_source": self.price_source,
            "levels": [level.to_dict() for level in self.levels],
        }

    def save_json(self, path: str | os.PathLike[str]) -> Path:
        """Write :meth:`to_dict` as JSON to ``path`` (temp file, then ``os.replace``)."""
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")
        return Path(path)


# --- target ------------------------------------------------------------------------------------------


def bench_target(target: str | StreamingTarget, *, region: str | None = None
                 ) -> tuple[StreamingTarget, TargetInfo]:
    """The predictor for ``target`` and what bench needs to know about it.

    Args:
        target: a predictor object, or an ``http(s)://`` URL, a local deployment name or a
            SageMaker endpoint name, resolved by :func:`~inf2_deploy.client.targets.resolve`.
        region: the AWS region for a SageMaker endpoint.

    Raises:
        ConfigError: ``target`` is not a predictor, URL or valid name.
        DeploymentStoppedError: ``target`` names a local deployment whose server has exited.
        EndpointNotFoundError: no endpoint by that name.
        AwsError: describing the SageMaker endpoint failed.
        CredentialsError: no AWS credentials or region for a SageMaker endpoint.
    """
    if not isinstance(target, str):
        if not callable(getattr(target, "stream_events", None)):
            raise ConfigError("must be a Predictor, LocalPredictor, URL or endpoint name", field="target",
                              value=target)
        return target, TargetInfo(name=str(getattr(target, "endpoint_name", target)), kind="object")
    from ..client.targets import resolve

    resolved = resolve(target, region=region)
    predictor = resolved.predictor()
    described = resolved.describe()
    return predictor, TargetInfo(name=target, kind=resolved.kind, instance_type=described.instance_type,
                                 instance_count=described.instance_count or 1, tokenizer_source=described.artifact)


# --- running ----------------------------------------------------------------------------------------


def _describe(exc: BaseException) -> str:
    status = getattr(exc, "status", None)
    return f"{type(exc).__name__} {status}" if status else type(exc).__name__


def _one_request(target: StreamingTarget, prompt: str, max_new_tokens: int,
                 clock: Callable[[], float]) -> RequestTiming:
    token_times: list[float] = []
    start = clock()
    try:
        for event in target.stream_events(prompt, max_new_tokens=max_new_tokens):
            now = clock()
            if isinstance(event, dict) and "error" in event:  # an in-band failure the target passed on
                return RequestTiming(start, tuple(token_times), now, error=f"stream error {event.get('code')}")
            if isinstance(event, dict) and isinstance(event.get("token"), dict):
                token_times.append(now)
    # The errors a transport or endpoint raises; anything else is a bug and surfaces.
    except (Inf2DeployError, OSError, ValueError) as exc:
        return RequestTiming(start, tuple(token_times), clock(), error=_describe(exc), message=str(exc))
    return RequestTiming(start, tuple(token_times), clock())


def _run_level(target: StreamingTarget, prompts: Sequence[str], *, concurrency: int, requests: int | None,
               duration: float | None, max_new_tokens: int, clock: Callable[[], float],
               progress: Callable[[BenchProgress], None] | None) -> list[RequestTiming]:
    lock = threading.Lock()
    timings: list[RequestTiming] = []
    issued = 0
    level_start = clock()

    def next_index() -> int | None:
        nonlocal issued
        with lock:
            if requests is not None and issued >= requests:
                return None
            if duration is not None and clock() - level_start >= duration:
                return None
            issued += 1
            return issued - 1

    def worker() -> None:
        while (index := next_index()) is not None:
            timing = _one_request(target, prompts[index % len(prompts)], max_new_tokens, clock)
            with lock:
                timings.append(timing)
                if progress is not None:
                    progress(BenchProgress(concurrency, len(timings), sum(not t.ok for t in timings),
                                           requests, clock() - level_start, duration))

    threads = [threading.Thread(target=worker, name=f"inf2-bench-{concurrency}-{i}", daemon=True)
               for i in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sorted(timings, key=lambda t: t.start)


def _price(price_per_hour: float | None, instance_type: str | None) -> tuple[float | None, str | None]:
    if price_per_hour is not None:
        return price_per_hour, "--price-per-hour"
    from ..spec.catalog import INSTANCES

    if instance_type in INSTANCES:
        entry = INSTANCES[instance_type]
        return entry.reference_price_per_hour, f"catalog reference for {instance_type}: {entry.price_source}"
    return None, None


def _tokenizer_for(tokenizer: str | os.PathLike[str] | Any | None, info: TargetInfo,
                   region: str | None) -> tuple[str, Any]:
    """The tokenizer's name and the loaded tokenizer: ``tokenizer`` if given, else the target's."""
    if tokenizer is None and info.tokenizer_source is None:
        raise ConfigError("no tokenizer is known for this target", field="tokenizer", value=info.name,
                          hint="pass --tokenizer with the model's folder, artifact folder or Hub id")
    source = tokenizer if tokenizer is not None else info.tokenizer_source
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source), load_tokenizer(source, region=region)
    return str(getattr(source, "name_or_path", type(source).__name__)), source


def _measure(predictor: StreamingTarget, prompts: Sequence[str], config: BenchConfig, *, price: float | None,
             instance_count: int, clock: Callable[[], float],
             progress: Callable[[BenchProgress], None] | None) -> tuple[LevelResult, ...]:
    """The warm-up requests, then every level of ``config`` in turn."""
    for index in range(config.warmup):
        _one_request(predictor, prompts[index % len(prompts)], config.max_new_tokens, clock)
    results = []
    for level in config.concurrency:
        timings = _run_level(predictor, prompts, concurrency=level, requests=config.requests_at(level),
                             duration=config.duration, max_new_tokens=config.max_new_tokens, clock=clock,
                             progress=progress)
        stats = summarize(timings, concurrency=level, price_per_hour=price, instance_count=instance_count)
        results.append(LevelResult(stats, tuple(timings)))
    return tuple(results)


def bench(
    target: str | StreamingTarget,
    *,
    config: BenchConfig | None = None,
    tokenizer: str | os.PathLike[str] | Any | None = None,
    progress: Callable[[BenchProgress], None] | None = None,
    region: str | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> BenchResult:
    """Measure TTFT, TPOT, E2E, throughput, errors and cost at each concurrency level.

    Args:
        target: a Predictor/LocalPredictor, an http(s) URL, a local deployment name or an endpoint name.
        config: the levels, load, prompts and price; default ``BenchConfig()``.
        tokenizer: a loaded tokenizer, or a folder, artifact folder, s3:// prefix or Hub id; default
            the target's artifact (local deployment or SageMaker model data).
        progress: called with a :class:`BenchProgress` after every request.
        region: AWS region of a SageMaker endpoint.
        clock: monotonic seconds; tests inject a fake one.

    Returns:
        The per-level statistics, every request's timings and the settings.

    Raises:
        ConfigError: no tokenizer is known for the target (a bad setting fails earlier, in ``BenchConfig``).
        ModelSourceError: the tokenizer cannot be loaded.
        AwsError: describing a SageMaker endpoint or fetching its tokenizer failed.
    """
    config = config if config is not None else BenchConfig()
    predictor, info = bench_target(target, region=region)
    try:
        tokenizer_name, loaded = _tokenizer_for(tokenizer, info, region)
        prompts = make_prompts(loaded, config.prompt_tokens, seed=config.seed)
        instance_type = config.instance_type or info.instance_type
        count = config.instance_count or info.instance_count
        price, price_source = _price(config.price_per_hour, instance_type)
        levels = _measure(predictor, prompts, config, price=price, instance_count=count, clock=clock,
                          progress=progress)
    finally:
        if isinstance(target, str):  # the predictor is ours: release its connections
            predictor.close()
    return BenchResult(
        target=info.name, target_kind=info.kind, levels=levels, prompt_tokens=config.prompt_tokens,
        max_new_tokens=config.max_new_tokens, requests=config.requests, duration=config.duration,
        tokenizer=tokenizer_name, instance_type=instance_type, instance_count=count, price_per_hour=price,
        price_source=price_source)
