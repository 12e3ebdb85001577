"""Package and upload at once: S3 receives the artifact while the converter is still writing it.

``deploy`` used to package the whole artifact and only then upload it, so it
took the sum of the two. Here the packager's observer uploads each file as soon
as it is complete: the small files (config, tokenizer, serving code) before the
weights are converted, then every safetensors shard while the next one is
converted. The packager's 256 MiB shards (``DEFAULT_MAX_SHARD_BYTES``) keep the
part left to send once conversion ends small.

Whole files, not parts of the shard being written, because every object must
carry its ``sha256`` metadata when its upload starts: under SSE-KMS that
metadata is what proves an object (the ETag is not an MD5), and the S3 layout
promises it for every object. Only the last shard is left to send once
conversion ends.

The local artifact folder stays the cache exactly as ``package`` builds it.
Once packaging has finished, :func:`~inf2_deploy.aws.upload.upload_artifact` makes the
usual pass over the complete manifest: it checks every object (from S3's
answers to the writes under SSE-S3, else by HeadObject), re-sends what is
missing or wrong (also anything whose early upload failed) and writes
``manifest.json`` last. When conversion fails, the uploads in flight are
waited for and nothing more is sent: no manifest.json reaches S3 and no object
is half-written (s3transfer aborts a failed multipart upload); complete objects
stay and are reused, after verification, by the next run.

The S3 prefix must be known before the first byte is sent, when the artifact's
fingerprint (a hash of its files) does not exist yet, so it is keyed by the
packager's :func:`~inf2_deploy.artifact.packager.build_key` instead: a hash of
everything the artifact is built from, which, like the fingerprint, leaves out
the deployment settings the container does not read. A file whose content
already lies under the prefix root (another artifact's shard, when only
serving.properties changed) is copied inside S3 instead of sent.

Memory: files upload from their paths, which s3transfer reads lazily in small
buffers, so the uploads add a few MiB to the converter's own bounded memory.
The packager waits (``commit``) for them before it renames the staging folder.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from s3transfer.futures import TransferFuture
from s3transfer.manager import TransferConfig, TransferManager

from ..artifact.convert import DEFAULT_MAX_SHARD_BYTES
from ..artifact.manifest import MANIFEST_NAME, UPLOAD_PART_SIZE, Artifact, ArtifactFile
from ..errors import ConfigError
from ..observer import DeployObserver, NullObserver
from .artifact_store import ArtifactIndex, StoredContent
from .session import aws_errors
from .upload import (
    Uploader,
    UploadItem,
    UploadResult,
    UploadTracker,
    sse_args,
    succeeded,
    transfer_config,
    upload_artifact,
)
from .write_log import WriteLog

__all__ = ["package_and_upload", "stage"]


class _EarlyUploader:
    """The packager's observer: uploads each file as soon as it is complete."""

    def __init__(self, s3: Any, bucket: str, prefix_root: str, *, kms_key_id: str | None,
                 config: TransferConfig, observer: DeployObserver,
                 on_prefix: Callable[[str], None] | None = None) -> None:
        self._s3 = s3
        self._bucket = bucket
        self._prefix_root = prefix_root.strip("/")
        self._kms_key_id = kms_key_id
        self._manager = TransferManager(s3, config)
        self._tracker = UploadTracker(0, observer)  # the total is known only once packaging ends
        self._uploader: Uploader | None = None
        self._on_prefix = on_prefix
        self._sending: dict[str, tuple[int, TransferFuture, bool]] = {}
        self._present: set[str] | None = None
        self.sources = StoredContent(s3, bucket, self._prefix_root)
        self.key_prefix = ""
        self.sent: list[str] = []
        self.sent_bytes = 0
        self.copied: list[str] = []

    def begin(self, build_key: str) -> None:
        self.key_prefix = f"{self._prefix_root}/{build_key}/"
        if self._on_prefix is not None:
            self._on_prefix(f"s3://{self._bucket}/{self.key_prefix}")
        self._uploader = Uploader(self._manager, self._bucket, self.key_prefix, kms_key_id=self._kms_key_id,
                                  tracker=self._tracker)

    def file_written(self, file: ArtifactFile, path: Path) -> None:
        if self._uploader is None:
            raise RuntimeError("the packager reported a file before begin()")
        if self._already_there(file.path):
            return
        item = UploadItem(file.path, path, file.size, file.sha256, file.s3_etag)
        self._sending[file.path] = (file.size, *self._uploader.start_from(item, self.sources))

    def commit(self) -> None:
        """Wait for every early upload while the staging paths still exist (see ``finish``)."""
        self.sent, self.sent_bytes, self.copied = self.finish()

    def _already_there(self, name: str) -> bool:
        """Whether an object of that name exists; it is left alone here and verified by the final pass
        (a rerun after a kill thus sends only what is missing)."""
        if self._present is None:
            self._present = set()
            with aws_errors(f"s3:ListObjectsV2 s3://{self._bucket}/{self.key_prefix}"):
                for page in self._s3.get_paginator("list_objects_v2").paginate(Bucket=self._bucket,
                                                                                Prefix=self.key_prefix):
                    self._present.update(obj["Key"][len(self.key_prefix):] for obj in page.get("Contents", []))
        return name in self._present

    def finish(self) -> tuple[list[str], int, list[str]]:
        """Wait for every early upload and copy; return the names sent, their bytes, and the names copied.

        A failed upload or copy is not an error here: the final pass finds the object
        missing or wrong and sends it again from the finished file.
        """
        sent, sent_bytes, copied = [], 0, []
        for name, (size, future, copy) in self._sending.items():
            if not succeeded(future):
                continue
            if copy:
                copied.append(name)
            else:
                sent.append(name)
                sent_bytes += size
        return sent, sent_bytes, copied

    def shutdown(self) -> None:
        """Wait for the uploads in flight; s3transfer aborts a failed one (after a failed conversion
        the staging folder is gone, so an upload still reading from it fails and is aborted)."""
        self._manager.shutdown()


