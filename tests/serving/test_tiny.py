"""The tiny GPT-J builder: offline, deterministic, loadable by this venv's transformers."""
from __future__ import annotations

import hashlib
import json

import pytest
from inf2_deploy.artifact.tiny import TINY_GPTJ_CONFIG, build_tiny_gptj


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_layout_and_config(tiny_gptj) -> None:
    names = {p.name for p in tiny_gptj.iterdir()}
    assert {"config.json", "generation_config.json", "model.safetensors", "vocab.json", "merges.txt",
            "tokenizer_config.json", "special_tokens_map.json"} <= names
    assert "tokenizer.json" not in names  # tokenizers 0.19 cannot read a newer one
    config = json.loads((tiny_gptj / "config.json").read_text())
    assert config == TINY_GPTJ_CONFIG
    assert (config["model_type"], config["n_layer"], config["n_embd"], config["n_head"]) == ("gptj", 2, 64, 4)
    assert json.loads((tiny_gptj / "tokenizer_config.json").read_text())["tokenizer_class"] == "GPT2Tokenizer"


def test_tensor_names_and_shapes_match_transformers(tiny_gptj) -> None:
    from safetensors.numpy import load_file
    from transformers import GPTJConfig, GPTJForCausalLM

    expected = {k: tuple(v.shape) for k, v in GPTJForCausalLM(GPTJConfig(**TINY_GPTJ_CONFIG)).state_dict().items()
                if not k.endswith(".attn.bias") and not k.endswith(".attn.masked_bias")}
    written = {k: v.shape for k, v in load_file(str(tiny_gptj / "model.safetensors")).items()}
    assert written == expected


def test_loads_and_tokenizes_like_gpt2(tiny_gptj) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_gptj)
    assert tokenizer("Hello world")["input_ids"] == [15496, 995]
    assert tokenizer.eos_token_id == 50256
    model = AutoModelForCausalLM.from_pretrained(tiny_gptj)
    assert type(model).__name__ == "GPTJForCausalLM"
    assert sum(p.numel() for p in model.parameters()) > 6_000_000


def test_deterministic_and_idempotent(tiny_gptj, tmp_path) -> None:
    again = build_tiny_gptj(tmp_path / "again")
    assert _digest(again / "model.safetensors") == _digest(tiny_gptj / "model.safetensors")
    assert build_tiny_gptj(again) == again  # a finished build with the same seed is kept
    other = build_tiny_gptj(again, seed=1)  # another seed replaces it
    assert _digest(other / "model.safetensors") != _digest(tiny_gptj / "model.safetensors")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folders left


def test_refuses_a_foreign_folder(tmp_path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a tiny-gptj build"):
        build_tiny_gptj(tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine"
