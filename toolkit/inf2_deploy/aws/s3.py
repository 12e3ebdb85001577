"""S3 buckets and prefixes: a private, encrypted bucket; stale multipart uploads; deleting or copying a prefix.

Uploading an artifact is in ``upload``. A killed uploader leaves its multipart
uploads behind, and S3 bills their parts until they are aborted: each upload
first aborts the stale ones under its own prefix (:func:`abort_stale_uploads`),
and a bucket that :func:`ensure_bucket` creates gets a lifecycle rule that
aborts any after a day.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from ..errors import AwsError, ConfigError
from .session import aws_errors, error_code, is_not_found

__all__ = [
    "LIFECYCLE_RULE_ID",
    "STALE_UPLOAD_AGE",
    "Progress",
    "abort_stale_uploads",
    "delete_prefix",
    "download_prefix",
    "ensure_bucket",
    "split_s3_uri",
]

#: The lifecycle rule ``ensure_bucket`` puts on a bucket it creates.
LIFECYCLE_RULE_ID = "inf2-deploy-abort-incomplete-multipart"
#: Multipart uploads under an artifact's prefix older than this were left by a killed uploader.
STALE_UPLOAD_AGE = timedelta(hours=1)

#: ``(done_bytes, total_bytes, label)``.
Progress = Callable[[int, int, str], None]


def split_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/key/prefix`` -> ``("bucket", "key/prefix")``.

    Raises:
        ConfigError: ``uri`` is not an s3:// URI with a bucket.
    """
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    if not uri.startswith("s3://") or not bucket:
        raise ConfigError(f"{uri!r} is not an s3://BUCKET/PREFIX URI", value=uri)
    return bucket, key


def ensure_bucket(s3: Any, bucket: str, region: str, *, create: bool, kms_key_id: str | None = None) -> bool:
    """Make sure ``bucket`` exists and is usable; create it when ``create`` is set.

    A created bucket blocks all public access and encrypts by default (SSE-S3,
    or SSE-KMS with ``kms_key_id``), like the SageMaker SDK's default bucket, and
    has a lifecycle rule (:data:`LIFECYCLE_RULE_ID`, whole bucket) that aborts
    multipart uploads still incomplete a day after they started. An existing
    bucket is not modified: its encryption, access and lifecycle settings are
    its owner's.

    Returns:
        True when the bucket was created.

    Raises:
        ConfigError: the bucket is absent and ``create`` is false.
        AwsError: the bucket belongs to someone else, or an S3 call failed.
    """
    if _bucket_exists(s3, bucket):
        return False
    if not create:
        raise ConfigError(f"bucket {bucket} does not exist", field="bucket", value=bucket,
                          hint="create it, or omit --bucket to use the default bucket")
    with aws_errors(f"s3:CreateBucket {bucket}"):
        _create_bucket(s3, bucket, region)
        _make_private_and_encrypted(s3, bucket, kms_key_id)
        _abort_incomplete_uploads_after_a_day(s3, bucket)
    return True


def _bucket_exists(s3: Any, bucket: str) -> bool:
    """True when ``bucket`` exists and is ours to use, False when it does not exist."""
    try:
        s3.head_bucket(Bucket=bucket)
        return True
    except ClientError as exc:
        if error_code(exc) == "403":
            raise AwsError(f"bucket {bucket} exists but this account may not use it", code="403",
                           hint="pass --bucket with a bucket you own") from None
        if not is_not_found(exc):
            with aws_errors(f"s3:HeadBucket {bucket}"):
                raise
    return False


def _create_bucket(s3: Any, bucket: str, region: str) -> None:
    request: dict[str, Any] = {"Bucket": bucket}
    if region != "us-east-1":  # us-east-1 rejects an explicit LocationConstraint
        request["CreateBucketConfiguration"] = {"LocationConstraint": region}
    try:
        s3.create_bucket(**request)
    except ClientError as exc:
        if error_code(exc) != "BucketAlreadyOwnedByYou":  # a concurrent deploy made it first
            raise