def package_and_upload(
    spec: Any,
    output: str | os.PathLike[str],
    s3: Any,
    bucket: str,
    prefix_root: str,
    *,
    kms_key_id: str | None = None,
    observer: DeployObserver | None = None,
    config: TransferConfig | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    on_prefix: Callable[[str], None] | None = None,
) -> tuple[Artifact, UploadResult]:
    """Package ``spec`` into ``output`` and upload it to ``s3://bucket/prefix_root/<build key>/`` meanwhile.

    Args:
        spec: the deployment (a :class:`~inf2_deploy.spec.deployment_spec.DeploymentSpec`).
        output: the artifact folder (the local cache; rebuilt only when its inputs changed).
        s3: a boto3 S3 client.
        bucket: an existing bucket (see ``ensure_bucket``).
        prefix_root: the key prefix the build key is appended to, e.g. ``inf2-deploy/gpt-j-6b``.
        kms_key_id: encrypt with this KMS key instead of SSE-S3.
        observer: told ``on_progress(done_bytes, total_bytes, label)``: the packager's labels, then one
            per uploaded file (total 0 while packaging, the artifact's size in the final pass).
        config: s3transfer settings; default ``transfer_config()``.
        cache_dir: passed to :func:`~inf2_deploy.artifact.packager.package`.
        max_shard_bytes: data bytes per safetensors shard.
        on_prefix: told the artifact's ``s3://bucket/prefix/`` once it is known, before anything is
            sent (the deployer records it in the endpoint's artifact index).

    Returns:
        The artifact and what the upload did: ``uploaded`` and ``bytes_uploaded``
        count early and final sends together, ``copied`` and ``bytes_copied`` the files
        copied inside S3 from another artifact instead.

    Raises:
        PlanError, ConfigError, ModelSourceError: as ``package`` raises them; nothing
            is left half-written, locally or in S3, and no manifest.json is uploaded.
        AwsError: an S3 call failed, or an object still mismatches after a resend.
    """
    from ..artifact.packager import package

    config = config or transfer_config(UPLOAD_PART_SIZE)
    observer = observer or NullObserver()
    with WriteLog(s3) as log:
        early = _EarlyUploader(s3, bucket, prefix_root, kms_key_id=kms_key_id, config=config, observer=observer,
                               on_prefix=on_prefix)
        try:
            artifact = package(spec, output, progress=observer.on_progress, cache_dir=cache_dir, observer=early,
                               max_shard_bytes=max_shard_bytes)
        finally:
            early.shutdown()
        final = upload_artifact(s3, artifact, bucket, early.key_prefix, kms_key_id=kms_key_id, observer=observer,
                                config=config, log=log, sources=early.sources)
    sizes = {f.path: f.size for f in artifact.files}
    names = [*sizes, MANIFEST_NAME]
    uploaded = tuple(name for name in names if name in early.sent or name in final.uploaded)
    copied = tuple(name for name in names
                   if (name in early.copied or name in final.copied) and name not in uploaded)
    return artifact, UploadResult(bucket=bucket, key_prefix=final.key_prefix, uploaded=uploaded,
                                  skipped=tuple(name for name in names if name not in uploaded + copied),
                                  bytes_uploaded=early.sent_bytes + final.bytes_uploaded,
                                  copied=copied, bytes_copied=sum(sizes[name] for name in copied))


def stage(
    spec: Any,
    s3: Any,
    bucket: str,
    prefix_root: str,
    *,
    artifact: Artifact | None = None,
    output: str | os.PathLike[str] | None = None,
    endpoint_name: str | None = None,
    observer: DeployObserver | None = None,
) -> tuple[Artifact, UploadResult]:
    """Put an artifact under ``s3://bucket/prefix_root/``: ``artifact`` under its fingerprint, or what
    packaging ``spec`` into ``output`` makes, under its build key (see :func:`package_and_upload`).

    Files whose content another artifact under ``prefix_root`` already holds are copied inside S3,
    not uploaded. With ``endpoint_name``, the artifact's prefix is recorded in that endpoint's
    :class:`~inf2_deploy.aws.artifact_store.ArtifactIndex` before anything is sent, so that
    ``delete --purge-artifacts`` finds it even when the upload never finished.

    Raises:
        ConfigError: neither ``artifact`` nor ``output`` given.
        AwsError: an S3 call failed.
        PlanError, ModelSourceError: packaging failed (see ``package``).
    """
    index = ArtifactIndex(s3, bucket, prefix_root, endpoint_name) if endpoint_name else None

    def record(uri: str) -> None:
        if index is not None:
            index.record(uri, sse=sse_args(spec.kms_key_id))

    if artifact is not None:
        key_prefix = f"{prefix_root.strip('/')}/{artifact.fingerprint}"
        record(f"s3://{bucket}/{key_prefix}/")
        return artifact, upload_artifact(s3, artifact, bucket, key_prefix, kms_key_id=spec.kms_key_id,
                                         observer=observer, sources=StoredContent(s3, bucket, prefix_root))
    if output is None:
        raise ConfigError("pass a packaged artifact or an output folder to package into", field="output")
    return package_and_upload(spec, output, s3, bucket, prefix_root, kms_key_id=spec.kms_key_id, observer=observer,
                              on_prefix=record)
