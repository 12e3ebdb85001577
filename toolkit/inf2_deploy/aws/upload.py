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

Files are addressed by their content: a file whose content already lies in
the bucket, in another artifact under the same prefix root (say, every shard
when only serving.properties changed), is copied inside S3 rather than sent
again (:class:`~inf2_deploy.aws.artifact_store.StoredContent` finds it).
s3transfer copies in parts of the same size as its uploads, so the copy gets
the ETag an upload would, and the source's ``sha256`` metadata goes with it.
A copy is checked like an upload, and one that fails or lands wrong is
uploaded instead. A copy onto itself re-encrypts an object whose content is
right but whose encryption is not (a new ``--kms-key``).

Objects just written are checked from S3's own answer to the write when that
answer proves them: under SSE-S3 the PutObject / CopyObject /
CompleteMultipartUpload response carries the same ETag and encryption a
HeadObject would report (see :class:`~inf2_deploy.aws.write_log.WriteLog`).
Under SSE-KMS, and whenever the answer lacks them, a HeadObject checks the
object as before.

A killed uploader leaves its multipart uploads behind, and S3 bills their
parts until they are aborted: each upload first aborts the stale ones under
its own prefix (:func:`~inf2_deploy.aws.s3.abort_stale_uploads`), and a bucket
that :func:`~inf2_deploy.aws.s3.ensure_bucket` creates gets a lifecycle rule
that aborts any after a day.

:class:`Uploader` is the sending part on its own: files under one prefix, each
with its ``sha256`` metadata and the prefix's encryption, their progress
summed for one observer. ``upload_artifact`` and ``pipeline`` (which sends
files while the converter still writes the rest) both send through it.
"""
from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from botocore.exceptions import BotoCoreError, ClientError
from s3transfer.futures import TransferFuture
from s3transfer.manager import TransferConfig, TransferManager
from s3transfer.subscribers import BaseSubscriber

from ..artifact.manifest import MANIFEST_NAME, UPLOAD_PART_SIZE, Artifact, FileDigest
from ..errors import AwsError
from ..observer import DeployObserver, NullObserver
from .artifact_store import StoredContent
from .s3 import abort_stale_uploads
from .session import aws_errors, is_not_found
from .write_log import WriteLog

__all__ = [
    "MAX_CONCURRENCY",
    "SHA256_METADATA",
    "ProgressSubscriber",
    "UploadItem",
    "UploadResult",
    "UploadTracker",
    "Uploader",
    "sse_args",
    "succeeded",
    "transfer_config",
    "upload_artifact",
]

# Parallel PUT/UploadPart requests. Ten saturates about 1 Gbit/s from one host
# at 16 MiB parts without tripping S3's per-prefix request rate.
MAX_CONCURRENCY = 10
SHA256_METADATA = "sha256"


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


class UploadItem(NamedTuple):
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
    #: files copied inside S3 from another object with the same content (not uploaded)
    copied: tuple[str, ...] = ()
    bytes_copied: int = 0

    @property
    def s3_uri(self) -> str:
        """``s3://bucket/prefix/`` with the trailing slash SageMaker's S3Prefix needs."""
        return f"s3://{self.bucket}/{self.key_prefix}"


class UploadTracker:
    """Sums progress from many transfer threads and reports it to one observer.

    Args:
        total: the bytes of the whole upload; 0 while unknown (``pipeline`` starts before packaging ends).
        observer: receives ``on_progress(done, total, label)``, from transfer threads.
    """

    def __init__(self, total: int, observer: DeployObserver | None = None) -> None:
        self.total = total
        self.done = 0
        self._observer = observer or NullObserver()
        self._lock = threading.Lock()

    def add(self, amount: int, label: str) -> None:
        """Count ``amount`` bytes (negative to take some back) and report the sum under ``label``."""
        with self._lock:
            self.done += amount
            done = self.done
        self._observer.on_progress(done, self.total, label)


class ProgressSubscriber(BaseSubscriber):
    """An s3transfer subscriber that counts one file's bytes into an :class:`UploadTracker`."""

    def __init__(self, tracker: UploadTracker, label: str) -> None:
        self._tracker = tracker
        self._label = label

    def on_progress(self, future: Any, bytes_transferred: int, **kwargs: Any) -> None:
        # s3transfer reports negative amounts when it rewinds a part to retry it.
        self._tracker.add(bytes_transferred, self._label)


