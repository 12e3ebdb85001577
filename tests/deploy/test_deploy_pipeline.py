"""Packaging overlapped with upload (pipeline.package_and_upload) against moto.

The overlapped path must leave S3 exactly as packaging first and uploading
second does (same objects, ETags, encryption, metadata, manifest), send nothing
for an unchanged artifact, and never leave a manifest.json or a half-written
object behind a conversion that failed.
"""
from __future__ import annotations

from pathlib import Path

import pytest
from inf2_deploy.artifact import convert
from inf2_deploy.artifact.manifest import MANIFEST_NAME
from inf2_deploy.artifact.packager import package
from inf2_deploy.aws.deploy import deploy
from inf2_deploy.aws.pipeline import package_and_upload
from inf2_deploy.aws.upload import upload_artifact
from inf2_deploy.spec.deployment_spec import load_spec
from support.aws import REGION

BUCKET = "artifacts"
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tiny-gptj is built here once for the module (and image lookups are remembered here)."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def s3(session):
    client = session.client("s3")
    client.create_bucket(Bucket=BUCKET)
    return client


def _spec(**overrides):
    return load_spec(model="tiny-gptj", instance_type="ml.inf2.xlarge", region=REGION, **overrides)


def _objects(s3, key_prefix: str) -> dict[str, dict]:
    """name -> (size, ETag, encryption, KMS key, metadata) of every object under the prefix."""
    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix=key_prefix).get("Contents", [])
    found = {}
    for obj in listed:
        head = s3.head_object(Bucket=BUCKET, Key=obj["Key"])
        found[obj["Key"][len(key_prefix):]] = {
            "size": head["ContentLength"], "etag": head["ETag"], "sse": head.get("ServerSideEncryption"),
            "kms": head.get("SSEKMSKeyId"), "metadata": head["Metadata"]}
    return found


def _same_as_sequential(s3, tmp_path: Path, cache_dir: Path, spec, shard_bytes: int, kms_key_id: str | None):
    artifact, result = package_and_upload(spec, tmp_path / "overlapped", s3, BUCKET, "pipe",
                                          kms_key_id=kms_key_id, cache_dir=cache_dir, max_shard_bytes=shard_bytes)
    sequential = package(spec, tmp_path / "sequential", cache_dir=cache_dir, max_shard_bytes=shard_bytes)
    upload_artifact(s3, sequential, BUCKET, "seq", kms_key_id=kms_key_id)

    assert artifact.manifest_path.read_bytes() == sequential.manifest_path.read_bytes()
    overlapped = _objects(s3, result.key_prefix)
    assert overlapped == _objects(s3, "seq/")
    assert set(overlapped) == {f.path for f in artifact.files} | {MANIFEST_NAME}
    for item in artifact.files:
        assert overlapped[item.path]["size"] == item.size
        assert overlapped[item.path]["metadata"] == {"sha256": item.sha256}
    assert result.uploaded == (*(f.path for f in artifact.files), MANIFEST_NAME)
    assert result.bytes_uploaded == artifact.total_bytes + artifact.manifest_path.stat().st_size
    return artifact, result, overlapped


def test_overlapped_upload_leaves_what_the_sequential_path_leaves(s3, tmp_path, cache_dir):
    # fp32 in one 64 MiB shard: a 26 MB file goes multipart (16 MiB parts), the rest single PUTs.
    artifact, result, objects = _same_as_sequential(s3, tmp_path, cache_dir, _spec(dtype="fp32"), 64 * MIB, None)
    shard = objects["model.safetensors"]
    assert shard["etag"].strip('"') == artifact.files[[f.path for f in artifact.files].index(
        "model.safetensors")].s3_etag
    assert shard["etag"].strip('"').endswith("-2")
    assert all(entry["sse"] == "AES256" for entry in objects.values())
    # keyed by the inputs' build key, which exists before the first byte is written
    assert result.key_prefix.startswith("pipe/") and len(result.key_prefix) == len("pipe/") + 64 + 1
    manifest = s3.get_object(Bucket=BUCKET, Key=result.key_prefix + MANIFEST_NAME)["Body"].read()
    assert manifest == artifact.manifest_path.read_bytes()


