"""manifest.py: sha256 and S3 ETags (checked against an independent reference and moto), load/verify."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import boto3
import pytest
from boto3.s3.transfer import TransferConfig
from fuzz_budget import examples
from hypothesis import given, settings
from hypothesis import strategies as st
from inf2_deploy.artifact.manifest import (
    MANIFEST_NAME,
    UPLOAD_PART_SIZE,
    Artifact,
    FileDigest,
    digest_file,
    s3_etag,
    write_manifest,
)
from inf2_deploy.errors import ModelSourceError
from moto import mock_aws

MIB = 1024**2


def reference_etag(data: bytes, part_size: int, multipart: bool) -> str:
    """S3's documented rule, computed from whole-buffer slices (independent of FileDigest's streaming)."""
    if not multipart:
        return hashlib.md5(data).hexdigest()
    parts = [hashlib.md5(data[i:i + part_size]).digest() for i in range(0, len(data), part_size)]
    return hashlib.md5(b"".join(parts)).hexdigest() + f"-{len(parts)}"


def write_random(path: Path, size: int) -> bytes:
    data = os.urandom(size)
    path.write_bytes(data)
    return data


@pytest.mark.parametrize(("size", "multipart"), [
    (0, False), (1, False), (UPLOAD_PART_SIZE - 1, False),
    (UPLOAD_PART_SIZE, True),  # s3transfer goes multipart at size >= threshold: one part, "-1"
    (UPLOAD_PART_SIZE + 1, True), (2 * UPLOAD_PART_SIZE + 5 * MIB, True),
])
def test_etag_matches_reference(tmp_path: Path, size: int, multipart: bool) -> None:
    data = write_random(tmp_path / "f", size)
    etag = s3_etag(tmp_path / "f")
    assert etag == reference_etag(data, UPLOAD_PART_SIZE, multipart)
    assert etag.endswith(f"-{-(-size // UPLOAD_PART_SIZE)}") == multipart


@given(data=st.binary(min_size=0, max_size=4000), cuts=st.lists(st.integers(0, 4000), max_size=6))
@settings(max_examples=examples(60), deadline=None)
def test_streamed_digest_does_not_depend_on_how_bytes_arrive(data: bytes, cuts: list[int]) -> None:
    part_size = 1000
    digest = FileDigest(part_size)
    edges = sorted({0, len(data), *[c for c in cuts if c <= len(data)]})
    for begin, end in zip(edges, edges[1:], strict=False):
        digest.update(data[begin:end])
    assert digest.size == len(data)
    assert digest.sha256 == hashlib.sha256(data).hexdigest()
    assert digest.s3_etag == reference_etag(data, part_size, len(data) >= part_size)
    assert FileDigest.of_bytes(data, part_size).result("f") == digest.result("f")


@mock_aws
def test_etag_equals_what_s3_reports_for_the_uploader_settings(tmp_path: Path) -> None:
    """moto computes multipart ETags with S3's rule; upload as the uploader does and compare."""
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="artifacts")
    config = TransferConfig(multipart_threshold=UPLOAD_PART_SIZE, multipart_chunksize=UPLOAD_PART_SIZE)
    for name, size in {"small": 3 * MIB, "exact": UPLOAD_PART_SIZE,
                       "large": 2 * UPLOAD_PART_SIZE + 3 * MIB}.items():
        write_random(tmp_path / name, size)
        s3.upload_file(str(tmp_path / name), "artifacts", name, Config=config)
        reported = s3.head_object(Bucket="artifacts", Key=name)["ETag"].strip('"')
        assert s3_etag(tmp_path / name) == reported, name


def _sample_artifact(folder: Path) -> Artifact:
    files = []
    for relative, size in (("b.bin", 100), ("a/x.txt", 10)):
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        write_random(folder / relative, size)
        files.append(digest_file(folder / relative).result(relative))
    return write_manifest(folder, files=files, plan={"dtype": "fp16"},
                          source={"kind": "local", "id": "x", "fingerprint": "f"},
                          conversion={"dtype": "fp16", "max_shard_bytes": 10})


def test_manifest_round_trip_is_deterministic_and_sorted(tmp_path: Path) -> None:
    artifact = _sample_artifact(tmp_path)
    first = (tmp_path / MANIFEST_NAME).read_bytes()
    data = json.loads(first)
    assert list(data) == sorted(data)
    assert data["format_version"] == 1 and data["part_size"] == UPLOAD_PART_SIZE
    assert [f["path"] for f in data["files"]] == ["a/x.txt", "b.bin"]
    assert Artifact.load(tmp_path) == artifact
    assert artifact.total_bytes == 110
    again = write_manifest(tmp_path, files=reversed(artifact.files), plan=artifact.plan, source=artifact.source,
                           conversion=artifact.conversion)
    assert (tmp_path / MANIFEST_NAME).read_bytes() == first
    assert again.fingerprint == artifact.fingerprint
    assert artifact.verify() is artifact


