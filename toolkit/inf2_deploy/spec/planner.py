"""The Neuron planner: will this GPT-J deployment fit and compile on inf2?

Every check here stands for a failure that would otherwise surface only after
20-60 minutes of endpoint creation and in-container compilation. The planner
collects all problems (each naming its spec field) instead of stopping at the
first, and recommends an instance and tensor-parallel degree when they are not
given.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from inf2_serving.contract import DTYPES

from ..errors import ConfigError, PlanError
from .catalog import GIB, HBM_PER_CORE_BYTES, INSTANCES, InstanceType, ModelFacts, model_config_for
from .deployment_spec import DeploymentSpec

__all__ = [
    "SUPPORTED_TP_DEGREES",
    "RUNTIME_RESERVE_BYTES",
    "MemoryPerCore",
    "memory_per_core",
    "Candidate",
    "Plan",
    "make_plan",
    "check_plan",
    "plan",
    "default_region",
]

# transformers-neuronx shards across 1, 2, 4, 8 or 24 NeuronCores on inf2.
SUPPORTED_TP_DEGREES = (1, 2, 4, 8, 24)
# Each NeuronCore also holds the runtime's DMA descriptor rings, collectives
# buffers, the loaded programs (one NEFF per n_positions bucket) and activation
# scratch. transformers-neuronx#92 shows loads failing in ring allocation once
# weights leave less than that free; 2 GiB per core is our allowance for it.
RUNTIME_RESERVE_BYTES = 2 * GIB
# Loading builds a host copy of the weights while the per-core shards are made,
# so host RAM must hold about twice the weights; warn above this share of it.
HOST_RAM_WARN_SHARE = 0.75
DEFAULT_N_POSITIONS = 1024
# GPT-J compiles one graph per power-of-two bucket from 128 up to n_positions.
FIRST_BUCKET = 128
FALLBACK_REGION = "us-east-1"
# The errors another instance type or tp can fix.
FIT_FIELDS = frozenset({"instance_type", "tensor_parallel_degree"})

ImageResolver = Callable[[str, str], str]


@dataclass(frozen=True)
class MemoryPerCore:
    """HBM use on one NeuronCore, in bytes."""

    weights: int
    kv_cache: int
    reserve: int
    limit: int = HBM_PER_CORE_BYTES

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache + self.reserve

    @property
    def fits(self) -> bool:
        return self.total <= self.limit

    def to_dict(self) -> dict[str, int]:
        return {"weights": self.weights, "kv_cache": self.kv_cache, "reserve": self.reserve,
                "total": self.total, "limit": self.limit}


def memory_per_core(model: ModelFacts, *, tp: int, n_positions: int, batch_size: int, dtype: str) -> MemoryPerCore:
    """Weights and KV cache split over ``tp`` cores, plus the runtime reserve."""
    width = DTYPES[dtype].itemsize
    weights = model.parameters * width
    kv_cache = 2 * model.n_layer * batch_size * n_positions * model.n_embd * width
    return MemoryPerCore(weights=-(-weights // tp), kv_cache=-(-kv_cache // tp), reserve=RUNTIME_RESERVE_BYTES)


@dataclass(frozen=True)
class Candidate:
    """One instance type and tp degree that the model fits on."""

    instance_type: str
    tensor_parallel_degree: int
    price_per_hour: float
    memory_per_core: MemoryPerCore
    host_ram_tight: bool


@dataclass(frozen=True)
class Plan:
    """A checked deployment: the resolved settings, memory, image and properties.

    ``alternatives`` are, for a plan that works, every instance type and tp that fit
    while keeping the ones given, best first; for a plan with errors, only those that
    fix them (none when another instance or tp cannot, e.g. for ``n_positions``).
    """

    spec: DeploymentSpec
    model: ModelFacts
    instance: InstanceType | None
    tensor_parallel_degree: int
    n_positions: int
    region: str
    memory_per_core: MemoryPerCore
    image_uri: str | None
    errors: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    alternatives: list[Candidate] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def buckets(self) -> list[int]:
        """The n_positions buckets GPT-J compiles a graph for."""
        sizes, size = [], FIRST_BUCKET
        while size < self.n_positions:
            sizes.append(size)
            size *= 2
        return [*sizes, self.n_positions]

    @property
    def price_per_hour(self) -> float | None:
        if self.spec.price_per_hour is not None:
            return self.spec.price_per_hour * self.spec.instance_count
        if self.instance is None:
            return None
        return self.instance.reference_price_per_hour * self.spec.instance_count

    @property
    def serving_properties(self) -> dict[str, str]:
        from ..artifact.properties import serving_properties

        return serving_properties(self)

    def raise_for_errors(self) -> Plan:
        """Return the plan, or raise ``PlanError`` listing every problem."""
        if self.errors:
            raise PlanError.from_problems(self.errors)
        return self

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view, as printed by ``inf2-deploy plan --json``."""
        return {
            "ok": self.ok,
            "errors": [{"field": name, "message": message} for name, message in self.errors],
            "warnings": list(self.warnings),
            "model": self.model.source,
            "parameters": self.model.parameters,
            "instance_type": self.instance.name if self.instance else None,
            "instance_count": self.spec.instance_count,
            "tensor_parallel_degree": self.tensor_parallel_degree,
            "neuron_cores": self.instance.neuron_cores if self.instance else None,
            "n_positions": self.n_positions,
            "buckets": self.buckets,
            "batch_size": self.spec.batch_size,
            "dtype": self.spec.dtype,
            "region": self.region,
            "memory_per_core": self.memory_per_core.to_dict(),
            "price_per_hour": self.price_per_hour,
            "price_source": "--price-per-hour" if self.spec.price_per_hour is not None else (
                self.instance.price_source if self.instance else None),
            "image_uri": self.image_uri,
            "serving_properties": self.serving_properties,
            "alternatives": [
                {"instance_type": c.instance_type, "tensor_parallel_degree": c.tensor_parallel_degree,
                 "price_per_hour": c.price_per_hour, "per_core_total": c.memory_per_core.total,
                 "host_ram_tight": c.host_ram_tight}
                for c in self.alternatives
            ],
        }


