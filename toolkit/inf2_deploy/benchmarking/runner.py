"""Benchmark a deployed model the way LLM serving is judged: streamed requests at several concurrencies.

Each request streams (``stream_events``) and every token is timestamped as it
arrives, so time to first token and time per output token come from the wire,
not from the server's own report. For each concurrency level, that many threads
send requests back to back until ``requests`` are done or ``duration`` seconds
have passed; :mod:`inf2_deploy.benchmarking.stats` turns the timestamps into percentiles,
throughput and cost.

Prompts have exactly ``prompt_tokens`` tokens under the model's own tokenizer:
each is a shuffle of common English words that are single tokens with a leading
space, so their token count is their word count, and every prompt is re-encoded
to check it. The tokenizer comes from ``tokenizer=`` (a folder, an artifact
folder or a Hub id), else from the local deployment's artifact, else from the
SageMaker endpoint's model data on S3 (the tokenizer files only).

Failed requests are counted by kind and never stop the run.
"""
from __future__ import annotations

import datetime
import json
import os
import random
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ..atomic import atomic_write_text
from ..errors import ConfigError, Inf2DeployError, ModelSourceError
from ..spec.validators import check_path
from .stats import LevelStats, RequestTiming, summarize

__all__ = [
    "DEFAULT_CONCURRENCY",
    "BenchProgress",
    "BenchResult",
    "LevelResult",
    "StreamingTarget",
    "TargetInfo",
    "bench",
    "default_requests",
    "load_tokenizer",
    "make_prompts",
    "resolve_target",
]

DEFAULT_CONCURRENCY = (1, 4, 8)
# Distinct prompts cycled through; enough that no two in-flight requests share one at concurrency <= 32.
PROMPT_POOL = 32
_WORDS = (
    "the of and to in is was for on that with as by at from his an were are which this be had not first "
    "one their its new after but who they have two been has more also other into all time during most "
    "only over some city would can many where when between there made school state world year three "
    "under known later team season war her these about water north south river music film game house "
    "church party early called since long high number part then both well such while series left life "
    "family small second public four took began line local place club former work best held around"
).split()


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


# --- target and tokenizer --------------------------------------------------------------------------


def _sagemaker_target(endpoint_name: str, region: str | None) -> tuple[StreamingTarget, TargetInfo]:
    from ..aws.endpoint import find_endpoint, missing_endpoint
    from ..aws.session import aws_errors, make_session
    from ..client.predictor import Predictor

    session = make_session(region)
    sagemaker = session.client("sagemaker")
    endpoint = find_endpoint(sagemaker, endpoint_name)
    if endpoint is None:
        raise missing_endpoint(sagemaker, endpoint_name, session.region)
    config_name = endpoint.config_name
    with aws_errors(f"sagemaker:DescribeEndpointConfig {config_name}"):
        variant = sagemaker.describe_endpoint_config(EndpointConfigName=config_name)["ProductionVariants"][0]
        model = sagemaker.describe_model(ModelName=variant["ModelName"])
    container = model.get("PrimaryContainer") or (model.get("Containers") or [{}])[0]
    source = container.get("ModelDataSource", {}).get("S3DataSource", {}).get("S3Uri") or container.get(
        "ModelDataUrl")
    info = TargetInfo(name=endpoint_name, kind="sagemaker", instance_type=variant.get("InstanceType"),
                      instance_count=int(variant.get("InitialInstanceCount", 1)), tokenizer_source=source)
    return Predictor(endpoint_name, session=session), info


def resolve_target(target: str | StreamingTarget, *, region: str | None = None
                   ) -> tuple[StreamingTarget, TargetInfo]:
    """The predictor for ``target`` and what is known about it.

    Args:
        target: a predictor object, an ``http(s)://`` URL, a local deployment name,
            or a SageMaker endpoint name (tried in that order).
        region: the AWS region for a SageMaker endpoint.

    Raises:
        ConfigError: ``target`` is not a predictor, URL or valid name.
        AwsError: describing the SageMaker endpoint failed (e.g. it does not exist).
        CredentialsError: no AWS credentials or region for a SageMaker endpoint.
    """
    if not isinstance(target, str):
        if not callable(getattr(target, "stream_events", None)):
            raise ConfigError("must be a Predictor, LocalPredictor, URL or endpoint name", field="target",
                              value=target)
        return target, TargetInfo(name=str(getattr(target, "endpoint_name", target)), kind="object")
    from ..local.records import LocalStatus, default_store

    store = default_store()

    if target.startswith(("http://", "https://")):
        from ..client.predictor import LocalPredictor

        # A URL of a recorded local deployment still knows its artifact (and so its tokenizer).
        url = target.rstrip("/")
        known = [d for d in store.list() if d.url.rstrip("/") == url and d.status is LocalStatus.RUNNING]
        source = known[0].artifact_dir if known else None
        return LocalPredictor(target), TargetInfo(name=target, kind="local", tokenizer_source=source)
    deployment = store.get(target)
    if deployment is not None and deployment.status is not LocalStatus.RUNNING:
        raise ConfigError("the local deployment's server is not running", field="target", value=target,
                          hint="start it again with inf2-deploy deploy --local")
    if deployment is not None:
        return deployment.predictor, TargetInfo(name=target, kind="local", tokenizer_source=deployment.artifact_dir)
    return _sagemaker_target(target, region)


