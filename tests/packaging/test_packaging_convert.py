"""convert.py and tensors.py: dtype casts against torch, streaming shards and index, validation, corrupt input."""
from __future__ import annotations

import json
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
import torch
from ckpt_helpers import SMALL_CONFIG, small_tensors, write_checkpoint
from inf2_deploy.artifact.convert import SAFE_INDEX_NAME, convert_weights, plan_shards
from inf2_deploy.artifact.sources import open_checkpoint
from inf2_deploy.artifact.tensors import cast_array, read_tensor_infos
from inf2_deploy.errors import ModelSourceError
from inf2_deploy.spec.catalog import gptj_tensor_shapes
from safetensors import safe_open
from safetensors.torch import load_file, save_file

EDGE_VALUES = np.array([0.0, -0.0, 1.0, -1.5, 3.14159265, 65504.0, 65520.0, 1e5, -1e38, 3e38, 1e-8, 6e-8,
                        2.9e-8, 1e-40, 0.1, 1 / 3, np.inf, -np.inf], dtype=np.float32)


def values() -> np.ndarray:
    rng = np.random.default_rng(7)
    spread = (rng.standard_normal(4000) * np.exp(rng.uniform(-20, 20, 4000))).astype(np.float32)
    return np.concatenate([EDGE_VALUES, spread])


@pytest.mark.parametrize(("target", "torch_dtype"), [("fp16", torch.float16), ("bf16", torch.bfloat16)])
def test_float_casts_equal_torch_bit_for_bit(target: str, torch_dtype: torch.dtype) -> None:
    source = values()
    ours = cast_array(source, target)
    theirs = torch.from_numpy(source).to(torch_dtype)
    assert ours.dtype.itemsize == 2
    assert np.array_equal(ours.view(np.uint16), theirs.view(torch.int16).numpy().view(np.uint16))


def test_bf16_input_to_fp16_equals_torch() -> None:
    source = torch.from_numpy(values()).to(torch.bfloat16)
    as_numpy = source.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    ours = cast_array(as_numpy, "fp16")
    assert np.array_equal(ours.view(np.uint16), source.to(torch.float16).view(torch.int16).numpy().view(np.uint16))


def test_fp32_passes_through_and_integers_are_untouched() -> None:
    source = values()
    assert cast_array(source, "fp32") is source
    for ints in (np.arange(10, dtype=np.int64), np.array([True, False]), np.arange(5, dtype=np.uint8)):
        for target in ("fp16", "bf16", "fp32"):
            assert cast_array(ints, target) is ints


@pytest.mark.parametrize("target", ["fp16", "bf16", "fp32"])
def test_streamed_file_has_cast_tensors_and_untouched_ints(tmp_path: Path, target: str) -> None:
    tensors = {"w": torch.from_numpy(values()).reshape(-1, 2), "ids": torch.arange(-5, 50, dtype=torch.int64),
               "mask": torch.tensor([True, False, True]), "h": torch.randn(3, 7).to(torch.float16),
               "empty": torch.zeros(0, 4)}
    src = tmp_path / "src"
    src.mkdir()
    save_file(tensors, str(src / "model.safetensors"))
    (src / "config.json").write_text("{}")
    out = tmp_path / "out"
    out.mkdir()
    # A tiny chunk forces many slices per tensor.
    files = convert_weights(open_checkpoint(src), out, dtype=target, chunk_bytes=100)
    assert [f.path for f in files] == ["model.safetensors"]
    loaded = load_file(str(out / "model.safetensors"))
    want = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[target]
    for name in ("w", "h", "empty"):
        assert loaded[name].dtype == want
        assert torch.equal(loaded[name], tensors[name].to(want))
    assert torch.equal(loaded["ids"], tensors["ids"]) and torch.equal(loaded["mask"], tensors["mask"])
    with safe_open(str(out / "model.safetensors"), framework="pt") as handle:
        assert handle.metadata() == {"format": "pt"}


@pytest.mark.parametrize(("fmt", "shards"), [("safetensors", 1), ("safetensors", 3), ("pytorch", 1),
                                             ("pytorch", 2)])