def default_region() -> str | None:
    """The region from the standard AWS resolution, or None when none is configured."""
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        return region
    import botocore.session

    return botocore.session.get_session().get_config_variable("region")


def _host_ram_tight(model: ModelFacts, dtype: str, inst: InstanceType) -> bool:
    return 2 * model.parameters * DTYPES[dtype].itemsize > HOST_RAM_WARN_SHARE * inst.host_memory_bytes


def _tp_problem(model: ModelFacts, tp: int, inst: InstanceType | None) -> str | None:
    valid = [d for d in SUPPORTED_TP_DEGREES if model.n_head % d == 0]
    if model.n_head % tp:
        return f"{model.n_head} attention heads are not divisible by tp {tp}; use one of {valid}"
    if tp not in SUPPORTED_TP_DEGREES:
        return f"tp {tp} is not a degree inf2 supports ({', '.join(map(str, SUPPORTED_TP_DEGREES))})"
    if inst is not None and tp > inst.neuron_cores:
        bigger = [i.name for i in INSTANCES.values() if i.neuron_cores >= tp]
        return (f"tp {tp} exceeds the {inst.neuron_cores} NeuronCores of {inst.name}; "
                f"use tp <= {inst.neuron_cores} or {' / '.join(bigger)}")
    return None


def _candidates(model: ModelFacts, spec: DeploymentSpec, n_positions: int) -> list[Candidate]:
    """Every (instance, tp) the model fits on, with the spec's other settings, best first.

    Best is: safe host RAM, then the lowest price, then the highest tp. On one instance a
    higher tp costs nothing more, and it puts to work the NeuronCores the instance pays for.
    """
    found = []
    for inst in INSTANCES.values():
        for tp in SUPPORTED_TP_DEGREES:
            if _tp_problem(model, tp, inst):
                continue
            memory = memory_per_core(model, tp=tp, n_positions=n_positions,
                                     batch_size=spec.batch_size, dtype=spec.dtype)
            if memory.fits:
                found.append(Candidate(inst.name, tp, inst.reference_price_per_hour, memory,
                                       _host_ram_tight(model, spec.dtype, inst)))
    return sorted(found, key=lambda c: (c.host_ram_tight, c.price_per_hour, -c.tensor_parallel_degree))


