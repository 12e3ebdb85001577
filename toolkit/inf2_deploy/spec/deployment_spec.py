"""The deployment spec: one frozen, validated description of a deployment.

A spec loads from a YAML or TOML file, from keyword arguments and from CLI
flags; later sources override earlier ones. A file may name a setting by its
field (``instance_type``) or by its CLI flag (``instance-type``, ``tp``). Unknown
keys are rejected with the closest known one, and every error names the field.
``docs/configuration.md`` is generated from the field descriptions (``inf2-deploy config-reference``).
"""
from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from inf2_serving.contract import DTYPE_NAMES, ENDPOINT_NAME, ENDPOINT_NAME_RULE, MODEL_DIR, ROLLING_BATCH_ON
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from ..cli.spec_flags import config_aliases
from ..errors import ConfigError
from .fields import DEFAULT_LMI_VERSION, FIELD_DESCRIPTIONS, INSTANCE_TYPES, ROLLING_BATCH_CHOICES
from .scaling import ScalingSpec
from .validators import BUCKET_NAME, REGION_NAME, check_path, path_problem

__all__ = ["DeploymentSpec", "build_spec", "load_spec", "DEFAULT_LMI_VERSION", "INSTANCE_TYPES", "MERGED_MAPPINGS"]


_ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}$")
_PREFIX = re.compile(r"^[A-Za-z0-9!_.*'()/-]{0,512}$")
_KMS_KEY = re.compile(r"^(arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:(key|alias)/[\w/-]+|alias/[\w/-]+|[0-9a-f-]{36})$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,1023}$")
_TAG = re.compile(r"^[\w.:/=+@ -]*$")
_SECRET_ENV = re.compile(r"(TOKEN|SECRET|PASSWORD|ACCESS_KEY)", re.IGNORECASE)
# DataCaptureConfig.DestinationS3Uri's limit in SageMaker's service model.
_MAX_CAPTURE_URI = 512