def test_fingerprint_covers_the_files_and_nothing_else(tmp_path: Path) -> None:
    """Settings reach the container only through files, so the files alone address the artifact."""
    artifact = _sample_artifact(tmp_path)
    other_plan = write_manifest(tmp_path, files=artifact.files, plan={"instance_count": 2, "price_per_hour": 9.9},
                                source={"kind": "local", "id": "elsewhere", "fingerprint": "g"})
    assert other_plan.fingerprint == artifact.fingerprint
    small, large = artifact.files
    (tmp_path / "a/y.txt").write_bytes((tmp_path / "a/x.txt").read_bytes())
    renamed = write_manifest(tmp_path, files=[digest_file(tmp_path / "a/y.txt").result("a/y.txt"), large],
                             plan=artifact.plan, source=artifact.source)
    write_random(tmp_path / "a/x.txt", 10)
    changed = write_manifest(tmp_path, files=[digest_file(tmp_path / "a/x.txt").result("a/x.txt"), large],
                             plan=artifact.plan, source=artifact.source)
    assert len({artifact.fingerprint, renamed.fingerprint, changed.fingerprint}) == 3
    assert small.path == "a/x.txt"


def test_verify_detects_a_changed_or_missing_file(tmp_path: Path) -> None:
    artifact = _sample_artifact(tmp_path)
    (tmp_path / "b.bin").write_bytes(b"\0" * 100)
    with pytest.raises(ModelSourceError, match="b.bin does not match"):
        artifact.verify()
    (tmp_path / "b.bin").unlink()
    with pytest.raises(ModelSourceError, match="b.bin is missing"):
        artifact.verify()


@pytest.mark.parametrize(("content", "message"), [
    (None, "has no manifest.json"),
    ("{not json", "cannot read"),
    (json.dumps({"format_version": 2}), "malformed"),
    (json.dumps({"format_version": 1, "tool_version": "0", "fingerprint": "f", "part_size": 1, "source": {},
                 "plan": {}, "files": [{"path": "../etc/passwd", "size": 1, "sha256": "0" * 64,
                                        "s3_etag": "e"}]}), "not a plain relative path"),
])
def test_load_rejects_missing_or_corrupt_manifests(tmp_path: Path, content: str | None, message: str) -> None:
    if content is not None:
        (tmp_path / MANIFEST_NAME).write_text(content)
    with pytest.raises(ModelSourceError, match=message):
        Artifact.load(tmp_path)


def test_deployment_settings_leave_the_packaged_artifact_as_it_is(make_checkpoint, tmp_path: Path) -> None:
    """Instance type and count, price and endpoint timeouts are the endpoint's: same files, nothing rebuilt."""
    from ckpt_helpers import spec_for
    from inf2_deploy.artifact.packager import package

    source = make_checkpoint("safetensors")
    first = package(spec_for(source, tensor_parallel_degree=2), tmp_path / "out")
    mtimes = {f.path: (tmp_path / "out" / f.path).stat().st_mtime_ns for f in first.files}
    again = package(spec_for(source, tensor_parallel_degree=2, instance_type="ml.inf2.24xlarge", instance_count=3,
                             price_per_hour=9.5, startup_health_check_timeout=1800), tmp_path / "out")
    assert again == first
    assert {f.path: (tmp_path / "out" / f.path).stat().st_mtime_ns for f in again.files} == mtimes
    assert set(first.plan) == {"serving_properties"}
    assert first.plan["serving_properties"]["option.tensor_parallel_degree"] == "2"


def test_a_serving_properties_change_keeps_the_converted_weights(make_checkpoint, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from ckpt_helpers import spec_for
    from inf2_deploy.artifact import packager

    source = make_checkpoint("safetensors", 2)
    first = packager.package(spec_for(source), tmp_path / "out", max_shard_bytes=30_000)
    weights = {f.path: (tmp_path / "out" / f.path).stat().st_ino for f in first.files
               if f.path.endswith(".safetensors") or f.path.endswith(".index.json")}
    assert len(weights) >= 3

    def no_conversion(*args: object, **kwargs: object) -> None:
        raise AssertionError("the weights were converted again")

    monkeypatch.setattr(packager, "convert_weights", no_conversion)
    seen: list[str] = []

    class Seen:
        def begin(self, build_key: str) -> None:
            pass

        def file_written(self, file: object, path: Path) -> None:
            seen.append(file.path)  # type: ignore[attr-defined]

        def commit(self) -> None:
            pass

    batched = packager.package(spec_for(source, batch_size=4), tmp_path / "out", max_shard_bytes=30_000,
                               observer=Seen())
    assert {f.path for f in set(batched.files) ^ set(first.files)} == {"serving.properties"}
    assert batched.fingerprint != first.fingerprint
    # The same inodes: linked, not copied; and the observer (the uploader) heard of every file.
    assert {path: (tmp_path / "out" / path).stat().st_ino for path in weights} == weights
    assert sorted(seen) == sorted(f.path for f in batched.files)
    batched.verify()