def _changes(candidate: Candidate, spec: DeploymentSpec) -> int:
    """How many of the settings the user gave (instance type, tp) ``candidate`` changes."""
    return ((spec.instance_type is not None and candidate.instance_type != spec.instance_type)
            + (spec.tensor_parallel_degree is not None
               and candidate.tensor_parallel_degree != spec.tensor_parallel_degree))


def _fixes(candidates: list[Candidate], spec: DeploymentSpec, errors: list[tuple[str, str]]) -> list[Candidate]:
    """What to show beside the plan: every candidate that keeps the given settings when the plan
    works; when it does not, the candidates that fix every error while changing the fewest of them."""
    if not errors:
        return [c for c in candidates if _changes(c, spec) == 0]
    if any(name not in FIT_FIELDS for name, _message in errors):
        return []  # another instance or tp cannot fix this error
    for changed in (1, 2):
        nearest = [c for c in candidates if _changes(c, spec) == changed]
        if nearest:
            return nearest
    return []


def _resolve_image(spec: DeploymentSpec, region: str, resolver: ImageResolver) -> tuple[str | None, list]:
    if spec.image_uri:
        return spec.image_uri, []
    try:
        return resolver(region, spec.lmi_version), []
    except ConfigError as exc:
        return None, [(exc.field or "lmi_version", exc.message)]


def _default_resolver(region: str, version: str) -> str:
    # Imported here: the image cache module builds on this one.
    from ..artifact.image_cache import default_image_resolver

    return default_image_resolver()(region, version)


def _region(spec: DeploymentSpec, warnings: list[str]) -> str:
    region = spec.region or default_region()
    if region is None:
        warnings.append(f"no AWS region configured; planned for {FALLBACK_REGION} (set --region)")
        return FALLBACK_REGION
    return region


def _fit_errors(model: ModelFacts, tp: int, inst: InstanceType | None, memory: MemoryPerCore) -> list:
    """The problems of running ``tp`` on ``inst``: the degree itself, then HBM per core."""
    tp_error = _tp_problem(model, tp, inst)
    if tp_error:
        return [("tensor_parallel_degree", tp_error)]
    if not memory.fits:
        return [("tensor_parallel_degree",
                 f"needs {memory.total / GIB:.1f} GiB per NeuronCore (weights {memory.weights / GIB:.1f} + "
                 f"KV cache {memory.kv_cache / GIB:.1f} + runtime {memory.reserve / GIB:.1f}) but a core has "
                 f"{memory.limit / GIB:.0f} GiB; raise tp, or lower n_positions or batch_size, or use fp16/bf16")]
    return []


def _fit_warnings(model: ModelFacts, spec: DeploymentSpec, inst: InstanceType, tp: int,
                  candidates: list[Candidate]) -> list[str]:
    warnings = []
    if _host_ram_tight(model, spec.dtype, inst):
        warnings.append(f"{inst.name} has {inst.host_memory_gib} GiB host RAM; loading "
                        f"{model.parameters * DTYPES[spec.dtype].itemsize / 1e9:.1f} GB of weights needs about twice "
                        "that while shards are built, so loading may run out of memory")
    higher = [c.tensor_parallel_degree for c in candidates
              if c.instance_type == inst.name and c.tensor_parallel_degree > tp]
    if higher:
        warnings.append(f"tp {tp} uses {tp} of the {inst.neuron_cores} NeuronCores {inst.name} pays for; "
                        f"tp {max(higher)} fits too and cuts per-token latency at the same price")
    return warnings


