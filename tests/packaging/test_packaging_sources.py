"""sources.py: local layouts, incomplete checkpoints, the aliases, the Hub (mocked snapshot_download) and
S3 (moto)."""
from __future__ import annotations

import json
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ckpt_helpers import small_tensors, write_checkpoint
from inf2_deploy.artifact.sources import hub_allow_patterns, open_checkpoint, resolve_checkpoint
from inf2_deploy.errors import AwsError, ModelSourceError
from inf2_deploy.spec.catalog import model_config_for
from inf2_deploy.spec.model_ref import ModelRef, model_slug
from support.aws import IMAGE, REGION

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


def test_unknown_names_are_refused() -> None:
    with pytest.raises(ModelSourceError, match="neither a checkpoint folder"):
        resolve_checkpoint("./no/such/folder")


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


# ---------------------------------------------------------------- s3:// checkpoints, on moto


@pytest.fixture
def s3() -> Iterator[Any]:
    """An S3 client on moto (in process) with an empty bucket ``models``."""
    import boto3
    from moto import mock_aws

    with mock_aws():
        client = boto3.client("s3", region_name=REGION)
        client.create_bucket(Bucket="models")
        yield client


def _upload(s3: Any, folder: Path, prefix: str) -> None:
    for path in sorted(folder.iterdir()):
        s3.upload_file(str(path), "models", f"{prefix}/{path.name}")


class Downloads:
    """A progress callback that keeps the last ``download`` report."""

    def __init__(self) -> None:
        self.last: tuple[int, int, str] | None = None

    def __call__(self, done: int, total: int, label: str) -> None:
        if label == "download":
            self.last = (done, total, label)


def test_an_s3_checkpoint_packages_to_the_same_artifact_as_its_local_folder(s3: Any, tiny_gptj: Path,
                                                                             tmp_path: Path) -> None:
    from inf2_deploy.artifact.packager import package
    from inf2_deploy.spec.deployment_spec import load_spec

    _upload(s3, tiny_gptj, "checkpoints/tiny")
    downloads = Downloads()
    settings = {"region": REGION, "image_uri": IMAGE}
    from_s3 = package(load_spec(model="s3://models/checkpoints/tiny/", **settings), tmp_path / "from-s3",
                      cache_dir=tmp_path / "cache", progress=downloads)
    from_folder = package(load_spec(model=str(tiny_gptj), **settings), tmp_path / "from-folder",
                          cache_dir=tmp_path / "cache")
    assert from_s3.fingerprint == from_folder.fingerprint
    assert from_s3.files == from_folder.files
    assert from_s3.source["kind"] == "s3" and from_s3.source["id"] == "s3://models/checkpoints/tiny/"
    total = sum(p.stat().st_size for p in tiny_gptj.iterdir() if p.name != ".tiny-gptj.json")
    assert downloads.last == (total, total, "download")
    # The copy lives in the cache, under s3/BUCKET/PREFIX.
    copy = tmp_path / "cache" / "s3" / "models" / "checkpoints" / "tiny"
    assert (copy / "model.safetensors").read_bytes() == (tiny_gptj / "model.safetensors").read_bytes()


def test_an_s3_copy_is_reused_until_an_object_changes_even_at_the_same_size(s3: Any, tmp_path: Path) -> None:
    folder = write_checkpoint(tmp_path / "ckpt", small_tensors(), fmt="safetensors", shards=2)
    _upload(s3, folder, "ckpt")
    cache = tmp_path / "cache"
    first = resolve_checkpoint("s3://models/ckpt", cache_dir=cache, s3=s3)
    again = Downloads()
    assert resolve_checkpoint("s3://models/ckpt", cache_dir=cache, s3=s3, progress=again).source == first.source
    assert again.last is None  # nothing to fetch
    # A new upload of one shard, the same size (as a fine-tune of the same shapes would be).
    shard = first.directory / "model-00002-of-00002.safetensors"
    changed = bytearray(shard.read_bytes())
    changed[-4:] = bytes(4) if changed[-4:] != bytes(4) else b"\x01" * 4
    s3.put_object(Bucket="models", Key="ckpt/model-00002-of-00002.safetensors", Body=bytes(changed))
    fetched = Downloads()
    third = resolve_checkpoint("s3://models/ckpt", cache_dir=cache, s3=s3, progress=fetched)
    assert fetched.last == (len(changed), len(changed), "download")  # that shard only
    assert shard.read_bytes() == bytes(changed) and third.source["fingerprint"] != first.source["fingerprint"]