class DeploymentSpec(BaseModel):
    """Everything needed to plan, package and deploy one GPT-J endpoint."""

    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True)

    model: str = Field(
        "gpt-j-6b",
        description=FIELD_DESCRIPTIONS["model"],
    )
    endpoint_name: str | None = Field(
        None,
        description=FIELD_DESCRIPTIONS["endpoint_name"],
    )
    region: str | None = Field(
        None, description=FIELD_DESCRIPTIONS["region"]
    )
    instance_type: str | None = Field(
        None,
        description=FIELD_DESCRIPTIONS["instance_type"],
    )
    instance_count: int = Field(1, ge=1, le=100, description=FIELD_DESCRIPTIONS["instance_count"])
    tensor_parallel_degree: int | None = Field(
        None,
        ge=1,
        description=FIELD_DESCRIPTIONS["tensor_parallel_degree"],
    )
    n_positions: int | None = Field(
        None,
        ge=8,
        description=FIELD_DESCRIPTIONS["n_positions"],
    )
    batch_size: int = Field(1, ge=1, le=256, description=FIELD_DESCRIPTIONS["batch_size"])
    rolling_batch: Literal[ROLLING_BATCH_CHOICES] = Field(
        ROLLING_BATCH_ON, description=FIELD_DESCRIPTIONS["rolling_batch"]
    )
    dtype: Literal[DTYPE_NAMES] = Field(
        "fp16", description=FIELD_DESCRIPTIONS["dtype"]
    )
    role_arn: str | None = Field(
        None, description=FIELD_DESCRIPTIONS["role_arn"]
    )
    bucket: str | None = Field(
        None, description=FIELD_DESCRIPTIONS["bucket"]
    )
    prefix: str = Field("inf2-deploy", description=FIELD_DESCRIPTIONS["prefix"])
    kms_key_id: str | None = Field(
        None, description=FIELD_DESCRIPTIONS["kms_key_id"]
    )
    lmi_version: str = Field(
        DEFAULT_LMI_VERSION,
        description=FIELD_DESCRIPTIONS["lmi_version"],
    )
    image_uri: str | None = Field(None, description=FIELD_DESCRIPTIONS["image_uri"])
    model_loading_timeout: int = Field(
        3600, ge=60, le=14400, description=FIELD_DESCRIPTIONS["model_loading_timeout"]
    )
    startup_health_check_timeout: int = Field(
        3600,
        ge=60,
        le=3600,
        description=FIELD_DESCRIPTIONS["startup_health_check_timeout"],
    )
    model_download_timeout: int = Field(
        3600, ge=60, le=3600, description=FIELD_DESCRIPTIONS["model_download_timeout"]
    )
    volume_size_gb: int | None = Field(
        None, ge=1, le=512, description=FIELD_DESCRIPTIONS["volume_size_gb"]
    )
    inference_ami_version: str | None = Field(
        None, description=FIELD_DESCRIPTIONS["inference_ami_version"]
    )
    compile_cache_url: str | None = Field(
        None,
        description=FIELD_DESCRIPTIONS["compile_cache_url"],
    )
    neuron_cc_flags: str | None = Field(None, description=FIELD_DESCRIPTIONS["neuron_cc_flags"])
    subnets: tuple[str, ...] = Field((), description=FIELD_DESCRIPTIONS["subnets"])
    security_group_ids: tuple[str, ...] = Field((), description=FIELD_DESCRIPTIONS["security_group_ids"])
    enable_network_isolation: bool = Field(False, description=FIELD_DESCRIPTIONS["enable_network_isolation"])
    env: dict[str, str] = Field(default_factory=dict, description=FIELD_DESCRIPTIONS["env"])
    tags: dict[str, str] = Field(default_factory=dict, description=FIELD_DESCRIPTIONS["tags"])
    data_capture_uri: str | None = Field(None, description=FIELD_DESCRIPTIONS["data_capture_uri"])
    capture_percent: int | None = Field(None, ge=1, le=100, description=FIELD_DESCRIPTIONS["capture_percent"])
    price_per_hour: float | None = Field(
        None, gt=0, description=FIELD_DESCRIPTIONS["price_per_hour"]
    )
    scaling: ScalingSpec | None = Field(None, description=FIELD_DESCRIPTIONS["scaling"])

    @field_validator("endpoint_name")
    @classmethod
    def _endpoint_name(cls, value: str | None) -> str | None:
        if value is not None and not ENDPOINT_NAME.match(value):
            raise ValueError(ENDPOINT_NAME_RULE)
        return value

    @field_validator("model")
    @classmethod
    def _model(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must name an alias, a Hugging Face id, a folder or an s3:// prefix")
        problem = path_problem(value)
        if problem is not None:  # every reference is tried as a local folder first
            raise ValueError(f"cannot be a model reference: it {problem}")
        return value

    @field_validator("region")
    @classmethod
    def _region(cls, value: str | None) -> str | None:
        if value is not None and not REGION_NAME.match(value):
            raise ValueError("must look like us-east-1")
        return value

    @field_validator("instance_type")
    @classmethod
    def _instance_type(cls, value: str | None) -> str | None:
        if value is not None and value not in INSTANCE_TYPES:
            raise ValueError(f"must be one of {', '.join(INSTANCE_TYPES)}")
        return value

    @field_validator("role_arn")
    @classmethod
    def _role_arn(cls, value: str | None) -> str | None:
        if value is not None and not _ROLE_ARN.match(value):
            raise ValueError("must be an IAM role ARN like arn:aws:iam::123456789012:role/NAME")
        return value

    @field_validator("bucket")
    @classmethod
    def _bucket(cls, value: str | None) -> str | None:
        if value is not None and not BUCKET_NAME.match(value):
            raise ValueError("must be a valid S3 bucket name (3-63 lowercase letters, digits, dots, hyphens)")
        return value

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        value = value.strip("/")
        if not _PREFIX.match(value) or ".." in value.split("/"):
            raise ValueError("must be an S3 key prefix of safe characters with no '..' segments")
        return value

    @field_validator("kms_key_id")
    @classmethod
    def _kms_key(cls, value: str | None) -> str | None:
        if value is not None and not _KMS_KEY.match(value):
            raise ValueError("must be a KMS key id, key ARN or alias/NAME")
        return value

    @field_validator("compile_cache_url")
    @classmethod
    def _compile_cache(cls, value: str | None) -> str | None:
        if value is not None and not (value.startswith("s3://") or value.startswith("/")):
            raise ValueError("must be an s3:// URL or an absolute path in the container")
        if value is not None and value.rstrip("/").startswith(MODEL_DIR):
            raise ValueError(f"must not be under {MODEL_DIR}, which is read-only on SageMaker")
        return value

    @field_validator("env")
    @classmethod
    def _env(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            if not _ENV_NAME.match(name):
                raise ValueError(f"{name!r} is not a valid environment variable name")
            if "\n" in text or "\x00" in text:
                raise ValueError(f"{name} has a newline or NUL in its value")
            if _SECRET_ENV.search(name):
                raise ValueError(
                    f"{name} looks like a secret; pass the Hugging Face token with HF_TOKEN in your "
                    "environment instead of writing it into a spec"
                )
        return value

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: dict[str, str]) -> dict[str, str]:
        for key, text in value.items():
            if not (1 <= len(key) <= 128) or not _TAG.match(key) or key.lower().startswith("aws:"):
                raise ValueError(f"tag key {key!r} must be 1-128 safe characters, not starting with aws:")
            if len(text) > 256 or not _TAG.match(text):
                raise ValueError(f"tag {key!r} value must be at most 256 safe characters")
        return value

    @field_validator("data_capture_uri")
    @classmethod
    def _data_capture_uri(cls, value: str | None) -> str | None:
        if value is None:
            return value
        bucket = value.removeprefix("s3://").partition("/")[0]
        if not value.startswith("s3://") or not BUCKET_NAME.match(bucket) or len(value) > _MAX_CAPTURE_URI:
            raise ValueError(f"must be an s3://BUCKET/PREFIX URI of at most {_MAX_CAPTURE_URI} characters")
        return value

    @field_validator("capture_percent")
    @classmethod
    def _capture_percent(cls, value: int | None, info: ValidationInfo) -> int | None:
        # data_capture_uri is declared first, so it is in info.data once it validated.
        if value is not None and "data_capture_uri" in info.data and info.data["data_capture_uri"] is None:
            raise ValueError("applies only with data_capture_uri (--data-capture s3://...)")
        return value

    @model_validator(mode="before")
    @classmethod
    def _count_from_scaling(cls, data: Any) -> Any:
        # With autoscaling and no instance_count, the endpoint starts at min_instances.
        if isinstance(data, dict) and data.get("instance_count") is None and isinstance(data.get("scaling"), Mapping):
            low = data["scaling"].get("min_instances")
            if isinstance(low, int) and low >= 1:
                data = {**data, "instance_count": low}
        return data

    @field_validator("scaling")
    @classmethod
    def _scaling(cls, value: ScalingSpec | None, info: ValidationInfo) -> ScalingSpec | None:
        count = info.data.get("instance_count")
        if value is not None and count is not None and not value.min_instances <= count <= value.max_instances:
            raise ValueError(
                f"instance_count {count} must lie within min_instances..max_instances "
                f"({value.min_instances}..{value.max_instances})"
            )
        return value

    def replace(self, **changes: Any) -> DeploymentSpec:
        """A copy with ``changes`` applied and validated."""
        return build_spec({**self.model_dump(), **changes})


def build_spec(values: dict[str, Any]) -> DeploymentSpec:
    """Validate ``values`` into a spec, turning pydantic's errors into a ``ConfigError``."""
    try:
        return DeploymentSpec(**values)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            field = ".".join(str(part) for part in error["loc"]) or "spec"
            message = error["msg"].removeprefix("Value error, ")
            if error["type"] == "extra_forbidden":
                message = _unknown_setting(field)
            shown = repr(error.get("input"))
            problems.append((field, f"{message} (got {shown[:80] + '...' if len(shown) > 80 else shown})"))
        raise ConfigError.from_problems(problems) from None


def _unknown_setting(key: str) -> str:
    known = {**{name: name for name in DeploymentSpec.model_fields}, **config_aliases()}
    close = difflib.get_close_matches(key.replace("-", "_").lower(), list(known), n=1)
    if close:
        return f"unknown setting; did you mean {known[close[0]]}?"
    return f"unknown setting; allowed settings are {', '.join(DeploymentSpec.model_fields)}"


def _field_names(data: dict[str, Any], path: Path) -> dict[str, Any]:
    """The file's settings keyed by field name: a CLI name (instance-type, tp) becomes its field's."""
    aliases = config_aliases()
    values: dict[str, Any] = {}
    spelled: dict[str, str] = {}
    problems = []
    for key, value in data.items():
        name = str(key)
        if name not in DeploymentSpec.model_fields:
            underscored = name.replace("-", "_")
            name = underscored if underscored in DeploymentSpec.model_fields else aliases.get(name, name)
        block, dot, inner = name.partition(".")
        if dot and isinstance(values.get(block, {}), dict):
            # a block's flag name at the top level (max-instances: 4) sets that key of the block
            values[block], spelled[block] = {**values.get(block, {}), inner: value}, str(key)
            continue
        if name in values:
            problems.append((str(key), f"sets {name} again ({spelled[name]} set it already in {path})"))
        values[name], spelled[name] = value, str(key)
    if problems:
        raise ConfigError.from_problems(problems)
    return values


def _read_file(path: Path) -> dict[str, Any]:
    path = check_path(path, "config")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}", field="config", value=str(path)) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not UTF-8 text (byte {exc.start})", field="config", value=str(path)) from None
    if path.suffix == ".toml":
        try:
            import tomllib
        except ImportError:  # Python 3.10
            import tomli as tomllib
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path} is not valid TOML: {exc}", field="config") from None
    elif path.suffix in (".yaml", ".yml"):
        import yaml

        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path} is not valid YAML: {exc}", field="config") from None
    else:
        raise ConfigError(f"{path} must end in .yaml, .yml or .toml", field="config", value=str(path))
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of settings", field="config", value=str(path))
    return _field_names(data, path)


MERGED_MAPPINGS = frozenset({"env", "tags", "scaling"})
"""Spec fields whose file and override values merge key by key."""


def load_spec(config_file: str | Path | None = None, **overrides: Any) -> DeploymentSpec:
    """Load a spec from an optional YAML/TOML file, then apply ``overrides``.

    Overrides whose value is ``None`` are ignored, so unset CLI flags leave the
    file's value in place. The mappings (``env``, ``tags``, ``scaling``) merge key by key,
    the override's value winning, as ``--env``/``--tag``/``--max-instances`` add to what the file sets.

    Raises:
        ConfigError: the file cannot be read or parsed, or a setting is invalid.
    """
    values: dict[str, Any] = _read_file(Path(config_file)) if config_file is not None else {}
    for key, value in overrides.items():
        if value is None:
            continue
        current = values.get(key)
        if key in MERGED_MAPPINGS and isinstance(current, Mapping) and isinstance(value, Mapping):
            value = {**current, **value}
        values[key] = value
    return build_spec(values)
