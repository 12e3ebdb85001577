"""packager.package(): layout, every source kind, determinism, skip, failures, tokenizer, numerics."""
from __future__ import annotations

import json
import time
from pathlib import Path

import inf2_deploy
import inf2_serving
import pytest
import torch
from ckpt_helpers import SMALL_CONFIG, small_tensors, spec_for
from inf2_deploy.artifact.manifest import MANIFEST_NAME, Artifact
from inf2_deploy.artifact.packager import package
from inf2_deploy.artifact.properties import render_properties
from inf2_deploy.errors import ConfigError, ModelSourceError, PlanError
from inf2_deploy.spec.planner import check_plan, make_plan
from safetensors.torch import load_file

TINY_LAYOUT = {"model.safetensors", "config.json", "generation_config.json", "vocab.json", "merges.txt",
               "tokenizer_config.json", "special_tokens_map.json", "serving.properties", "model.py"}


def relative_files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def tiny_artifact(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Artifact:
    return package(spec_for("tiny-gptj"), tmp_path_factory.mktemp("art") / "tiny", cache_dir=cache_dir)


def test_public_api_is_exported() -> None:
    assert inf2_deploy.package is package and inf2_deploy.Artifact is Artifact


def test_tiny_layout_is_what_the_container_sees(tiny_artifact: Artifact) -> None:
    folder = tiny_artifact.directory
    files = relative_files(folder)
    serving_root = Path(inf2_serving.__file__).parent
    package_files = {f"inf2_serving/{p.relative_to(serving_root).as_posix()}" for p in serving_root.rglob("*.py")
                     if "__pycache__" not in p.parts and p != serving_root / "model.py"}
    assert set(files) == TINY_LAYOUT | package_files | {MANIFEST_NAME}
    assert "tokenizer.json" not in files and not any("__pycache__" in name for name in files)
    assert files["model.py"] == (serving_root / "model.py").read_bytes()
    assert files["inf2_serving/djl.py"] == (serving_root / "djl.py").read_bytes()
    config = json.loads(files["config.json"])
    assert config["torch_dtype"] == "float16" and config["n_embd"] == 64
    assert json.loads(files["tokenizer_config.json"])["tokenizer_class"] == "GPT2Tokenizer"
    plan = check_plan(spec_for("tiny-gptj"))
    assert files["serving.properties"].decode() == render_properties(plan.serving_properties)
    assert "option.dtype=fp16" in files["serving.properties"].decode()
    assert {f.path for f in tiny_artifact.files} == set(files) - {MANIFEST_NAME}
    assert tiny_artifact.plan == {"serving_properties": plan.serving_properties}
    assert tiny_artifact.source["kind"] == "tiny-gptj"
    assert Artifact.load(folder) == tiny_artifact
    tiny_artifact.verify()
    assert oct(folder.stat().st_mode & 0o777) == "0o755"


def test_unchanged_package_is_skipped_fast(tiny_artifact: Artifact, cache_dir: Path) -> None:
    manifest = tiny_artifact.manifest_path.stat().st_mtime_ns
    started = time.perf_counter()
    again = package(spec_for("tiny-gptj"), tiny_artifact.directory, cache_dir=cache_dir)
    assert time.perf_counter() - started < 1.0
    assert again == tiny_artifact and tiny_artifact.manifest_path.stat().st_mtime_ns == manifest


@pytest.mark.parametrize(("fmt", "shards"), [("safetensors", 1), ("safetensors", 3), ("pytorch", 1),
                                             ("pytorch", 2)])
@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
def test_every_source_kind(make_checkpoint, tmp_path: Path, fmt: str, shards: int, dtype: str) -> None:
    source = make_checkpoint(fmt, shards)
    artifact = package(spec_for(source, dtype=dtype), tmp_path / "out", max_shard_bytes=30_000)
    folder = artifact.directory
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    want = {"fp16": torch.float16, "bf16": torch.bfloat16}[dtype]
    tensors = small_tensors()
    loaded = {}
    for name in sorted(set(index["weight_map"].values())):
        loaded.update(load_file(str(folder / name)))
    assert set(loaded) == set(tensors)
    for name, tensor in loaded.items():
        assert torch.equal(tensor, torch.from_numpy(tensors[name]).to(want)), name
    assert json.loads((folder / "config.json").read_text())["torch_dtype"] == str(want).removeprefix("torch.")
    assert artifact.conversion == {"dtype": dtype, "max_shard_bytes": 30_000}


def test_same_input_gives_identical_bytes_and_fingerprint(make_checkpoint, tmp_path: Path) -> None:
    source = make_checkpoint("pytorch", 2)
    first = package(spec_for(source), tmp_path / "a", max_shard_bytes=30_000)
    second = package(spec_for(source), tmp_path / "b", max_shard_bytes=30_000)
    forced = package(spec_for(source), tmp_path / "a", max_shard_bytes=30_000, force=True)
    assert relative_files(first.directory) == relative_files(second.directory)
    assert first.fingerprint == second.fingerprint == forced.fingerprint
    assert first.files == second.files


def test_changed_settings_or_damaged_files_rebuild(make_checkpoint, tmp_path: Path) -> None:
    source = make_checkpoint("safetensors")
    first = package(spec_for(source), tmp_path / "out")
    bf16 = package(spec_for(source, dtype="bf16"), tmp_path / "out")
    assert bf16.fingerprint != first.fingerprint and bf16.conversion["dtype"] == "bf16"
    (tmp_path / "out" / "model.safetensors").write_bytes(b"damaged")
    rebuilt = package(spec_for(source, dtype="bf16"), tmp_path / "out")
    assert rebuilt == bf16
    rebuilt.verify()


def test_invalid_plan_is_refused_before_anything_is_written(tmp_path: Path, cache_dir: Path) -> None:
    spec = spec_for("tiny-gptj", tensor_parallel_degree=3)
    expected = make_plan(spec).errors
    with pytest.raises(PlanError) as caught:
        package(spec, tmp_path / "out", cache_dir=cache_dir)
    assert caught.value.problems == expected
    assert list(tmp_path.iterdir()) == []


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def test_corrupt_input_leaves_no_half_written_artifact(make_checkpoint, tmp_path: Path) -> None:
    source = make_checkpoint("safetensors", 2)
    good = package(spec_for(source), tmp_path / "out")
    before = relative_files(good.directory)
    shard = source / "model-00002-of-00002.safetensors"
    shard.write_bytes(shard.read_bytes()[:-100])
    with pytest.raises(ModelSourceError, match="model-00002-of-00002.safetensors is corrupt or truncated"):
        package(spec_for(source), tmp_path / "out")
    assert relative_files(good.directory) == before  # the previous artifact is untouched
    with pytest.raises(ModelSourceError):
        package(spec_for(source), tmp_path / "fresh")
    assert not (tmp_path / "fresh").exists() and leftovers(tmp_path) == []


def test_missing_tokenizer_is_named(make_checkpoint, tmp_path: Path) -> None:
    source = make_checkpoint("safetensors")
    (source / "merges.txt").unlink()
    with pytest.raises(ModelSourceError, match="vocab.json and merges.txt .* missing"):
        package(spec_for(source), tmp_path / "out")
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


def test_unrelated_output_folder_is_not_replaced(make_checkpoint, tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="without manifest.json"):
        package(spec_for(make_checkpoint("safetensors")), tmp_path / "out")
    assert (tmp_path / "out" / "notes.txt").read_text() == "mine"


def test_tokenizer_json_only_source_becomes_vocab_and_merges(make_checkpoint, tiny_gptj: Path,
                                                               tmp_path: Path) -> None:
    from tokenizers import ByteLevelBPETokenizer
    from transformers import AutoTokenizer

    source = make_checkpoint("safetensors")
    fast = ByteLevelBPETokenizer(str(tiny_gptj / "vocab.json"), str(tiny_gptj / "merges.txt"))
    fast.save(str(source / "tokenizer.json"))
    for name in ("vocab.json", "merges.txt", "special_tokens_map.json"):
        (source / name).unlink()
    (source / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "TokenizersBackend",
                                                              "eos_token": "<|endoftext|>",
                                                              "tokenizer_file": "tokenizer.json"}))
    folder = package(spec_for(source), tmp_path / "out").directory
    assert not (folder / "tokenizer.json").exists()
    assert json.loads((folder / "special_tokens_map.json").read_text()) == {"eos_token": "<|endoftext|>"}
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert tokenizer("Hello world")["input_ids"] == [15496, 995]


