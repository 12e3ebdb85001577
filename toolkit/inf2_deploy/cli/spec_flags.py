"""CLI flags for deployment spec fields, shared by plan, package and deploy.

Each flag's help is the spec field's own description, so the two cannot drift.
A config file may use these flags' names in place of field names
(:func:`config_aliases`).
"""
from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from ..spec.fields import DTYPES, FIELD_DESCRIPTIONS, INSTANCE_TYPES, ROLLING_BATCH_CHOICES

if TYPE_CHECKING:
    from ..spec.deployment_spec import DeploymentSpec

__all__ = ["PLAN_FLAGS", "DEPLOY_FLAGS", "add_spec_flags", "config_aliases", "spec_from_args"]

# flag, spec field, extra argparse options
PLAN_FLAGS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("--model", "model", {"metavar": "M"}),
    ("--instance-type", "instance_type", {"metavar": "T", "choices": INSTANCE_TYPES}),
    ("--instance-count", "instance_count", {"metavar": "N", "type": int}),
    ("--tp-degree", "tensor_parallel_degree", {"metavar": "N", "type": int}),
    ("--n-positions", "n_positions", {"metavar": "N", "type": int}),
    ("--batch-size", "batch_size", {"metavar": "N", "type": int}),
    ("--rolling-batch", "rolling_batch", {"choices": ROLLING_BATCH_CHOICES}),
    ("--dtype", "dtype", {"choices": DTYPES}),
    ("--region", "region", {"metavar": "R"}),
    ("--lmi-version", "lmi_version", {"metavar": "V"}),
    ("--image-uri", "image_uri", {"metavar": "URI"}),
    ("--neuron-cc-flags", "neuron_cc_flags", {"metavar": "FLAGS"}),
    ("--price-per-hour", "price_per_hour", {"metavar": "USD", "type": float}),
)
DEPLOY_FLAGS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("--endpoint-name", "endpoint_name", {"metavar": "NAME"}),
    ("--role", "role_arn", {"metavar": "ARN"}),
    ("--bucket", "bucket", {"metavar": "B"}),
    ("--prefix", "prefix", {"metavar": "P"}),
    ("--kms-key", "kms_key_id", {"metavar": "KEY"}),
    ("--model-loading-timeout", "model_loading_timeout", {"metavar": "S", "type": int}),
    ("--startup-timeout", "startup_health_check_timeout", {"metavar": "S", "type": int}),
    ("--download-timeout", "model_download_timeout", {"metavar": "S", "type": int}),
    ("--volume-size-gb", "volume_size_gb", {"metavar": "GB", "type": int}),
    ("--inference-ami-version", "inference_ami_version", {"metavar": "V"}),
    ("--compile-cache-url", "compile_cache_url", {"metavar": "URL"}),
    ("--subnet", "subnets", {"metavar": "ID", "action": "append"}),
    ("--security-group", "security_group_ids", {"metavar": "ID", "action": "append"}),
    ("--network-isolation", "enable_network_isolation", {"action": "store_const", "const": True}),
    ("--env", "env", {"metavar": "KEY=VALUE", "action": "append"}),
    ("--tag", "tags", {"metavar": "KEY=VALUE", "action": "append"}),
    ("--data-capture", "data_capture_uri", {"metavar": "S3URI"}),
    ("--capture-percent", "capture_percent", {"metavar": "N", "type": int}),
    # the scaling block: a dotted name sets one key of it
    ("--min-instances", "scaling.min_instances", {"metavar": "N", "type": int}),
    ("--max-instances", "scaling.max_instances", {"metavar": "N", "type": int}),
    ("--scale-metric", "scaling.metric", {"choices": ("concurrency", "invocations")}),
    ("--scale-target", "scaling.target", {"metavar": "N", "type": float}),
    ("--from-bench", "scaling.from_bench", {"metavar": "FILE"}),
    ("--scale-in-cooldown", "scaling.scale_in_cooldown", {"metavar": "S", "type": int}),
    ("--scale-out-cooldown", "scaling.scale_out_cooldown", {"metavar": "S", "type": int}),
)
_MAPPINGS = {"env", "tags"}
# Names a config file may use that no flag spells: tp is what everyone calls the degree.
_SHORT_NAMES = {"tp": "tensor_parallel_degree"}


def config_aliases() -> dict[str, str]:
    """Config-file key -> spec field, for the CLI's names: each flag without its dashes
    (``instance-type``, ``tp-degree``, ``role``), the same with underscores, and ``tp``."""
    aliases = dict(_SHORT_NAMES)
    for flag, name, _options in PLAN_FLAGS + DEPLOY_FLAGS:
        key = flag.removeprefix("--")
        aliases.update({spelled: name for spelled in (key, key.replace("-", "_")) if spelled != name})
    return aliases


def add_spec_flags(parser: argparse.ArgumentParser, *, deploy: bool = False) -> None:
    """Add ``--config`` and the spec flags (all of them with ``deploy=True``)."""
    parser.add_argument("--config", metavar="FILE", help="YAML or TOML spec file; flags override it")
    group = parser.add_argument_group("deployment settings")
    for flag, name, options in PLAN_FLAGS + (DEPLOY_FLAGS if deploy else ()):
        description = FIELD_DESCRIPTIONS[name]
        group.add_argument(flag, dest=name, default=None, help=description.replace("%", "%%"), **options)


def _pairs(flag: str, name: str, items: list[str]) -> dict[str, str]:
    from ..errors import ConfigError

    pairs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"{flag} takes KEY=VALUE, got {item!r}", field=name, value=item)
        pairs[key] = value
    return pairs


def spec_from_args(args: argparse.Namespace, **extra: Any) -> DeploymentSpec:
    """The spec from ``--config`` plus the flags given (flags win)."""
    overrides: dict[str, Any] = {}
    for flag, name, _options in PLAN_FLAGS + DEPLOY_FLAGS:
        value = getattr(args, name, None)
        if value is not None and name in _MAPPINGS:
            value = _pairs(flag, name, value)
        elif isinstance(value, list):
            value = tuple(value)
        block, dot, inner = name.partition(".")
        if dot:
            if value is not None:
                overrides[block] = {**(overrides.get(block) or {}), inner: value}
            continue
        overrides[name] = value
    overrides.update(extra)
    from ..spec.deployment_spec import load_spec

    return load_spec(args.config, **overrides)