def _fetch_tokenizer_files(s3_uri: str, region: str | None, folder: Path) -> None:
    """Download the tokenizer files under an s3:// prefix into ``folder``."""
    from botocore.exceptions import ClientError

    from ..artifact.sources import TOKENIZER_FILES
    from ..aws.session import aws_errors, is_not_found, make_session

    bucket, _, prefix = s3_uri.removeprefix("s3://").partition("/")
    if prefix.endswith(".tar.gz"):
        raise ModelSourceError(f"{s3_uri} is a compressed archive; bench reads tokenizer files from an "
                               "uncompressed S3 prefix", field="tokenizer", value=s3_uri,
                               hint="pass --tokenizer with a local folder")
    prefix = prefix.rstrip("/") + "/" if prefix else ""
    s3 = make_session(region).client("s3")
    found = 0
    for name in TOKENIZER_FILES:
        try:
            body = s3.get_object(Bucket=bucket, Key=prefix + name)["Body"].read()
        except ClientError as exc:
            if is_not_found(exc):  # a tokenizer has some of these files, never all
                continue
            with aws_errors(f"s3:GetObject s3://{bucket}/{prefix}{name}"):
                raise
        (folder / name).write_bytes(body)
        found += 1
    if not found:
        raise ModelSourceError(f"no tokenizer files under {s3_uri}", field="tokenizer", value=s3_uri,
                               hint="pass --tokenizer with a local folder or Hub id")


def _auto_tokenizer(location: str, source: str) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(location)
    except (OSError, ValueError) as exc:
        raise ModelSourceError(f"cannot load a tokenizer from {source}: {exc}", field="tokenizer", value=source,
                               hint="pass --tokenizer with the model's folder or Hub id") from None


def load_tokenizer(source: str | os.PathLike[str], *, region: str | None = None) -> Any:
    """A transformers tokenizer from a folder, an artifact folder, an s3:// prefix or a Hub id.

    From S3 only the tokenizer files are read, into a temporary folder removed afterwards.

    Raises:
        ModelSourceError: no tokenizer could be loaded from ``source``.
        AwsError: reading from S3 failed.
    """
    text = os.fspath(source)
    if text.startswith("s3://"):
        with tempfile.TemporaryDirectory(prefix="inf2-bench-tokenizer-") as folder:
            _fetch_tokenizer_files(text, region, Path(folder))
            return _auto_tokenizer(folder, text)
    path = check_path(text, "tokenizer")
    return _auto_tokenizer(str(path) if path.exists() else text, text)


def _count(tokenizer: Any, text: str) -> int:
    # Counted the way the serving handler tokenizes a prompt (special tokens included).
    return len(tokenizer(text)["input_ids"])


def make_prompts(tokenizer: Any, prompt_tokens: int, *, count: int = PROMPT_POOL, seed: int = 0) -> list[str]:
    """``count`` distinct prompts of exactly ``prompt_tokens`` tokens each.

    Raises:
        ConfigError: the tokenizer cannot make a prompt of that length from plain words.
    """
    words = [w for w in _WORDS if _count(tokenizer, " " + w) == _count(tokenizer, " the")]
    if len(words) < 8:
        raise ConfigError("the tokenizer splits common English words; cannot build exact-length prompts",
                          field="tokenizer", value=getattr(tokenizer, "name_or_path", None))
    overhead = _count(tokenizer, " the") - 1  # special tokens the tokenizer adds to every text
    rng = random.Random(seed)
    prompts = []
    for _ in range(count):
        picked = [rng.choice(words) for _ in range(max(prompt_tokens - overhead, 1))]
        text = "".join(" " + w for w in picked)
        measured = _count(tokenizer, text)
        if measured != prompt_tokens:
            raise ConfigError(f"a prompt built for {prompt_tokens} tokens has {measured}",
                              field="prompt_tokens", value=prompt_tokens)
        prompts.append(text)
    return prompts


# --- running ----------------------------------------------------------------------------------------


def default_requests(concurrency: int) -> int:
    """Requests per level when neither ``requests`` nor ``duration`` is given: 4 per worker, at least 16."""
    return max(16, 4 * concurrency)


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


