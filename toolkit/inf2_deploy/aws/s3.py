"""Upload an artifact folder to S3, uncompressed, resumably and verified.

SageMaker reads the folder as an ``S3Prefix`` model source with
``CompressionType: None``, so the weights are never tarred (a tar.gz of 12 GB
takes minutes to build and again to unpack on the instance).

Every object carries its SHA-256 in ``x-amz-meta-sha256``. A rerun
skips what is already there, so a deploy of an unchanged artifact uploads
nothing: an object matches when its size and encryption are as asked and,
under SSE-S3, its ETag equals the one the manifest predicts for our part size
(the ETag is an MD5 of the stored bytes, so it proves the content), or, under
SSE-KMS (where the ETag is not an MD5), its sha256 metadata equals the
manifest's. ``manifest.json`` goes last: a prefix that has a manifest is complete.

Objects just written are checked from S3's own answer to the write when that
answer proves them: under SSE-S3 the PutObject / CompleteMultipartUpload
response carries the same ETag and encryption a HeadObject would report (see
:class:`WriteLog`). Under SSE-KMS, and whenever the answer lacks them, a
HeadObject checks the object as before.

A killed uploader leaves its multipart uploads behind, and S3 bills their
parts until they are aborted: each upload first aborts the stale ones under
its own prefix (:func:`abort_stale_uploads`), and a bucket that
:func:`ensure_bucket` creates gets a lifecycle rule that aborts any after a day.
"""
from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, NamedTuple

from botocore.exceptions import ClientError
from s3transfer.manager import TransferConfig, TransferManager
from s3transfer.subscribers import BaseSubscriber

from ..artifact.manifest import MANIFEST_NAME, UPLOAD_PART_SIZE, Artifact, FileDigest
from ..errors import AwsError, ConfigError
from .session import aws_errors, error_code, is_not_found

__all__ = [
    "download_prefix",
    "LIFECYCLE_RULE_ID",
    "MAX_CONCURRENCY",
    "STALE_UPLOAD_AGE",
    "Progress",
    "UploadResult",
    "WriteLog",
    "transfer_config",
    "sse_args",
    "ensure_bucket",
    "abort_stale_uploads",
    "upload_artifact",
    "delete_prefix",
    "split_s3_uri",
]

# Parallel PUT/UploadPart requests. Ten saturates about 1 Gbit/s from one host
# at 16 MiB parts without tripping S3's per-prefix request rate.
MAX_CONCURRENCY = 10
SHA256_METADATA = "sha256"
#: The lifecycle rule ``ensure_bucket`` puts on a bucket it creates.
LIFECYCLE_RULE_ID = "inf2-deploy-abort-incomplete-multipart"
#: Multipart uploads under an artifact's prefix older than this were left by a killed uploader.
STALE_UPLOAD_AGE = timedelta(hours=1)

#: ``(done_bytes, total_bytes, label)``; called from transfer threads.
Progress = Callable[[int, int, str], None]


def transfer_config(part_size: int = UPLOAD_PART_SIZE) -> TransferConfig:
    """The s3transfer settings for artifact uploads.

    ``multipart_threshold`` and ``multipart_chunksize`` both equal the
    manifest's part size, so the ETag S3 computes for every object is the one
    the manifest predicted (an MD5 for small files, MD5-of-part-MD5s for large
    ones); that lets a rerun recognise objects uploaded without our metadata.

    Memory: ``upload_artifact`` uploads from file paths, which s3transfer reads
    lazily part by part, so memory stays at about ``MAX_CONCURRENCY`` in-flight
    requests of 256 KiB read buffers each (a few MiB). From an open file object
    (``pipeline``, whose files are still in a staging folder that is renamed
    while they upload) s3transfer reads whole parts into memory, at most
    ``max_in_memory_upload_chunks`` of them: 10 x 16 MiB = 160 MiB.
    """
    return TransferConfig(
        multipart_threshold=part_size,
        multipart_chunksize=part_size,
        max_request_concurrency=MAX_CONCURRENCY,
        max_in_memory_upload_chunks=MAX_CONCURRENCY,
    )