def _make_private_and_encrypted(s3: Any, bucket: str, kms_key_id: str | None) -> None:
    s3.put_public_access_block(
        Bucket=bucket,
        PublicAccessBlockConfiguration={
            "BlockPublicAcls": True,
            "IgnorePublicAcls": True,
            "BlockPublicPolicy": True,
            "RestrictPublicBuckets": True,
        },
    )
    default = {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": kms_key_id} if kms_key_id else {"SSEAlgorithm": "AES256"}
    s3.put_bucket_encryption(
        Bucket=bucket,
        ServerSideEncryptionConfiguration={
            "Rules": [{"ApplyServerSideEncryptionByDefault": default, "BucketKeyEnabled": bool(kms_key_id)}]
        },
    )


def _abort_incomplete_uploads_after_a_day(s3: Any, bucket: str) -> None:
    # The parts of an upload whose process was killed are billed until aborted; upload_artifact
    # aborts those under its own prefix, this rule the ones nobody comes back for.
    s3.put_bucket_lifecycle_configuration(
        Bucket=bucket,
        LifecycleConfiguration={"Rules": [{
            "ID": LIFECYCLE_RULE_ID,
            "Filter": {"Prefix": ""},
            "Status": "Enabled",
            "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1},
        }]},
    )


def abort_stale_uploads(s3: Any, bucket: str, key_prefix: str, *, now: datetime | None = None) -> int:
    """Abort the multipart uploads under ``key_prefix`` started more than :data:`STALE_UPLOAD_AGE` ago.

    Those were left by an uploader that was killed (no cleanup runs after a
    SIGKILL or a lost spot instance); their parts are billed until aborted.
    Recent ones are left alone: a concurrent deploy of the same artifact may be
    sending them, and aborting would make its next UploadPart fail.

    Args:
        s3: a boto3 S3 client.
        bucket: the bucket.
        key_prefix: the artifact's key prefix; only uploads under ``key_prefix/`` are looked at.
        now: the current time (timezone-aware); default: the system clock.

    Returns:
        How many uploads were aborted.

    Raises:
        AwsError: listing or aborting failed.
    """
    key_prefix = key_prefix.strip("/") + "/"
    cutoff = (now or datetime.now(timezone.utc)) - STALE_UPLOAD_AGE
    aborted = 0
    with aws_errors(f"s3:AbortMultipartUpload s3://{bucket}/{key_prefix}"):
        for page in s3.get_paginator("list_multipart_uploads").paginate(Bucket=bucket, Prefix=key_prefix):
            for upload in page.get("Uploads", []):
                if upload["Initiated"] >= cutoff:
                    continue
                try:
                    s3.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
                    aborted += 1
                except ClientError as exc:
                    if error_code(exc) != "NoSuchUpload":  # another deploy aborted it first
                        raise
    return aborted


def delete_prefix(s3: Any, bucket: str, key_prefix: str, *, dry_run: bool = False) -> int:
    """Delete every object under ``key_prefix``; returns how many were deleted.

    With ``dry_run``, count them and delete nothing.

    Raises:
        AwsError: listing or deleting failed.
    """
    key_prefix = key_prefix.strip("/") + "/"
    deleted = 0
    with aws_errors(f"s3:DeleteObjects s3://{bucket}/{key_prefix}"):
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key_prefix):
            keys = [{"Key": obj["Key"]} for obj in page.get("Contents", [])]
            if keys and not dry_run:  # one page holds at most 1000 keys, DeleteObjects' limit
                s3.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
            deleted += len(keys)
    return deleted


def download_prefix(s3: Any, bucket: str, key_prefix: str, folder: Path, *,
                    on_progress: Progress | None = None) -> int:
    """Copy every object under ``key_prefix`` into ``folder`` at the same relative path.

    A file already there with the object's size is kept, so an interrupted copy
    resumes. Each file is written to ``NAME.incomplete`` and moved into place.
    Returns the bytes downloaded.

    Raises:
        AwsError: listing or downloading failed.
        ConfigError: an object's key would land outside ``folder``.
    """
    key_prefix = key_prefix.strip("/") + "/" if key_prefix.strip("/") else ""
    root = folder.resolve()
    with aws_errors(f"s3:ListObjectsV2 s3://{bucket}/{key_prefix}"):
        objects = [obj for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key_prefix)
                   for obj in page.get("Contents", []) if not obj["Key"].endswith("/")]
    total = sum(obj["Size"] for obj in objects)
    done = downloaded = 0
    for obj in objects:
        target = (root / obj["Key"][len(key_prefix):]).resolve()
        if root not in target.parents:
            raise ConfigError(f"object s3://{bucket}/{obj['Key']} would be written outside {root}",
                              field="model_data", value=obj["Key"])
        if not (target.is_file() and target.stat().st_size == obj["Size"]):
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(target.name + ".incomplete")
            with aws_errors(f"s3:GetObject s3://{bucket}/{obj['Key']}"):
                s3.download_file(bucket, obj["Key"], str(partial))
            os.replace(partial, target)
            downloaded += obj["Size"]
        done += obj["Size"]
        if on_progress is not None:
            on_progress(done, total, obj["Key"])
    return downloaded
