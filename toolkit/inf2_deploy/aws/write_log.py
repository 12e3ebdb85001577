"""S3's answers to object writes, kept so that a write proves an object without a HeadObject.

S3 computes an object's ETag from the bytes it stored and returns it in the
PutObject, CopyObject and CompleteMultipartUpload responses, exactly as
HeadObject reports it later. Under SSE-S3 that ETag is the bytes' MD5 (per part for multipart
uploads and copies), so the answer proves the content. The uploader
(:mod:`~inf2_deploy.aws.upload`) and the pipeline read the log before falling back
to HeadObject.
"""
from __future__ import annotations

import threading
from typing import Any

__all__ = ["WriteLog"]


class WriteLog:
    """What S3 answered to each object write made through one client while the log is open.

    S3 computes an object's ETag from the bytes it stored and returns it in the
    PutObject, CopyObject and CompleteMultipartUpload responses, exactly as HeadObject
    reports it later, so under SSE-S3 that answer proves the content without a
    second request (a HeadObject costs a round trip per object, and some
    S3-compatible servers compute the MD5 of the whole object to answer it).

    Use as a context manager: it hooks the client's event system on entry and
    unhooks on exit. Entries are keyed ``bucket/key``; a new write of a key
    forgets the old answer first, so an entry is always the latest complete write.
    """

    _WRITES = ("PutObject", "CopyObject", "CreateMultipartUpload", "CompleteMultipartUpload")
    _ANSWERS = ("PutObject", "CopyObject", "CompleteMultipartUpload")
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
        etag = parsed.get("ETag") or parsed.get("CopyObjectResult", {}).get("ETag")  # CopyObject nests it
        if name is None or http_response.status_code != 200 or "Error" in parsed or not etag:
            return
        with self._lock:
            self._answers[name] = {"ETag": etag.strip('"'),
                                   "ServerSideEncryption": parsed.get("ServerSideEncryption", "")}
