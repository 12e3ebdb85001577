"""Artifact upload on moto: multipart ETags, resume, skip by metadata or ETag, re-send, buckets."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from inf2_deploy.artifact.manifest import digest_file, write_manifest
from inf2_deploy.aws.s3 import LIFECYCLE_RULE_ID, ensure_bucket
from inf2_deploy.aws.upload import transfer_config, upload_artifact
from inf2_deploy.errors import ConfigError
from sagemaker_fakes import RecordingObserver
from support.aws import REGION

MIB = 1024 * 1024
PART = 5 * MIB  # S3's (and moto's) smallest multipart part, so a 12 MiB file goes in 3 parts
BUCKET = "artifacts"
PREFIX = "inf2-deploy/tiny/abc"


@pytest.fixture
def artifact(tmp_path: Path):
    folder = tmp_path / "artifact"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(os.urandom(12 * MIB))
    (folder / "config.json").write_text('{"model_type": "gptj"}')
    files = [digest_file(folder / name, PART).result(name) for name in ("config.json", "model.safetensors")]
    return write_manifest(folder, files=files, plan={"tp": 1}, source={"kind": "test"}, part_size=PART)


@pytest.fixture
def s3(session):
    client = session.client("s3")
    client.create_bucket(Bucket=BUCKET)
    return client


def test_multipart_upload_matches_manifest_etags_and_reports_bytes(s3, artifact, count_calls):
    calls = count_calls(s3)
    observer = RecordingObserver()
    result = upload_artifact(s3, artifact, BUCKET, PREFIX, observer=observer)
    reports = observer.progress

    assert result.s3_uri == f"s3://{BUCKET}/{PREFIX}/"
    assert result.uploaded == ("config.json", "model.safetensors", "manifest.json")
    assert calls.names().count("UploadPart") == 3
    total = artifact.total_bytes + artifact.manifest_path.stat().st_size
    assert reports[-1][:2] == (total, total)
    assert all(report[1] == total for report in reports)
    # the manifest goes last, after every data object is in place
    puts = [params["Key"] for name, params in calls.calls if name in ("PutObject", "CreateMultipartUpload")]
    assert puts[-1] == f"{PREFIX}/manifest.json"
    for item in artifact.files:
        head = s3.head_object(Bucket=BUCKET, Key=f"{PREFIX}/{item.path}")
        assert head["ETag"].strip('"') == item.s3_etag
        assert head["Metadata"]["sha256"] == item.sha256
        assert head["ServerSideEncryption"] == "AES256"
    assert item.s3_etag.endswith("-3")


def test_rerun_uploads_nothing_and_resume_sends_only_what_is_missing(s3, artifact, count_calls):
    upload_artifact(s3, artifact, BUCKET, PREFIX)
    calls = count_calls(s3)
    again = upload_artifact(s3, artifact, BUCKET, PREFIX)
    assert (again.uploaded, again.bytes_uploaded) == ((), 0)
    # Reads only: one listing of stale multipart uploads, then a HeadObject per object.
    assert set(calls.names()) == {"ListMultipartUploads", "HeadObject"}

    s3.delete_object(Bucket=BUCKET, Key=f"{PREFIX}/model.safetensors")
    resumed = upload_artifact(s3, artifact, BUCKET, PREFIX)
    assert resumed.uploaded == ("model.safetensors", "manifest.json")
    assert resumed.skipped == ("config.json",)


def test_objects_without_metadata_are_recognised_by_etag(s3, artifact):
    """An object uploaded by another tool in the same part size matches by its ETag."""
    from s3transfer.manager import TransferManager

    with TransferManager(s3, transfer_config(PART)) as manager:
        for item in artifact.files:
            manager.upload(str(artifact.directory / item.path), BUCKET, f"{PREFIX}/{item.path}",
                           extra_args={"ServerSideEncryption": "AES256"})
    result = upload_artifact(s3, artifact, BUCKET, PREFIX)
    assert result.uploaded == ("manifest.json",)


def test_same_size_different_content_is_replaced_despite_its_metadata(s3, artifact):
    upload_artifact(s3, artifact, BUCKET, PREFIX)
    config = artifact.directory / "config.json"
    s3.put_object(Bucket=BUCKET, Key=f"{PREFIX}/config.json", Body=b"x" * config.stat().st_size,
                  ServerSideEncryption="AES256", Metadata={"sha256": artifact.files[0].sha256})
    result = upload_artifact(s3, artifact, BUCKET, PREFIX)
    assert result.uploaded == ("config.json", "manifest.json")
    assert s3.get_object(Bucket=BUCKET, Key=f"{PREFIX}/config.json")["Body"].read() == config.read_bytes()


def test_mismatch_after_upload_is_sent_again(s3, artifact):
    """A verification failure (here: a write that landed wrong once) triggers one re-send."""
    key = f"{PREFIX}/config.json"
    corrupted = []

    def corrupt_once(params, **kwargs: object) -> None:
        if params.get("Key") == key and not corrupted:
            corrupted.append(True)
            params["Body"] = b"y" * artifact.files[0].size

    s3.meta.events.register("before-parameter-build.s3.PutObject", corrupt_once)
    result = upload_artifact(s3, artifact, BUCKET, PREFIX)
    assert corrupted
    assert "config.json" in result.uploaded
    assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == (artifact.directory / "config.json").read_bytes()


def test_ensure_bucket_creates_a_private_encrypted_bucket_outside_us_east_1(session):
    s3 = session.boto_session.client("s3", region_name="eu-west-1")
    assert ensure_bucket(s3, "new-bucket", "eu-west-1", create=True)
    assert s3.get_bucket_location(Bucket="new-bucket")["LocationConstraint"] == "eu-west-1"
    assert all(s3.get_public_access_block(Bucket="new-bucket")["PublicAccessBlockConfiguration"].values())
    assert s3.get_bucket_lifecycle_configuration(Bucket="new-bucket")["Rules"] == [{
        "ID": LIFECYCLE_RULE_ID, "Filter": {"Prefix": ""}, "Status": "Enabled",
        "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1}}]
    assert not ensure_bucket(s3, "new-bucket", "eu-west-1", create=True)


def test_ensure_bucket_leaves_an_existing_bucket_as_it_is(s3):
    assert not ensure_bucket(s3, BUCKET, REGION, create=True)
    with pytest.raises(s3.exceptions.ClientError) as missing:
        s3.get_bucket_lifecycle_configuration(Bucket=BUCKET)
    assert missing.value.response["Error"]["Code"] == "NoSuchLifecycleConfiguration"


def test_ensure_bucket_refuses_to_create_a_named_bucket(session):
    with pytest.raises(ConfigError) as missing:
        ensure_bucket(session.client("s3"), "not-there", REGION, create=False)
    assert missing.value.field == "bucket"
    assert "omit --bucket" in str(missing.value)


def test_unencrypted_objects_are_uploaded_again_with_sse(s3, artifact):
    for item in artifact.files:
        s3.upload_file(str(artifact.directory / item.path), BUCKET, f"{PREFIX}/{item.path}")
    result = upload_artifact(s3, artifact, BUCKET, PREFIX)
    assert result.uploaded == ("config.json", "model.safetensors", "manifest.json")


def test_content_already_in_another_artifact_is_copied_not_uploaded(s3, artifact, count_calls):
    """Same files under a new prefix: S3 copies them (in parts, for the multipart one); only the manifest is sent."""
    from inf2_deploy.aws.artifact_store import StoredContent

    upload_artifact(s3, artifact, BUCKET, PREFIX, config=transfer_config(PART))
    calls = count_calls(s3)
    sources = StoredContent(s3, BUCKET, "inf2-deploy/tiny")
    result = upload_artifact(s3, artifact, BUCKET, "inf2-deploy/tiny/def", config=transfer_config(PART),
                             sources=sources)

    assert result.copied == ("config.json", "model.safetensors")
    assert result.bytes_copied == artifact.total_bytes
    assert (result.uploaded, result.bytes_uploaded) == (("manifest.json",), artifact.manifest_path.stat().st_size)
    assert calls.names().count("UploadPartCopy") == 3 and "UploadPart" not in calls.names()
    assert [p["Key"] for n, p in calls.calls if n == "PutObject"] == ["inf2-deploy/tiny/def/manifest.json"]
    # S3's answers to CopyObject and to the multipart copy's completion prove the copies: the only
    # HeadObjects of the new prefix are the check for what is already there, before anything is sent.
    heads = [p["Key"] for n, p in calls.calls if n == "HeadObject" and p["Key"].startswith("inf2-deploy/tiny/def/")]
    assert heads == [f"inf2-deploy/tiny/def/{name}" for name in ("config.json", "model.safetensors", "manifest.json")]
    for item in artifact.files:
        head = s3.head_object(Bucket=BUCKET, Key=f"inf2-deploy/tiny/def/{item.path}")
        assert head["ETag"].strip('"') == item.s3_etag and head["Metadata"] == {"sha256": item.sha256}
        assert head["ServerSideEncryption"] == "AES256"


def test_a_copy_that_lands_wrong_is_uploaded(s3, artifact):
    from inf2_deploy.aws.artifact_store import StoredContent

    upload_artifact(s3, artifact, BUCKET, PREFIX, config=transfer_config(PART))
    # The source changed after its manifest was written: a copy of it would not match.
    config = artifact.directory / "config.json"
    s3.put_object(Bucket=BUCKET, Key=f"{PREFIX}/config.json", Body=b"z" * config.stat().st_size,
                  ServerSideEncryption="AES256", Metadata={"sha256": artifact.files[0].sha256})
    result = upload_artifact(s3, artifact, BUCKET, "inf2-deploy/tiny/def", config=transfer_config(PART),
                             sources=StoredContent(s3, BUCKET, "inf2-deploy/tiny"))
    assert result.copied == ("model.safetensors",)
    assert result.uploaded == ("config.json", "manifest.json")
    assert s3.get_object(Bucket=BUCKET, Key="inf2-deploy/tiny/def/config.json")["Body"].read() == config.read_bytes()


def test_delete_prefix_dry_run_counts_and_keeps(s3, artifact):
    from inf2_deploy.aws.s3 import delete_prefix

    upload_artifact(s3, artifact, BUCKET, PREFIX, config=transfer_config(PART))
    assert delete_prefix(s3, BUCKET, PREFIX, dry_run=True) == 3
    assert len(s3.list_objects_v2(Bucket=BUCKET, Prefix=PREFIX)["Contents"]) == 3
    assert delete_prefix(s3, BUCKET, PREFIX) == 3
    assert "Contents" not in s3.list_objects_v2(Bucket=BUCKET, Prefix=PREFIX)


def test_a_server_whose_part_copies_lack_an_etag_gets_an_upload(s3, artifact):
    """rclone answers UploadPartCopy without the part's ETag; s3transfer cannot finish such a copy."""
    from inf2_deploy.aws.artifact_store import StoredContent

    upload_artifact(s3, artifact, BUCKET, PREFIX, config=transfer_config(PART))

    def like_rclone(parsed: dict, **kwargs: object) -> None:
        parsed.get("CopyPartResult", {}).pop("ETag", None)

    s3.meta.events.register("after-call.s3.UploadPartCopy", like_rclone)
    result = upload_artifact(s3, artifact, BUCKET, "inf2-deploy/tiny/def", config=transfer_config(PART),
                             sources=StoredContent(s3, BUCKET, "inf2-deploy/tiny"))
    assert result.copied == ("config.json",)  # a single CopyObject is fine
    assert result.uploaded == ("model.safetensors", "manifest.json")
    shard = artifact.files[1]
    head = s3.head_object(Bucket=BUCKET, Key=f"inf2-deploy/tiny/def/{shard.path}")
    assert head["ETag"].strip('"') == shard.s3_etag
    assert not s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads")  # the failed copy was aborted
