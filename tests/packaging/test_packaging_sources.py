"""sources.py: local layouts, incomplete checkpoints, the aliases and the Hub (mocked snapshot_download)."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from ckpt_helpers import small_tensors, write_checkpoint
from inf2_deploy.artifact.sources import hub_allow_patterns, open_checkpoint, resolve_checkpoint
from inf2_deploy.errors import ModelSourceError
from inf2_deploy.spec.catalog import model_config_for
from inf2_deploy.spec.model_ref import ModelRef, model_slug

SAFE_PATTERNS = ["model.safetensors", "model.safetensors.index.json", "model-*.safetensors", "config.json",
                 "generation_config.json", "vocab.json", "merges.txt", "tokenizer.json",
                 "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json"]


@pytest.mark.parametrize(("fmt", "shards", "files"), [
    ("safetensors", 1, ["model.safetensors"]),
    ("safetensors", 2, ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]),
    ("pytorch", 1, ["pytorch_model.bin"]),
    ("pytorch", 3, [f"pytorch_model-0000{i}-of-00003.bin" for i in (1, 2, 3)]),
])
def test_local_layouts(tmp_path: Path, fmt: str, shards: int, files: list[str]) -> None:
    folder = write_checkpoint(tmp_path / "ckpt", small_tensors(), fmt=fmt, shards=shards)
    checkpoint = resolve_checkpoint(str(folder))
    assert checkpoint.weight_format == fmt
    assert [p.name for p in checkpoint.weight_files] == files
    assert checkpoint.source["kind"] == "local" and checkpoint.source["id"] == str(folder)
    assert checkpoint.config["n_embd"] == 32


def test_fingerprint_is_stable_and_follows_changes(tmp_path: Path) -> None:
    folder = write_checkpoint(tmp_path / "ckpt", small_tensors(), fmt="safetensors")
    first = open_checkpoint(folder).source["fingerprint"]
    assert open_checkpoint(folder).source["fingerprint"] == first
    stat = (folder / "model.safetensors").stat()
    os.utime(folder / "model.safetensors", ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert open_checkpoint(folder).source["fingerprint"] != first


def test_missing_shard_is_named(tmp_path: Path) -> None:
    folder = write_checkpoint(tmp_path / "ckpt", small_tensors(), fmt="safetensors", shards=3)
    (folder / "model-00002-of-00003.safetensors").unlink()
    with pytest.raises(ModelSourceError, match="model-00002-of-00003.safetensors is missing") as caught:
        open_checkpoint(folder)
    assert caught.value.exit_code == 2


def test_missing_config_and_weights_are_named(tmp_path: Path) -> None:
    folder = write_checkpoint(tmp_path / "ckpt", small_tensors(), fmt="pytorch")
    (folder / "config.json").unlink()
    with pytest.raises(ModelSourceError, match="config.json is missing"):
        open_checkpoint(folder)
    (folder / "config.json").write_text("{}")
    (folder / "pytorch_model.bin").unlink()
    with pytest.raises(ModelSourceError, match="model.safetensors.*pytorch_model.bin.* missing"):
        open_checkpoint(folder)


def test_unknown_names_and_s3_are_refused() -> None:
    with pytest.raises(ModelSourceError, match="neither a checkpoint folder"):
        resolve_checkpoint("./no/such/folder")
    with pytest.raises(ModelSourceError, match="local folder or the Hub"):
        resolve_checkpoint("s3://bucket/prefix")


@pytest.mark.parametrize(("model", "kind", "location"), [
    ("tiny-gptj", "tiny", "tiny-gptj"),
    ("gpt-j-6b", "hub", "EleutherAI/gpt-j-6b"),
    ("someone/gptj", "hub", "someone/gptj"),
    ("s3://bucket/models/gptj/", "s3", "s3://bucket/models/gptj/"),
])
def test_model_references_parse_to_one_kind(model: str, kind: str, location: str) -> None:
    assert ModelRef.parse(model) == ModelRef(model, kind, location)


@pytest.mark.parametrize("model", ["./no/such/folder", "/no/such/folder", "~/no/such", "a/b/c", "plainname"])
def test_plan_and_package_refuse_the_same_references_alike(model: str) -> None:
    for read in (ModelRef.parse, model_config_for, resolve_checkpoint):
        with pytest.raises(ModelSourceError, match="neither a checkpoint folder nor a Hugging Face id"):
            read(model)


def test_a_folder_reference_is_local_and_expanded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = write_checkpoint(tmp_path / "ckpt", small_tensors(), fmt="safetensors")
    monkeypatch.setenv("HOME", str(tmp_path))
    ref = ModelRef.parse("~/ckpt")
    assert (ref.kind, ref.path) == ("local", folder)
    assert model_config_for("~/ckpt") == resolve_checkpoint("~/ckpt").config


@pytest.mark.parametrize(("model", "slug"), [
    ("EleutherAI/gpt-j-6b", "gpt-j-6b"), ("/data/My_Model/", "my-model"), ("s3://b/models/GPTJ", "gptj"),
    ("___", "model"), ("x" * 100, "x" * 48),
])
def test_model_slug(model: str, slug: str) -> None:
    assert model_slug(model) == slug
    assert model_slug("a-" * 40, max_length=8) == "a-a-a-a"  # no trailing dash after cutting


def test_tiny_alias_builds_into_the_cache(tmp_path: Path) -> None:
    checkpoint = resolve_checkpoint("tiny-gptj", cache_dir=tmp_path)
    assert checkpoint.directory.parent == tmp_path
    assert checkpoint.source["kind"] == "tiny-gptj" and checkpoint.source["id"] == "tiny-gptj"
    assert resolve_checkpoint("tiny-gptj", cache_dir=tmp_path).source == checkpoint.source


class FakeSnapshot:
    """Mirrors ``huggingface_hub.snapshot_download``: copies what allow_patterns select from a fake repo."""

    def __init__(self, repo: Path, cache: Path) -> None:
        self.repo, self.cache = repo, cache
        self.calls: list[tuple[str, list[str]]] = []

    def __call__(self, repo_id: str, *, allow_patterns: list[str], tqdm_class: type, **kwargs: object) -> str:
        from fnmatch import fnmatch

        self.calls.append((repo_id, list(allow_patterns)))
        snapshot = self.cache / repo_id.replace("/", "--") / "snapshots" / "abc123"
        snapshot.mkdir(parents=True, exist_ok=True)
        chosen = [p for p in sorted(self.repo.iterdir()) if any(fnmatch(p.name, pat) for pat in allow_patterns)]
        total = sum(p.stat().st_size for p in chosen)
        bar = tqdm_class(total=total, unit="B", initial=0)
        for path in chosen:
            shutil.copy(path, snapshot / path.name)
            bar.update(path.stat().st_size)
        bar.close()
        return str(snapshot)


def test_hub_download_asks_for_one_weight_format(tmp_path: Path, tiny_gptj: Path) -> None:
    repo = write_checkpoint(tmp_path / "repo", small_tensors(), fmt="safetensors", shards=2, tokenizer_from=tiny_gptj)
    write_checkpoint(repo, small_tensors(), fmt="pytorch")  # the repo has both formats
    (repo / "flax_model.msgpack").write_bytes(b"x")
    fake = FakeSnapshot(repo, tmp_path / "hub")
    seen: list[tuple[int, int, str]] = []
    checkpoint = resolve_checkpoint("gpt-j-6b", snapshot_download=fake,
                                    progress=lambda done, total, label: seen.append((done, total, label)))
    assert fake.calls == [("EleutherAI/gpt-j-6b", SAFE_PATTERNS)]
    assert checkpoint.weight_format == "safetensors" and checkpoint.source["kind"] == "hub"
    fetched = sorted(p.name for p in checkpoint.directory.iterdir())
    assert "pytorch_model.bin" not in fetched and "flax_model.msgpack" not in fetched
    assert seen and seen[-1][0] == seen[-1][1] > 0 and {label for *_n, label in seen} == {"download"}


def test_hub_falls_back_to_bin_when_there_is_no_safetensors(tmp_path: Path) -> None:
    repo = write_checkpoint(tmp_path / "repo", small_tensors(), fmt="pytorch", shards=2)
    fake = FakeSnapshot(repo, tmp_path / "hub")
    checkpoint = resolve_checkpoint("someone/gptj-bin", snapshot_download=fake)
    assert [patterns for _id, patterns in fake.calls] == [hub_allow_patterns("safetensors"),
                                                          hub_allow_patterns("pytorch")]
    assert "pytorch_model-*.bin" in fake.calls[1][1] and "*.safetensors" not in " ".join(fake.calls[1][1])
    assert checkpoint.weight_format == "pytorch" and len(checkpoint.weight_files) == 2


def test_hub_repo_without_weights_names_what_is_missing(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "config.json").write_text(json.dumps({"model_type": "gptj"}))
    with pytest.raises(ModelSourceError, match="the weights .* missing"):
        resolve_checkpoint("someone/empty", snapshot_download=FakeSnapshot(repo, tmp_path / "hub"))