def test_an_s3_checkpoint_brings_one_weight_format_and_drops_files_no_longer_there(s3: Any, tmp_path: Path,
                                                                                    tiny_gptj: Path) -> None:
    both = write_checkpoint(tmp_path / "both", small_tensors(), fmt="safetensors", tokenizer_from=tiny_gptj)
    write_checkpoint(both, small_tensors(), fmt="pytorch")
    (both / "flax_model.msgpack").write_bytes(b"x")
    _upload(s3, both, "both")
    s3.put_object(Bucket="models", Key="both/runs/log.txt", Body=b"not part of the checkpoint")
    checkpoint = resolve_checkpoint("s3://models/both/", cache_dir=tmp_path / "cache", s3=s3)
    names = sorted(p.name for p in checkpoint.directory.iterdir())
    assert checkpoint.weight_format == "safetensors"
    assert names == sorted([".s3-objects.json", "config.json", "merges.txt", "model.safetensors",
                            "special_tokens_map.json", "tokenizer_config.json", "vocab.json"])
    # The prefix is re-uploaded as a single PyTorch file: the old safetensors must not be found.
    s3.delete_object(Bucket="models", Key="both/model.safetensors")
    now = resolve_checkpoint("s3://models/both/", cache_dir=tmp_path / "cache", s3=s3)
    assert now.weight_format == "pytorch" and not (now.directory / "model.safetensors").exists()


def test_s3_prefixes_without_a_checkpoint_are_named(s3: Any, tmp_path: Path) -> None:
    s3.put_object(Bucket="models", Key="empty/config.json", Body=b"{}")
    with pytest.raises(ModelSourceError, match="s3://models/empty holds no checkpoint weights") as caught:
        resolve_checkpoint("s3://models/empty", cache_dir=tmp_path, s3=s3)
    assert caught.value.field == "model"
    with pytest.raises(ModelSourceError, match="path segment"):
        resolve_checkpoint("s3://models/a/../b", cache_dir=tmp_path, s3=s3)
    with pytest.raises(AwsError, match="NoSuchBucket"):
        resolve_checkpoint("s3://no-such-bucket/ckpt", cache_dir=tmp_path, s3=s3)
    assert not (tmp_path / "s3").exists()  # nothing was written for any of them


def test_an_object_replaced_while_it_downloads_fails_the_download_instead_of_mixing_versions(
        s3: Any, tmp_path: Path, tiny_gptj: Path) -> None:
    _upload(s3, tiny_gptj, "ckpt")  # its 26 MB model.safetensors comes down in ranged GETs
    newer = b"a newer upload"
    lock, replaced = threading.Lock(), []

    def replace_it_first(params: dict[str, Any], **kwargs: Any) -> None:
        # Every ranged GET of the file waits here until the new upload is in, so that none is reading
        # the old object when it is replaced (in-process moto would close it under that reader).
        if params["Key"] == "ckpt/model.safetensors":
            with lock:
                if not replaced:
                    s3.put_object(Bucket="models", Key="ckpt/model.safetensors", Body=newer)
                    replaced.append(True)

    s3.meta.events.register("before-parameter-build.s3.GetObject", replace_it_first)
    with pytest.raises(AwsError, match="did not match expected ETag"):
        resolve_checkpoint("s3://models/ckpt", cache_dir=tmp_path / "cache", s3=s3)
    s3.meta.events.unregister("before-parameter-build.s3.GetObject", replace_it_first)
    # The next run lists the new version and fetches it.
    checkpoint = resolve_checkpoint("s3://models/ckpt", cache_dir=tmp_path / "cache", s3=s3)
    assert (checkpoint.directory / "model.safetensors").read_bytes() == newer
