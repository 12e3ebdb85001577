"""Facts about Inferentia2 instances and GPT-J models.

The instance table comes from the Neuron documentation ("inf2-arch"). Model
facts are read from a checkpoint's ``config.json``; the parameter count is
summed from the tensor shapes GPT-J's modeling code creates, not taken from a
published constant.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError, ModelSourceError
from .model_ref import ModelRef, read_model_json

__all__ = [
    "GIB",
    "HBM_PER_CORE_BYTES",
    "InstanceType",
    "INSTANCES",
    "instance",
    "ModelFacts",
    "GPTJ_6B_CONFIG",
    "SUPPORTED_MODEL_TYPES",
    "gptj_tensor_shapes",
    "model_config_for",
]

GIB = 1024**3
# djl-serving sizes Neuron models with MEMORY_PER_CORE = 16.0 GiB of HBM.
HBM_PER_CORE_BYTES = 16 * GIB
HBM_BANDWIDTH_PER_CHIP = 820e9  # bytes/s, Neuron docs: Inferentia2 chip HBM bandwidth

_PRICE_SOURCE = ("AWS EC2 on-demand list price for inf2 in us-east-1 as published at the 2023 launch; "
                 "SageMaker ml.* rates are higher: pass --price-per-hour")


@dataclass(frozen=True)
class InstanceType:
    """One SageMaker ``ml.inf2`` instance type."""

    name: str
    vcpus: int
    host_memory_gib: int
    chips: int
    neuron_cores: int
    #: reference USD/hour; override with ``price_per_hour`` (see ``price_source``)
    reference_price_per_hour: float
    price_source: str = _PRICE_SOURCE

    @property
    def host_memory_bytes(self) -> int:
        return self.host_memory_gib * GIB

    @property
    def hbm_bytes(self) -> int:
        return self.neuron_cores * HBM_PER_CORE_BYTES

    @property
    def hbm_bandwidth(self) -> float:
        """Aggregate HBM bandwidth of all chips, in bytes/s."""
        return self.chips * HBM_BANDWIDTH_PER_CHIP


INSTANCES: dict[str, InstanceType] = {
    spec.name: spec
    for spec in (
        InstanceType("ml.inf2.xlarge", 4, 16, 1, 2, 0.7582),
        InstanceType("ml.inf2.8xlarge", 32, 128, 1, 2, 1.9679),
        InstanceType("ml.inf2.24xlarge", 96, 384, 6, 12, 6.4906),
        InstanceType("ml.inf2.48xlarge", 192, 768, 12, 24, 12.9813),
    )
}


def instance(name: str) -> InstanceType:
    """The catalog entry for ``name``.

    Raises:
        ConfigError: ``name`` is not an ml.inf2 type.
    """
    try:
        return INSTANCES[name]
    except KeyError:
        raise ConfigError(
            f"unknown instance type {name!r}; use one of {', '.join(INSTANCES)}",
            field="instance_type",
            value=name,
        ) from None


SUPPORTED_MODEL_TYPES = ("gptj",)

# EleutherAI/gpt-j-6b's config.json, kept here so planning needs no network.
GPTJ_6B_CONFIG: dict[str, Any] = {
    "_name_or_path": "EleutherAI/gpt-j-6b",
    "architectures": ["GPTJForCausalLM"],
    "model_type": "gptj",
    "n_layer": 28,
    "n_embd": 4096,
    "n_head": 16,
    "rotary_dim": 64,
    "n_positions": 2048,
    "n_inner": None,
    "vocab_size": 50400,
    "activation_function": "gelu_new",
    "layer_norm_epsilon": 1e-05,
    "initializer_range": 0.02,
    "bos_token_id": 50256,
    "eos_token_id": 50256,
    "tie_word_embeddings": False,
    "rotary": True,
    "torch_dtype": "float32",
}
# Planning an alias needs no network: its config.json is kept here.
_ALIAS_CONFIGS = {"gpt-j-6b": GPTJ_6B_CONFIG}


def gptj_tensor_shapes(config: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """Every tensor of a Hugging Face GPT-J checkpoint, by name, with its shape."""
    layers, embd, vocab = config["n_layer"], config["n_embd"], config["vocab_size"]
    inner = config.get("n_inner") or 4 * embd
    shapes: dict[str, tuple[int, ...]] = {"transformer.wte.weight": (vocab, embd)}
    for i in range(layers):
        block = f"transformer.h.{i}"
        shapes[f"{block}.ln_1.weight"] = (embd,)
        shapes[f"{block}.ln_1.bias"] = (embd,)
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            shapes[f"{block}.attn.{proj}.weight"] = (embd, embd)
        shapes[f"{block}.mlp.fc_in.weight"] = (inner, embd)
        shapes[f"{block}.mlp.fc_in.bias"] = (inner,)
        shapes[f"{block}.mlp.fc_out.weight"] = (embd, inner)
        shapes[f"{block}.mlp.fc_out.bias"] = (embd,)
    shapes["transformer.ln_f.weight"] = (embd,)
    shapes["transformer.ln_f.bias"] = (embd,)
    shapes["lm_head.weight"] = (vocab, embd)
    shapes["lm_head.bias"] = (vocab,)
    return shapes


@dataclass(frozen=True)
class ModelFacts:
    """What the planner needs to know about a GPT-J checkpoint."""

    source: str
    model_type: str
    n_layer: int
    n_embd: int
    n_head: int
    n_positions: int
    vocab_size: int
    parameters: int
    config: dict[str, Any]

    @classmethod
    def from_config(cls, config: dict[str, Any], *, source: str) -> ModelFacts:
        """Read the facts from a ``config.json`` mapping.

        Raises:
            ConfigError: the model type is not supported or a required key is missing.
        """
        model_type = config.get("model_type")
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise ConfigError(
                f"{source} has model_type {model_type!r}; supported: {', '.join(SUPPORTED_MODEL_TYPES)}",
                field="model",
                value=source,
            )
        missing = [key for key in ("n_layer", "n_embd", "n_head", "n_positions", "vocab_size") if key not in config]
        if missing:
            raise ConfigError(
                f"{source}'s config.json lacks {', '.join(missing)}", field="model", value=source
            )
        parameters = sum(math.prod(shape) for shape in gptj_tensor_shapes(config).values())
        return cls(
            source=source,
            model_type=model_type,
            n_layer=int(config["n_layer"]),
            n_embd=int(config["n_embd"]),
            n_head=int(config["n_head"]),
            n_positions=int(config["n_positions"]),
            vocab_size=int(config["vocab_size"]),
            parameters=parameters,
            config=dict(config),
        )


def _s3_config(url: str) -> dict[str, Any]:
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, _, key = url.removeprefix("s3://").partition("/")
    key = key.rstrip("/") + "/config.json" if key else "config.json"
    try:
        body = boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
    except (BotoCoreError, ClientError) as exc:
        raise ModelSourceError(f"cannot read s3://{bucket}/{key}: {exc}", field="model", value=url) from None
    return json.loads(body)


def _hub_config(repo_id: str) -> dict[str, Any]:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        path = hf_hub_download(repo_id, "config.json")
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError) as exc:
        raise ModelSourceError(
            f"cannot fetch config.json of {repo_id} from the Hugging Face Hub: {exc}",
            field="model",
            value=repo_id,
            hint="check the id and your network, or pass a local folder",
        ) from None
    return read_model_json(Path(path), repo_id)


def model_config_for(model: str) -> dict[str, Any]:
    """The ``config.json`` of ``model``: an alias, a local folder, an s3:// prefix or a Hub id.

    Only ``config.json`` is fetched; weights are not touched.

    Raises:
        ModelSourceError: ``model`` is no model reference (see :meth:`ModelRef.parse`), or its
            config cannot be found or read.
    """
    ref = ModelRef.parse(model)
    if ref.kind == "tiny":
        from ..artifact.tiny import TINY_GPTJ_CONFIG

        return dict(TINY_GPTJ_CONFIG)
    if ref.text in _ALIAS_CONFIGS:
        return dict(_ALIAS_CONFIGS[ref.text])
    if ref.kind == "s3":
        return _s3_config(ref.location)
    if ref.kind == "local":
        return read_model_json(ref.path / "config.json", model)
    return _hub_config(ref.location)