def test_non_gptj_checkpoint_is_refused(make_checkpoint, tmp_path: Path) -> None:
    source = make_checkpoint("safetensors", config={**SMALL_CONFIG, "model_type": "llama"})
    with pytest.raises(ConfigError, match="model_type 'llama'"):
        package(spec_for(source), tmp_path / "out")


@pytest.mark.slow
def test_packaged_fp16_tiny_gptj_matches_the_fp32_model(tiny_artifact: Artifact, tiny_gptj: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_artifact.directory)
    ids = tokenizer("Hello world, this is a packaging check.", return_tensors="pt")["input_ids"]
    assert ids[0, :2].tolist() == [15496, 995]
    original = AutoModelForCausalLM.from_pretrained(tiny_gptj, dtype=torch.float32).eval()
    packaged = AutoModelForCausalLM.from_pretrained(tiny_artifact.directory, dtype="auto").eval()
    assert packaged.dtype == torch.float16
    packaged = packaged.float()  # fp16 weights, fp32 arithmetic: isolates the weight rounding
    with torch.no_grad():
        want = original(ids).logits
        got = packaged(ids).logits
    # fp16 keeps 11 significant bits: weight rounding moves logits by ~1e-3 of their scale.
    scale = want.abs().max().item()
    assert (got - want).abs().max().item() <= 2e-3 * scale + 1e-4
    assert torch.equal(got.argmax(-1), want.argmax(-1))


