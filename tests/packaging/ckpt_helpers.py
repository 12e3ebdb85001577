"""Small GPT-J-shaped checkpoints in every source layout, and offline specs, for packaging tests."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from inf2_deploy.artifact.tiny import TINY_GPTJ_CONFIG
from inf2_deploy.spec.catalog import gptj_tensor_shapes
from inf2_deploy.spec.deployment_spec import DeploymentSpec, load_spec

# A GPT-J small enough to write in milliseconds, with every real tensor name.
SMALL_CONFIG = {**TINY_GPTJ_CONFIG, "n_layer": 2, "n_embd": 32, "n_head": 4, "rotary_dim": 8,
                "vocab_size": 512}
TOKENIZER_NAMES = ("vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json")


def small_tensors(seed: int = 1, config: dict | None = None) -> dict[str, np.ndarray]:
    """Random fp32 tensors with GPT-J names and the shapes ``config`` implies."""
    rng = np.random.default_rng(seed)
    return {name: rng.standard_normal(shape, dtype=np.float32) * np.float32(0.5)
            for name, shape in gptj_tensor_shapes(config or SMALL_CONFIG).items()}


def split(tensors: dict, parts: int) -> list[dict]:
    names = list(tensors)
    size = -(-len(names) // parts)
    return [{n: tensors[n] for n in names[i:i + size]} for i in range(0, len(names), size)]


def write_checkpoint(folder: Path, tensors: dict[str, np.ndarray], *, fmt: str, shards: int = 1,
                     config: dict | None = None, tokenizer_from: Path | None = None,
                     torch_dtype: str | None = None) -> Path:
    """Write a Hugging Face checkpoint folder in ``fmt`` (safetensors or pytorch), optionally sharded."""
    import torch
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config or SMALL_CONFIG))
    if tokenizer_from is not None:
        for name in TOKENIZER_NAMES:
            shutil.copy(tokenizer_from / name, folder / name)
    as_torch = {n: torch.from_numpy(a.copy()) for n, a in tensors.items()}
    if torch_dtype is not None:
        as_torch = {n: t.to(getattr(torch, torch_dtype)) if t.is_floating_point() else t
                    for n, t in as_torch.items()}
    ext = "safetensors" if fmt == "safetensors" else "bin"
    stem = "model" if fmt == "safetensors" else "pytorch_model"

    def save(part: dict, path: Path) -> None:
        if fmt == "safetensors":
            save_file(part, str(path), metadata={"format": "pt"})
        else:
            torch.save(part, path)

    if shards == 1:
        save(as_torch, folder / f"{stem}.{ext}")
        return folder
    weight_map = {}
    for i, part in enumerate(split(as_torch, shards)):
        name = f"{stem}-{i + 1:05d}-of-{shards:05d}.{ext}"
        save(part, folder / name)
        weight_map.update(dict.fromkeys(part, name))
    (folder / f"{stem}.{ext}.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return folder


def spec_for(model: str | Path, **settings) -> DeploymentSpec:
    """A spec that plans offline: explicit region and instance."""
    defaults = {"region": "us-east-1", "instance_type": "ml.inf2.xlarge", "dtype": "fp16"}
    return load_spec(None, model=str(model), **{**defaults, **settings})