def test_manifest_goes_last_and_shards_upload_while_conversion_continues(s3, tmp_path, cache_dir, count_calls,
                                                                       monkeypatch):
    """The first shard's upload is requested before the last shard exists; the manifest after everything."""
    events: list[str] = []
    real_convert = convert.convert_weights

    def convert_noting_files(*args, **kwargs):
        on_file = kwargs["on_file"]

        def noted(file, path):
            events.append(f"written {file.path}")
            on_file(file, path)

        return real_convert(*args, **{**kwargs, "on_file": noted})

    monkeypatch.setattr("inf2_deploy.artifact.packager.convert_weights", convert_noting_files)
    calls = count_calls(s3)
    s3.meta.events.register("before-parameter-build.s3.PutObject",
                            lambda params, **_: events.append(f"put {params['Key'].rsplit('/', 1)[-1]}"))
    artifact, _ = package_and_upload(_spec(), tmp_path / "art", s3, BUCKET, "pipe", cache_dir=cache_dir,
                                     max_shard_bytes=4 * MIB)
    shards = sorted(f.path for f in artifact.files if f.path.endswith(".safetensors"))
    assert len(shards) >= 3
    assert events.index(f"put {shards[0]}") < events.index(f"written {shards[-1]}")
    puts = [params["Key"] for name, params in calls.calls if name in ("PutObject", "CreateMultipartUpload")]
    assert puts[-1].endswith(f"/{MANIFEST_NAME}")
    assert len(puts) == len(artifact.files) + 1  # each file once: the writes' answers proved them


def test_unchanged_redeploy_sends_nothing(s3, tmp_path, cache_dir, count_calls):
    artifact, first = package_and_upload(_spec(), tmp_path / "art", s3, BUCKET, "pipe", cache_dir=cache_dir)
    calls = count_calls(s3)
    again_artifact, again = package_and_upload(_spec(), tmp_path / "art", s3, BUCKET, "pipe", cache_dir=cache_dir)
    assert again_artifact == artifact
    assert (again.key_prefix, again.uploaded, again.bytes_uploaded) == (first.key_prefix, (), 0)
    assert set(calls.names()) == {"ListMultipartUploads", "HeadObject"}  # the stale-upload check, then reads


def test_failed_conversion_leaves_no_manifest_and_no_half_object_and_resumes(s3, tmp_path, cache_dir, monkeypatch):
    """The disk fills up while the second shard is converted, after the first was written (and uploaded)."""
    written: list[str] = []
    real_convert, real_cast = convert.convert_weights, convert.cast_array

    def convert_noting_files(*args, **kwargs):
        on_file = kwargs["on_file"]

        def noted(file, path):
            written.append(file.path)
            on_file(file, path)

        return real_convert(*args, **{**kwargs, "on_file": noted})

    def cast_or_fail(*args, **kwargs):
        if any(name.endswith(".safetensors") for name in written):
            raise OSError(28, "No space left on device")
        return real_cast(*args, **kwargs)

    monkeypatch.setattr("inf2_deploy.artifact.packager.convert_weights", convert_noting_files)
    monkeypatch.setattr(convert, "cast_array", cast_or_fail)
    output = tmp_path / "art"
    with pytest.raises(OSError, match="No space left"):
        package_and_upload(_spec(), output, s3, BUCKET, "pipe", cache_dir=cache_dir, max_shard_bytes=4 * MIB)
    monkeypatch.setattr(convert, "cast_array", real_cast)

    assert not output.exists() and list(tmp_path.iterdir()) == []  # no half-written local artifact
    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix="pipe/").get("Contents", [])
    names = {o["Key"].rsplit("/", 1)[-1] for o in listed}
    shards = {name for name in names if name.endswith(".safetensors")}
    # Only a finished shard can be there (its upload may also have lost the race with the staging
    # folder's removal and been aborted); nothing of the shard being written when the disk filled.
    assert shards <= {name for name in written if name.endswith(".safetensors")}
    assert MANIFEST_NAME not in names
    assert not s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads")

    artifact, result = package_and_upload(_spec(), output, s3, BUCKET, "pipe", cache_dir=cache_dir,
                                          max_shard_bytes=4 * MIB)
    assert not shards & set(result.uploaded)  # verified, not sent again
    assert result.uploaded[-1] == MANIFEST_NAME
    assert set(_objects(s3, result.key_prefix)) == {f.path for f in artifact.files} | {MANIFEST_NAME}