def _validate(concurrency: Sequence[int], requests: int | None, duration: float | None, prompt_tokens: int,
              max_new_tokens: int, instance_count: int, price_per_hour: float | None) -> tuple[int, ...]:
    levels = tuple(concurrency)
    if not levels or any(not isinstance(c, int) or isinstance(c, bool) or c < 1 for c in levels):
        raise ConfigError("must be one or more whole numbers >= 1", field="concurrency", value=concurrency)
    if requests is not None and duration is not None:
        raise ConfigError("give requests or duration, not both", field="requests", value=requests)
    checks = (("requests", requests, requests is None or requests >= 1),
              ("duration", duration, duration is None or duration > 0),
              ("prompt_tokens", prompt_tokens, prompt_tokens >= 1),
              ("max_new_tokens", max_new_tokens, max_new_tokens >= 1),
              ("instance_count", instance_count, instance_count >= 1),
              ("price_per_hour", price_per_hour, price_per_hour is None or price_per_hour >= 0))
    for name, value, ok in checks:
        if not ok:
            raise ConfigError("must be positive", field=name, value=value)
    return levels


def bench(
    target: str | StreamingTarget,
    *,
    concurrency: Sequence[int] = DEFAULT_CONCURRENCY,
    requests: int | None = None,
    duration: float | None = None,
    prompt_tokens: int = 128,
    max_new_tokens: int = 64,
    tokenizer: str | os.PathLike[str] | Any | None = None,
    price_per_hour: float | None = None,
    instance_type: str | None = None,
    instance_count: int | None = None,
    progress: Callable[[BenchProgress], None] | None = None,
    region: str | None = None,
    warmup: int = 1,
    seed: int = 0,
    clock: Callable[[], float] = time.perf_counter,
) -> BenchResult:
    """Measure TTFT, TPOT, E2E, throughput, errors and cost at each concurrency level.

    Args:
        target: a Predictor/LocalPredictor, an http(s) URL, a local deployment name or an endpoint name.
        concurrency: the levels to measure, in order.
        requests: requests per level; default :func:`default_requests`. Excludes ``duration``.
        duration: seconds per level instead (requests in flight finish).
        prompt_tokens: the exact token length of every prompt.
        max_new_tokens: tokens to generate per request.
        tokenizer: a loaded tokenizer, or a folder, artifact folder, s3:// prefix or Hub id; default
            the target's artifact (local deployment or SageMaker model data).
        price_per_hour: USD per instance-hour; default the catalog's reference for the instance type.
        instance_type: overrides the endpoint's instance type (for the price).
        instance_count: overrides the endpoint's instance count (default 1 when unknown).
        progress: called with a :class:`BenchProgress` after every request.
        region: AWS region of a SageMaker endpoint.
        warmup: unmeasured requests sent before the first level.
        seed: seed of the prompt word shuffle.
        clock: monotonic seconds; tests inject a fake one.

    Returns:
        The per-level statistics, every request's timings and the settings.

    Raises:
        ConfigError: an argument is invalid, or no tokenizer is known for the target.
        ModelSourceError: the tokenizer cannot be loaded.
        AwsError: describing a SageMaker endpoint or fetching its tokenizer failed.
    """
    levels = _validate(concurrency, requests, duration, prompt_tokens, max_new_tokens, instance_count or 1,
                       price_per_hour)
    predictor, info = resolve_target(target, region=region)
    try:
        if tokenizer is None and info.tokenizer_source is None:
            raise ConfigError("no tokenizer is known for this target", field="tokenizer", value=info.name,
                              hint="pass --tokenizer with the model's folder, artifact folder or Hub id")
        source = tokenizer if tokenizer is not None else info.tokenizer_source
        if isinstance(source, (str, os.PathLike)):
            tokenizer_name = os.fspath(source)
            loaded = load_tokenizer(source, region=region)
        else:
            tokenizer_name, loaded = str(getattr(source, "name_or_path", type(source).__name__)), source
        prompts = make_prompts(loaded, prompt_tokens, seed=seed)
        instance_type = instance_type or info.instance_type
        count = instance_count or info.instance_count
        price, price_source = _price(price_per_hour, instance_type)

        results = []
        for index in range(warmup):
            _one_request(predictor, prompts[index % len(prompts)], max_new_tokens, clock)
        for level in levels:
            per_level = requests if requests is not None or duration is not None else default_requests(level)
            timings = _run_level(predictor, prompts, concurrency=level, requests=per_level, duration=duration,
                                 max_new_tokens=max_new_tokens, clock=clock, progress=progress)
            stats = summarize(timings, concurrency=level, price_per_hour=price, instance_count=count)
            results.append(LevelResult(stats, tuple(timings)))
    finally:
        if isinstance(target, str):  # the predictor is ours: release its connections
            predictor.close()
    return BenchResult(
        target=info.name, target_kind=info.kind, levels=tuple(results), prompt_tokens=prompt_tokens,
        max_new_tokens=max_new_tokens, requests=requests, duration=duration, tokenizer=tokenizer_name,
        instance_type=instance_type, instance_count=count, price_per_hour=price, price_source=price_source)