def sse_args(kms_key_id: str | None) -> dict[str, str]:
    """The server-side encryption arguments for every PutObject/CreateMultipartUpload."""
    if kms_key_id:
        return {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": kms_key_id}
    return {"ServerSideEncryption": "AES256"}


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
    try:
        s3.head_bucket(Bucket=bucket)
        return False
    except ClientError as exc:
        if error_code(exc) == "403":
            raise AwsError(f"bucket {bucket} exists but this account may not use it", code="403",
                           hint="pass --bucket with a bucket you own") from None
        if not is_not_found(exc):
            with aws_errors(f"s3:HeadBucket {bucket}"):
                raise
    if not create:
        raise ConfigError(f"bucket {bucket} does not exist", field="bucket", value=bucket,
                          hint="create it, or omit --bucket to use the default bucket")
    request: dict[str, Any] = {"Bucket": bucket}
    if region != "us-east-1":  # us-east-1 rejects an explicit LocationConstraint
        request["CreateBucketConfiguration"] = {"LocationConstraint": region}
    with aws_errors(f"s3:CreateBucket {bucket}"):
        try:
            s3.create_bucket(**request)
        except ClientError as exc:
            if error_code(exc) != "BucketAlreadyOwnedByYou":  # a concurrent deploy made it first
                raise
        s3.put_public_access_block(
            Bucket=bucket,
            PublicAccessBlockConfiguration={
                "BlockPublicAcls": True,
                "IgnorePublicAcls": True,
                "BlockPublicPolicy": True,
                "RestrictPublicBuckets": True,
            },
        )
        default = {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": kms_key_id} if kms_key_id else {
            "SSEAlgorithm": "AES256"}
        s3.put_bucket_encryption(
            Bucket=bucket,
            ServerSideEncryptionConfiguration={
                "Rules": [{"ApplyServerSideEncryptionByDefault": default, "BucketKeyEnabled": bool(kms_key_id)}]
            },
        )
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
    return True


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


class _Item(NamedTuple):
    """One file to place under the prefix."""

    name: str  # path relative to the artifact folder, with forward slashes
    local: Path
    size: int
    sha256: str
    etag: str | None  # the ETag S3 will compute, when the manifest predicts it


@dataclass(frozen=True)
class UploadResult:
    """What an upload did."""

    bucket: str
    key_prefix: str  # ends with "/"
    uploaded: tuple[str, ...]
    skipped: tuple[str, ...]
    bytes_uploaded: int

    @property
    def s3_uri(self) -> str:
        """``s3://bucket/prefix/`` with the trailing slash SageMaker's S3Prefix needs."""
        return f"s3://{self.bucket}/{self.key_prefix}"


class WriteLog:
    """What S3 answered to each object write made through one client while the log is open.

    S3 computes an object's ETag from the bytes it stored and returns it in the
    PutObject and CompleteMultipartUpload responses, exactly as HeadObject
    reports it later, so under SSE-S3 that answer proves the content without a
    second request (a HeadObject costs a round trip per object, and some
    S3-compatible servers compute the MD5 of the whole object to answer it).

    Use as a context manager: it hooks the client's event system on entry and
    unhooks on exit. Entries are keyed ``bucket/key``; a new write of a key
    forgets the old answer first, so an entry is always the latest complete write.
    """

    _WRITES = ("PutObject", "CreateMultipartUpload", "CompleteMultipartUpload")
    _ANSWERS = ("PutObject", "CompleteMultipartUpload")
    _CONTEXT_KEY = "inf2_deploy_write_key"

    def __init__(self, s3: Any) -> None:
        self._events = s3.meta.events
        self._answers: dict[str, dict[str, str]] = {}
        self._lock = threading.Lock()
        self._id = f"inf2-deploy-write-log-{id(self)}"

    def __enter__(self) -> WriteLog:
        for operation in self._WRITES:
            self._events.register(f"before-parameter-build.s3.{operation}", self._started,
                                  unique_id=f"{self._id}-{operation}-start")
        for operation in self._ANSWERS:
            self._events.register(f"after-call.s3.{operation}", self._answered,
                                  unique_id=f"{self._id}-{operation}-answer")
        return self

    def __exit__(self, *exc: object) -> None:
        for operation in self._WRITES:
            self._events.unregister(f"before-parameter-build.s3.{operation}",
                                    unique_id=f"{self._id}-{operation}-start")
        for operation in self._ANSWERS:
            self._events.unregister(f"after-call.s3.{operation}", unique_id=f"{self._id}-{operation}-answer")

    def get(self, bucket: str, key: str) -> dict[str, str] | None:
        """``{"ETag", "ServerSideEncryption"}`` of the last successful write of ``key``, else None."""
        with self._lock:
            return self._answers.get(f"{bucket}/{key}")

    def _started(self, params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        name = f"{params.get('Bucket')}/{params.get('Key')}"
        context[self._CONTEXT_KEY] = name
        with self._lock:
            self._answers.pop(name, None)

    def _answered(self, http_response: Any, parsed: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        name = context.get(self._CONTEXT_KEY)
        if name is None or http_response.status_code != 200 or "Error" in parsed or not parsed.get("ETag"):
            return
        with self._lock:
            self._answers[name] = {"ETag": parsed["ETag"].strip('"'),
                                   "ServerSideEncryption": parsed.get("ServerSideEncryption", "")}


class _Tracker:
    """Sums progress from many transfer threads and forwards it to one callback."""

    def __init__(self, total: int, callback: Progress | None) -> None:
        self.total = total
        self.done = 0
        self._callback = callback
        self._lock = threading.Lock()

    def add(self, amount: int, label: str) -> None:
        with self._lock:
            self.done += amount
            done = self.done
        if self._callback is not None:
            self._callback(done, self.total, label)


class _Subscriber(BaseSubscriber):
    def __init__(self, tracker: _Tracker, label: str) -> None:
        self._tracker = tracker
        self._label = label

    def on_progress(self, future: Any, bytes_transferred: int, **kwargs: Any) -> None:
        # s3transfer reports negative amounts when it rewinds a part to retry it.
        self._tracker.add(bytes_transferred, self._label)


def _items(artifact: Artifact) -> tuple[list[_Item], _Item]:
    files = [_Item(f.path, artifact.directory / f.path, f.size, f.sha256, f.s3_etag) for f in artifact.files]
    manifest = artifact.manifest_path
    # Sent like every other file, so its ETag is the one FileDigest predicts; the SSE-S3 case relies on that.
    digest = FileDigest.of_bytes(manifest.read_bytes(), artifact.part_size)
    return files, _Item(MANIFEST_NAME, manifest, digest.size, digest.sha256, digest.s3_etag)


def _head(s3: Any, bucket: str, key: str) -> dict[str, Any] | None:
    try:
        return s3.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if is_not_found(exc):
            return None
        with aws_errors(f"s3:HeadObject s3://{bucket}/{key}"):
            raise


def _matches(head: dict[str, Any] | None, item: _Item, sse: dict[str, str]) -> bool:
    """Is the object ``head`` describes this file, encrypted as asked?

    Under SSE-S3 the ETag is the MD5 (of the parts, for multipart uploads) of
    the stored bytes, so it proves the content; our ``sha256`` metadata only
    repeats what the uploader claimed. Under SSE-KMS the ETag is not an MD5, so
    the metadata (plus the size) is what there is. An object stored with other
    encryption than requested does not match and is uploaded again.
    """
    if head is None or head.get("ContentLength") != item.size:
        return False
    if head.get("ServerSideEncryption") != sse["ServerSideEncryption"]:
        return False
    if sse["ServerSideEncryption"] == "aws:kms":
        return head.get("Metadata", {}).get(SHA256_METADATA) == item.sha256
    return item.etag is not None and head.get("ETag", "").strip('"') == item.etag


def _proven_by_write(answer: dict[str, str] | None, item: _Item, sse: dict[str, str]) -> bool:
    """Does S3's answer to our write prove the object (SSE-S3 only: there the ETag is the bytes' MD5)?

    The ETag is an MD5 over every stored byte (per part, for multipart), so it
    fixes the size as well; under SSE-KMS it is not an MD5 and a HeadObject decides.
    """
    return (sse["ServerSideEncryption"] == "AES256" and answer is not None and item.etag is not None
            and answer["ETag"] == item.etag and answer["ServerSideEncryption"] == "AES256")


def _mismatched(s3: Any, bucket: str, key_prefix: str, items: Iterable[_Item], sse: dict[str, str],
                log: WriteLog) -> list[_Item]:
    return [item for item in items
            if not _proven_by_write(log.get(bucket, key_prefix + item.name), item, sse)
            and not _matches(_head(s3, bucket, key_prefix + item.name), item, sse)]


def _send(manager: TransferManager, bucket: str, key_prefix: str, items: list[_Item],
          extra: dict[str, str], tracker: _Tracker) -> None:
    futures = [
        manager.upload(
            str(item.local), bucket, key_prefix + item.name,
            extra_args={**extra, "Metadata": {SHA256_METADATA: item.sha256}},
            subscribers=[_Subscriber(tracker, item.name)],
        )
        for item in items
    ]
    with aws_errors(f"s3:PutObject s3://{bucket}/{key_prefix}"):
        for future in futures:
            future.result()


def upload_artifact(
    s3: Any,
    artifact: Artifact,
    bucket: str,
    key_prefix: str,
    *,
    kms_key_id: str | None = None,
    progress: Progress | None = None,
    config: TransferConfig | None = None,
    log: WriteLog | None = None,
) -> UploadResult:
    """Upload ``artifact``'s files under ``s3://bucket/key_prefix/``, manifest last.

    Objects that already match (size, encryption, and ETag or SHA-256
    metadata; see the module docstring) are skipped, so an interrupted upload resumes and a repeated one sends
    nothing. After the upload every object is checked against the manifest and
    mismatches are sent once more. Stale multipart uploads under the prefix,
    left by a killed uploader, are aborted first (see ``abort_stale_uploads``).

    Args:
        s3: a boto3 S3 client.
        artifact: the packaged folder and its manifest.
        bucket: the destination bucket (see ``ensure_bucket``).
        key_prefix: the key prefix, e.g. ``inf2-deploy/gpt-j-6b/<fingerprint>``.
        kms_key_id: encrypt with this KMS key instead of SSE-S3.
        progress: ``(done_bytes, total_bytes, label)`` callback.
        config: s3transfer settings; default ``transfer_config(artifact.part_size)``.
        log: an open :class:`WriteLog` of ``s3`` that already holds earlier writes
            of this upload (``pipeline`` passes its own); default: a fresh one.

    Raises:
        AwsError: an S3 call failed, or an object still mismatches after a resend.
    """
    key_prefix = key_prefix.strip("/") + "/"
    files, manifest = _items(artifact)
    extra = sse_args(kms_key_id)
    abort_stale_uploads(s3, bucket, key_prefix)
    with contextlib.ExitStack() as stack:
        if log is None:
            log = stack.enter_context(WriteLog(s3))
        return _upload(s3, bucket, key_prefix, files, manifest, extra, log,
                       config or transfer_config(artifact.part_size), progress)


def _upload(s3: Any, bucket: str, key_prefix: str, files: list[_Item], manifest: _Item, extra: dict[str, str],
            log: WriteLog, config: TransferConfig, progress: Progress | None) -> UploadResult:
    todo = _mismatched(s3, bucket, key_prefix, files, extra, log)
    manifest_ok = not _mismatched(s3, bucket, key_prefix, [manifest], extra, log)
    # A changed data file invalidates the manifest's promise that the prefix is complete.
    send_manifest = bool(todo) or not manifest_ok
    pending = [*todo, manifest] if send_manifest else []
    tracker = _Tracker(sum(item.size for item in [*files, manifest]), progress)
    tracker.add(sum(item.size for item in [*files, manifest] if item not in pending), "already in S3")

    manager = TransferManager(s3, config)
    try:
        _send(manager, bucket, key_prefix, todo, extra, tracker)
        resend = _mismatched(s3, bucket, key_prefix, todo, extra, log)
        if resend:
            tracker.add(-sum(item.size for item in resend), "verifying")
            _send(manager, bucket, key_prefix, resend, extra, tracker)
            still = _mismatched(s3, bucket, key_prefix, resend, extra, log)
            if still:
                raise AwsError(f"s3://{bucket}/{key_prefix}{still[0].name} does not match the manifest "
                               "after a second upload", hint="check for concurrent writers to this prefix")
        if send_manifest:
            _send(manager, bucket, key_prefix, [manifest], extra, tracker)
            if _mismatched(s3, bucket, key_prefix, [manifest], extra, log):
                raise AwsError(f"s3://{bucket}/{key_prefix}{MANIFEST_NAME} does not match after upload")
    finally:
        manager.shutdown()
    uploaded = tuple(item.name for item in pending)
    return UploadResult(
        bucket=bucket,
        key_prefix=key_prefix,
        uploaded=uploaded,
        skipped=tuple(item.name for item in [*files, manifest] if item.name not in uploaded),
        bytes_uploaded=sum(item.size for item in pending),
    )


def delete_prefix(s3: Any, bucket: str, key_prefix: str) -> int:
    """Delete every object under ``key_prefix``; returns how many were deleted.

    Raises:
        AwsError: listing or deleting failed.
    """
    key_prefix = key_prefix.strip("/") + "/"
    deleted = 0
    with aws_errors(f"s3:DeleteObjects s3://{bucket}/{key_prefix}"):
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key_prefix):
            keys = [{"Key": obj["Key"]} for obj in page.get("Contents", [])]
            if keys:  # one page holds at most 1000 keys, DeleteObjects' limit
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