def test_kms_uploads_whole_files_with_sha256_metadata(session, s3, tmp_path, cache_dir):
    key_id = session.client("kms").create_key()["KeyMetadata"]["KeyId"]
    artifact, _, objects = _same_as_sequential(s3, tmp_path, cache_dir, _spec(kms_key_id=key_id), 4 * MIB, key_id)
    assert all(entry["sse"] == "aws:kms" and key_id in entry["kms"] for entry in objects.values())
    again_artifact, again = package_and_upload(_spec(kms_key_id=key_id), tmp_path / "overlapped", s3, BUCKET,
                                               "pipe", kms_key_id=key_id, cache_dir=cache_dir,
                                               max_shard_bytes=4 * MIB)
    assert (again.uploaded, again.bytes_uploaded) == ((), 0)


def test_deploy_packages_and_uploads_in_one_pass(session, tiny_spec, clock, tmp_path):
    deployment = deploy(tiny_spec, session=session, clock=clock, output=tmp_path / "art")
    assert deployment.bytes_uploaded > 0
    bucket, _, key_prefix = deployment.artifact_s3_uri.removeprefix("s3://").partition("/")
    assert key_prefix.startswith("inf2-deploy/tiny-gptj/") and key_prefix.endswith("/")
    manifest = session.client("s3").get_object(Bucket=bucket, Key=key_prefix + MANIFEST_NAME)["Body"].read()
    assert manifest == (tmp_path / "art" / MANIFEST_NAME).read_bytes()
    again = deploy(tiny_spec, session=session, clock=clock, output=tmp_path / "art")
    assert (again.changed, again.bytes_uploaded) == (False, 0)


def test_a_serving_properties_change_is_sent_alone_and_the_rest_copied_while_packaging(
        s3, tmp_path, cache_dir, count_calls):
    _, first = package_and_upload(_spec(), tmp_path / "art", s3, BUCKET, "pipe", cache_dir=cache_dir,
                                  max_shard_bytes=4 * MIB)
    calls = count_calls(s3)
    artifact, result = package_and_upload(_spec(batch_size=2), tmp_path / "art", s3, BUCKET, "pipe",
                                          cache_dir=cache_dir, max_shard_bytes=4 * MIB)

    assert result.key_prefix != first.key_prefix
    assert result.uploaded == ("serving.properties", MANIFEST_NAME)
    assert result.bytes_uploaded == sum((artifact.directory / name).stat().st_size for name in result.uploaded)
    others = {f.path for f in artifact.files} - {"serving.properties"}
    assert set(result.copied) == others and len(others) >= 5
    assert result.bytes_copied == sum(f.size for f in artifact.files if f.path in others)
    # The copies start as the packager reports each file, before the final pass (which begins by
    # looking for stale multipart uploads).
    names = calls.names()
    assert names.index("CopyObject") < names.index("ListMultipartUploads")
    old, new = _objects(s3, first.key_prefix), _objects(s3, result.key_prefix)
    assert {name: new[name] for name in others} == {name: old[name] for name in others}