class Uploader:
    """Sends files under one S3 prefix through a transfer manager the caller owns (and shuts down).

    Every object gets the prefix's encryption and its ``sha256`` metadata when
    its upload starts; its bytes are counted into ``tracker``.

    Args:
        manager: the s3transfer manager.
        bucket: the destination bucket.
        key_prefix: the key prefix, ending with ``/``.
        kms_key_id: encrypt with this KMS key instead of SSE-S3.
        tracker: where progress is summed.
    """

    def __init__(self, manager: TransferManager, bucket: str, key_prefix: str, *, kms_key_id: str | None,
                 tracker: UploadTracker) -> None:
        self._manager = manager
        self.bucket = bucket
        self.key_prefix = key_prefix
        self.extra = sse_args(kms_key_id)
        self.tracker = tracker

    def start(self, item: UploadItem) -> TransferFuture:
        """Start uploading ``item``; the future's ``result()`` raises what the upload met."""
        return self._manager.upload(
            str(item.local), self.bucket, self.key_prefix + item.name,
            extra_args={**self.extra, "Metadata": {SHA256_METADATA: item.sha256}},
            subscribers=[ProgressSubscriber(self.tracker, item.name)],
        )

    def start_copy(self, item: UploadItem, source_key: str) -> TransferFuture:
        """Start copying ``source_key`` (same bucket, same content) to ``item``'s key inside S3.

        The object gets the prefix's encryption and keeps the source's metadata (its sha256);
        s3transfer copies in parts of its chunk size, so the ETag is the one an upload gets.
        """
        return self._manager.copy({"Bucket": self.bucket, "Key": source_key}, self.bucket,
                                  self.key_prefix + item.name, extra_args=dict(self.extra),
                                  subscribers=[ProgressSubscriber(self.tracker, item.name)])

    def start_from(self, item: UploadItem, sources: StoredContent | None) -> tuple[TransferFuture, bool]:
        """Start copying ``item`` from an object ``sources`` knows to hold its content, else uploading
        it; the flag is True for a copy."""
        source = sources.find(item.sha256, item.size, destination=self.key_prefix + item.name) if sources else None
        return (self.start_copy(item, source), True) if source else (self.start(item), False)

    def send_or_copy(self, items: Iterable[UploadItem], sources: StoredContent | None) -> list[str]:
        """Like :meth:`send`, but copy inside S3 what ``sources`` already holds; returns the names copied.

        A failed copy raises nothing: the caller's check finds that object missing and uploads it.

        Raises:
            AwsError: an upload failed.
        """
        started = {item.name: self.start_from(item, sources) for item in items}
        with aws_errors(f"s3:PutObject s3://{self.bucket}/{self.key_prefix}"):
            for future, copy in started.values():
                if not copy:
                    future.result()
        return [name for name, (future, copy) in started.items() if copy and succeeded(future)]

    def send(self, items: Iterable[UploadItem]) -> None:
        """Upload ``items`` in parallel and wait for all of them.

        Raises:
            AwsError: an upload failed.
        """
        futures = [self.start(item) for item in items]
        with aws_errors(f"s3:PutObject s3://{self.bucket}/{self.key_prefix}"):
            for future in futures:
                future.result()


def succeeded(future: TransferFuture) -> bool:
    """Wait for ``future``; False when its transfer failed (the caller checks and sends again).

    Besides S3's errors, a malformed answer counts as a failure: some S3-compatible servers
    answer UploadPartCopy without the part's ETag (rclone), and s3transfer then raises KeyError.
    """
    try:
        future.result()
    except (ClientError, BotoCoreError, KeyError):
        return False
    return True


def _items(artifact: Artifact) -> tuple[list[UploadItem], UploadItem]:
    files = [UploadItem(f.path, artifact.directory / f.path, f.size, f.sha256, f.s3_etag) for f in artifact.files]
    manifest = artifact.manifest_path
    # Sent like every other file, so its ETag is the one FileDigest predicts; the SSE-S3 case relies on that.
    digest = FileDigest.of_bytes(manifest.read_bytes(), artifact.part_size)
    return files, UploadItem(MANIFEST_NAME, manifest, digest.size, digest.sha256, digest.s3_etag)


def _head(s3: Any, bucket: str, key: str) -> dict[str, Any] | None:
    try:
        return s3.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if is_not_found(exc):
            return None
        with aws_errors(f"s3:HeadObject s3://{bucket}/{key}"):
            raise


def _matches(head: dict[str, Any] | None, item: UploadItem, sse: dict[str, str]) -> bool:
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


def _proven_by_write(answer: dict[str, str] | None, item: UploadItem, sse: dict[str, str]) -> bool:
    """Does S3's answer to our write prove the object (SSE-S3 only: there the ETag is the bytes' MD5)?

    The ETag is an MD5 over every stored byte (per part, for multipart), so it
    fixes the size as well; under SSE-KMS it is not an MD5 and a HeadObject decides.
    """
    return (sse["ServerSideEncryption"] == "AES256" and answer is not None and item.etag is not None
            and answer["ETag"] == item.etag and answer["ServerSideEncryption"] == "AES256")