def make_plan(
    spec: DeploymentSpec,
    *,
    model_config: dict[str, Any] | None = None,
    image_resolver: ImageResolver | None = None,
) -> Plan:
    """Check ``spec`` against the model and the inf2 catalog, filling in defaults.

    With no instance type or tp given, the best candidate supplies them (see
    ``Plan.alternatives``): safe host RAM first, then the price, then the tp that
    uses the most NeuronCores.

    Args:
        spec: the deployment to check.
        model_config: the model's config.json, when the caller already has it;
            otherwise it is read from ``spec.model`` (only config.json is fetched).
        image_resolver: ``(region, version) -> image URI``; defaults to the SageMaker
            SDK registry, through the image cache that packaging writes (see
            :func:`~inf2_deploy.artifact.image_cache.default_image_resolver`).

    Raises:
        ConfigError, ModelSourceError: the model itself cannot be read. Problems
            with the settings are returned in ``Plan.errors`` instead.
    """
    config = model_config if model_config is not None else model_config_for(spec.model)
    model = ModelFacts.from_config(config, source=spec.model)
    errors: list[tuple[str, str]] = []
    warnings: list[str] = []

    n_positions = spec.n_positions or min(model.n_positions, DEFAULT_N_POSITIONS)
    if n_positions > model.n_positions:
        errors.append(("n_positions", f"n_positions {n_positions} exceeds the model's maximum "
                                      f"{model.n_positions}; use at most {model.n_positions}"))
    region = _region(spec, warnings)

    candidates = _candidates(model, spec, n_positions)
    kept = [c for c in candidates if _changes(c, spec) == 0]
    inst = INSTANCES[spec.instance_type] if spec.instance_type else None
    tp = spec.tensor_parallel_degree
    if (inst is None or tp is None) and kept:
        inst = inst or INSTANCES[kept[0].instance_type]
        tp = tp or kept[0].tensor_parallel_degree
    tp = tp or 1
    # No instance was given and none fits: show the numbers for the largest.
    inst = inst or INSTANCES["ml.inf2.48xlarge"]
    memory = memory_per_core(model, tp=tp, n_positions=n_positions, batch_size=spec.batch_size, dtype=spec.dtype)
    errors += _fit_errors(model, tp, inst, memory)
    # A higher tp is advice for a plan that works; host RAM is worth knowing either way.
    warnings += _fit_warnings(model, spec, inst, tp, [] if errors else candidates)

    image_uri, image_errors = _resolve_image(spec, region, image_resolver or _default_resolver)
    errors.extend(image_errors)
    return Plan(spec=spec, model=model, instance=inst, tensor_parallel_degree=tp, n_positions=n_positions,
                region=region, memory_per_core=memory, image_uri=image_uri, errors=errors,
                warnings=warnings, alternatives=_fixes(candidates, spec, errors))


def check_plan(spec: DeploymentSpec, **kwargs: Any) -> Plan:
    """``make_plan`` that raises ``PlanError`` when the plan has problems."""
    return make_plan(spec, **kwargs).raise_for_errors()


def plan(config_file: str | None = None, **settings: Any) -> Plan:
    """Plan a deployment from keyword settings (see ``DeploymentSpec``).

    Example::

        >>> inf2_deploy.plan(model="gpt-j-6b", instance_type="ml.inf2.8xlarge", tensor_parallel_degree=2).ok
        True

    Raises:
        ConfigError: a setting is invalid (unknown key, bad value).
        ModelSourceError: the model's config.json cannot be read.
    """
    from .deployment_spec import load_spec

    return make_plan(load_spec(config_file, **settings))
