"""The ``scaling`` block of a deployment spec: Application Auto Scaling of the endpoint's variant.

The metric is either ``concurrency`` (SageMakerVariantConcurrentRequestsPerModelHighResolution:
requests queued or streaming in the container, sampled every 10 s) or ``invocations``
(SageMakerVariantInvocationsPerInstance: requests per minute per instance). A ``concurrency``
target defaults to 0.75 x the compiled batch size, so that instances are added before the
batch is full; an ``invocations`` target must be given, or derived from a ``bench --out`` file
(:func:`target_from_bench`).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from .fields import SCALING_DESCRIPTIONS, SCALING_METRICS

__all__ = ["ScalingSpec", "target_from_bench", "KNEE_TTFT_RATIO", "BENCH_TARGET_FRACTION",
           "CONCURRENCY_TARGET_FRACTION"]

#: The knee is the highest concurrency whose p50 TTFT is within this many times the lowest level's.
KNEE_TTFT_RATIO = 2.0
#: An invocations target is this fraction of the per-instance requests per minute at the knee.
BENCH_TARGET_FRACTION = 0.5
#: A concurrency target defaults to this fraction of the compiled batch size.
CONCURRENCY_TARGET_FRACTION = 0.75


def _levels(data: Any) -> list[dict[str, Any]]:
    levels = data.get("levels") if isinstance(data, dict) else None
    usable = [level for level in levels or () if isinstance(level, dict)
              and isinstance(level.get("concurrency"), int)
              and isinstance((level.get("ttft_s") or {}).get("p50"), (int, float))
              and isinstance(level.get("requests_per_second"), (int, float))]
    return sorted(usable, key=lambda level: level["concurrency"])


def target_from_bench(path: str | Path) -> float:
    """An ``invocations`` target from a ``bench --out`` JSON file.

    The knee is the highest measured concurrency whose p50 time to first token stays within
    ``KNEE_TTFT_RATIO`` (2x) of the lowest level's; the target is its requests per minute per
    instance times ``BENCH_TARGET_FRACTION`` (0.5), leaving room for bursts while a new
    instance starts.

    Raises:
        ValueError: the file cannot be read, or holds no level with a p50 TTFT and a throughput.
    """
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read the bench result {path}: {exc}") from None
    levels = _levels(data)
    if not levels:
        raise ValueError(f"{path} holds no bench level with a p50 TTFT and requests_per_second")
    limit = levels[0]["ttft_s"]["p50"] * KNEE_TTFT_RATIO
    knee = [level for level in levels if level["ttft_s"]["p50"] <= limit][-1]
    instances = data.get("instance_count") if isinstance(data.get("instance_count"), int) else 1
    per_minute = knee["requests_per_second"] * 60.0 / max(instances, 1)
    if per_minute <= 0:
        raise ValueError(f"{path}: no request succeeded at the knee (concurrency {knee['concurrency']})")
    return round(per_minute * BENCH_TARGET_FRACTION, 3)


class ScalingSpec(BaseModel):
    """Autoscaling of the endpoint between ``min_instances`` and ``max_instances``."""

    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True)

    min_instances: int = Field(1, ge=1, le=100, description=SCALING_DESCRIPTIONS["min_instances"])
    max_instances: int = Field(..., ge=1, le=100, description=SCALING_DESCRIPTIONS["max_instances"])
    metric: Literal["concurrency", "invocations"] = Field(
        "concurrency", description=SCALING_DESCRIPTIONS["metric"])
    target: float | None = Field(None, gt=0, description=SCALING_DESCRIPTIONS["target"])
    from_bench: str | None = Field(None, description=SCALING_DESCRIPTIONS["from_bench"])
    scale_in_cooldown: int = Field(900, ge=0, le=86400, description=SCALING_DESCRIPTIONS["scale_in_cooldown"])
    scale_out_cooldown: int = Field(300, ge=0, le=86400, description=SCALING_DESCRIPTIONS["scale_out_cooldown"])

    @model_validator(mode="before")
    @classmethod
    def _bench_target(cls, data: Any) -> Any:
        # An explicit target wins, so a spec that already carries both re-validates unchanged.
        if isinstance(data, dict) and data.get("from_bench") and data.get("target") is None:
            data = {**data, "target": target_from_bench(data["from_bench"])}
            data.setdefault("metric", "invocations")
        return data

    @field_validator("max_instances")
    @classmethod
    def _max(cls, value: int, info: ValidationInfo) -> int:
        low = info.data.get("min_instances")
        if low is not None and value < low:
            raise ValueError(f"must be at least min_instances ({low})")
        return value

    @field_validator("target")
    @classmethod
    def _target(cls, value: float | None, info: ValidationInfo) -> float | None:
        if value is None and info.data.get("metric") == "invocations":
            raise ValueError("metric invocations needs a target (--scale-target N or --from-bench FILE)")
        return value

    @property
    def predefined_metric(self) -> str:
        """The PredefinedMetricType Application Auto Scaling tracks."""
        return SCALING_METRICS[self.metric]

    def target_for(self, batch_size: int) -> float:
        """The target value: the given one, else 0.75 x ``batch_size`` (concurrency only)."""
        if self.target is not None:
            return self.target
        return round(CONCURRENCY_TARGET_FRACTION * batch_size, 3)