def _mismatched(s3: Any, uploader: Uploader, items: Iterable[UploadItem], log: WriteLog) -> list[UploadItem]:
    """The items whose object under the uploader's prefix is missing or differs from the manifest."""
    bucket, key_prefix, sse = uploader.bucket, uploader.key_prefix, uploader.extra
    return [item for item in items
            if not _proven_by_write(log.get(bucket, key_prefix + item.name), item, sse)
            and not _matches(_head(s3, bucket, key_prefix + item.name), item, sse)]


def upload_artifact(
    s3: Any,
    artifact: Artifact,
    bucket: str,
    key_prefix: str,
    *,
    kms_key_id: str | None = None,
    observer: DeployObserver | None = None,
    config: TransferConfig | None = None,
    log: WriteLog | None = None,
    sources: StoredContent | None = None,
) -> UploadResult:
    """Upload ``artifact``'s files under ``s3://bucket/key_prefix/``, manifest last.

    Objects that already match (size, encryption, and ETag or SHA-256
    metadata; see the module docstring) are skipped, so an interrupted upload resumes and a repeated one sends
    nothing. Files whose content ``sources`` finds elsewhere in the bucket are copied there inside S3.
    After the upload every object is checked against the manifest and
    mismatches are sent once more. Stale multipart uploads under the prefix,
    left by a killed uploader, are aborted first (see ``abort_stale_uploads``).

    Args:
        s3: a boto3 S3 client.
        artifact: the packaged folder and its manifest.
        bucket: the destination bucket (see ``ensure_bucket``).
        key_prefix: the key prefix, e.g. ``inf2-deploy/gpt-j-6b/<fingerprint>``.
        kms_key_id: encrypt with this KMS key instead of SSE-S3.
        observer: told ``on_progress(done_bytes, total_bytes, label)``, from transfer threads.
        config: s3transfer settings; default ``transfer_config(artifact.part_size)``.
        log: an open :class:`~inf2_deploy.aws.write_log.WriteLog` of ``s3`` that already holds earlier
            writes of this upload (``pipeline`` passes its own); default: a fresh one.
        sources: where content already lies in the bucket; default: upload everything that is missing.

    Raises:
        AwsError: an S3 call failed, or an object still mismatches after a resend.
    """
    key_prefix = key_prefix.strip("/") + "/"
    files, manifest = _items(artifact)
    abort_stale_uploads(s3, bucket, key_prefix)
    tracker = UploadTracker(sum(item.size for item in [*files, manifest]), observer)
    manager = TransferManager(s3, config or transfer_config(artifact.part_size))
    with contextlib.ExitStack() as stack:
        if log is None:
            log = stack.enter_context(WriteLog(s3))
        stack.callback(manager.shutdown)  # before the log closes: in-flight writes still answer into it
        uploader = Uploader(manager, bucket, key_prefix, kms_key_id=kms_key_id, tracker=tracker)
        return _upload(s3, uploader, files, manifest, log, sources)


def _upload(s3: Any, uploader: Uploader, files: list[UploadItem], manifest: UploadItem,
            log: WriteLog, sources: StoredContent | None) -> UploadResult:
    where = f"s3://{uploader.bucket}/{uploader.key_prefix}"
    todo = _mismatched(s3, uploader, files, log)
    manifest_ok = not _mismatched(s3, uploader, [manifest], log)
    # A changed data file invalidates the manifest's promise that the prefix is complete.
    send_manifest = bool(todo) or not manifest_ok
    pending = [*todo, manifest] if send_manifest else []
    uploader.tracker.add(sum(item.size for item in [*files, manifest] if item not in pending), "already in S3")

    copied = set(uploader.send_or_copy(todo, sources))
    resend = _mismatched(s3, uploader, todo, log)
    copied -= {item.name for item in resend}
    if resend:
        uploader.tracker.add(-sum(item.size for item in resend), "verifying")
        uploader.send(resend)
        still = _mismatched(s3, uploader, resend, log)
        if still:
            raise AwsError(f"{where}{still[0].name} does not match the manifest after a second upload",
                           hint="check for concurrent writers to this prefix")
    if send_manifest:
        uploader.send([manifest])
        if _mismatched(s3, uploader, [manifest], log):
            raise AwsError(f"{where}{MANIFEST_NAME} does not match after upload")
    uploaded = [item for item in pending if item.name not in copied]
    copies = [item for item in todo if item.name in copied]
    return UploadResult(
        bucket=uploader.bucket,
        key_prefix=uploader.key_prefix,
        uploaded=tuple(item.name for item in uploaded),
        skipped=tuple(item.name for item in [*files, manifest] if item not in uploaded and item not in copies),
        bytes_uploaded=sum(item.size for item in uploaded),
        copied=tuple(item.name for item in copies),
        bytes_copied=sum(item.size for item in copies),
    )