def test_image_lookups_are_cached_per_sdk_version_and_failures_are_not(tmp_path: Path) -> None:
    from inf2_deploy.artifact.image_cache import cached_image_resolver
    from inf2_deploy.aws.images import resolve_image_uri
    from inf2_deploy.errors import ImageNotFoundError

    resolve = cached_image_resolver(tmp_path)
    uri = resolve("us-east-1", "0.29.0")
    assert uri == resolve_image_uri("us-east-1", "0.29.0")
    cached = json.loads((tmp_path / "image-uris.json").read_text())
    assert list(cached.values()) == [uri] and "0.29.0" in next(iter(cached))

    def registry_must_not_be_asked(region: str, version: str) -> str:
        raise AssertionError("cache miss")

    assert cached_image_resolver(tmp_path, resolve=registry_must_not_be_asked)("us-east-1", "0.29.0") == uri
    upgraded = cached_image_resolver(tmp_path, resolve=registry_must_not_be_asked,
                                     sdk_version=lambda: "sagemaker-core 999")
    with pytest.raises(AssertionError, match="cache miss"):  # an SDK upgrade misses
        upgraded("us-east-1", "0.29.0")
    for _ in range(2):
        with pytest.raises(ImageNotFoundError):
            resolve("af-south-1", "0.29.0")
    assert len(json.loads((tmp_path / "image-uris.json").read_text())) == 1


def test_without_an_sdk_version_image_lookups_are_not_remembered(tmp_path: Path) -> None:
    from inf2_deploy.artifact.image_cache import cached_image_resolver

    asked: list[str] = []

    def registry(region: str, version: str) -> str:
        asked.append(region)
        return f"image-for-{region}"

    resolve = cached_image_resolver(tmp_path / "cache", resolve=registry, sdk_version=lambda: None)
    assert [resolve("us-east-1", "0.29.0") for _ in range(2)] == ["image-for-us-east-1"] * 2
    assert asked == ["us-east-1", "us-east-1"] and not (tmp_path / "cache").exists()