def test_sharded_output_and_index(tmp_path: Path, fmt: str, shards: int) -> None:
    tensors = small_tensors()
    checkpoint = open_checkpoint(write_checkpoint(tmp_path / "src", tensors, fmt=fmt, shards=shards))
    out = tmp_path / "out"
    out.mkdir()
    limit = 40_000  # bytes of fp16 data per shard: several shards for this model
    files = convert_weights(checkpoint, out, dtype="fp16", expected_shapes=gptj_tensor_shapes(SMALL_CONFIG),
                            max_shard_bytes=limit)
    index = json.loads((out / SAFE_INDEX_NAME).read_text())
    shard_names = sorted({f.path for f in files} - {SAFE_INDEX_NAME})
    count = len(shard_names)
    assert count > 2 and shard_names == [f"model-{i:05d}-of-{count:05d}.safetensors" for i in range(1, count + 1)]
    assert set(index["weight_map"]) == set(tensors)
    assert sorted(set(index["weight_map"].values())) == shard_names
    total = 0
    for name in shard_names:
        shard = load_file(str(out / name))
        data_bytes = sum(t.numel() * t.element_size() for t in shard.values())
        total += data_bytes
        assert data_bytes <= limit or len(shard) == 1
        for tensor_name, tensor in shard.items():
            assert index["weight_map"][tensor_name] == name
            assert torch.equal(tensor, torch.from_numpy(tensors[tensor_name]).to(torch.float16))
    assert index["metadata"]["total_size"] == total
    for file in files:
        assert file.size == (out / file.path).stat().st_size


def test_chunk_size_and_repetition_do_not_change_bytes(tmp_path: Path) -> None:
    checkpoint = open_checkpoint(write_checkpoint(tmp_path / "src", small_tensors(), fmt="safetensors"))
    outputs = []
    for run, chunk in enumerate((64, 1 << 20, 1 << 20)):
        out = tmp_path / f"out{run}"
        out.mkdir()
        outputs.append(convert_weights(checkpoint, out, dtype="bf16", chunk_bytes=chunk))
    assert outputs[0] == outputs[1] == outputs[2]


def test_plan_shards_gives_an_oversized_tensor_its_own_shard(tmp_path: Path) -> None:
    checkpoint = open_checkpoint(write_checkpoint(tmp_path / "src", small_tensors(), fmt="safetensors"))
    infos = read_tensor_infos(checkpoint)
    shards = plan_shards(infos, "fp16", 1)
    assert [len(s) for s in shards] == [1] * len(infos)
    assert len(plan_shards(infos, "fp16", 1 << 40)) == 1


def test_shape_mismatch_names_the_tensor(tmp_path: Path) -> None:
    tensors = small_tensors()
    tensors["transformer.h.1.mlp.fc_in.weight"] = tensors["transformer.h.1.mlp.fc_in.weight"][:, :16].copy()
    del tensors["lm_head.bias"]
    tensors["extra.weight"] = np.zeros(3, dtype=np.float32)
    checkpoint = open_checkpoint(write_checkpoint(tmp_path / "src", tensors, fmt="safetensors"))
    (tmp_path / "out").mkdir()
    with pytest.raises(ModelSourceError) as caught:
        convert_weights(checkpoint, tmp_path / "out", dtype="fp16", expected_shapes=gptj_tensor_shapes(SMALL_CONFIG))
    message = str(caught.value)
    assert "lm_head.bias is missing" in message and "extra.weight is unexpected" in message
    assert "transformer.h.1.mlp.fc_in.weight has shape [128, 16], config.json implies [128, 32]" in message
    assert list((tmp_path / "out").iterdir()) == []  # validated before writing


def test_old_attention_buffers_are_dropped(tmp_path: Path) -> None:
    tensors = small_tensors()
    tensors["transformer.h.0.attn.bias"] = np.tril(np.ones((1, 1, 8, 8), dtype=np.uint8))
    tensors["transformer.h.0.attn.masked_bias"] = np.array(-1e9, dtype=np.float32)
    checkpoint = open_checkpoint(write_checkpoint(tmp_path / "src", tensors, fmt="pytorch"))
    (tmp_path / "out").mkdir()
    convert_weights(checkpoint, tmp_path / "out", dtype="fp16", expected_shapes=gptj_tensor_shapes(SMALL_CONFIG))
    assert set(load_file(str(tmp_path / "out" / "model.safetensors"))) == set(small_tensors())


@pytest.mark.parametrize("damage", ["truncate", "header"])
def test_corrupt_safetensors_is_named(tmp_path: Path, damage: str) -> None:
    folder = write_checkpoint(tmp_path / "src", small_tensors(), fmt="safetensors")
    path = folder / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[:-1000] if damage == "truncate" else data[:8] + b"x" * (len(data) - 8))
    with pytest.raises(ModelSourceError, match="model.safetensors is corrupt or truncated"):
        convert_weights(open_checkpoint(folder), tmp_path, dtype="fp16")


def test_corrupt_bin_is_named(tmp_path: Path) -> None:
    folder = write_checkpoint(tmp_path / "src", small_tensors(), fmt="pytorch")
    (folder / "pytorch_model.bin").write_bytes(b"not a zip file at all")
    with pytest.raises(ModelSourceError, match="pytorch_model.bin is corrupt or truncated"):
        convert_weights(open_checkpoint(folder), tmp_path, dtype="fp16")
