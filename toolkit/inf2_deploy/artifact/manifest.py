"""The artifact manifest: every file's size, sha256 and S3 ETag, the source and the container settings.

``manifest.json`` sits in the artifact folder (what the container sees at
/opt/ml/model). It lets the uploader compare local files with S3 objects without
downloading them: S3 reports an object's ETag, and for an upload cut into parts
of a known size that ETag is computable locally. It also lets ``package`` skip
work when neither the source nor the container settings changed.

The artifact is addressed by its content: the fingerprint is a hash of the
files alone (weights, tokenizer, config, serving.properties, serving code), so
deployment settings the container never reads (instance type and count, price,
tags, endpoint timeouts, env, KMS, VPC) cannot change it.

The manifest is deterministic (sorted keys, no timestamps) and holds no secrets:
only paths, sizes, hashes, the source's identity and the settings serving.properties was written from.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from ..atomic import atomic_write_text
from ..errors import ModelSourceError
from ..version import __version__

__all__ = [
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "UPLOAD_PART_SIZE",
    "ArtifactFile",
    "Artifact",
    "FileDigest",
    "digest_file",
    "s3_etag",
    "artifact_fingerprint",
    "write_manifest",
]

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
UPLOAD_PART_SIZE: int = 16 * 1024 * 1024
"""The uploader's multipart chunk size and threshold; every ETag here is computed for it."""
# S3 allows at most 10,000 parts; s3transfer would raise the part size beyond that,
# which would change the ETag. Artifact files are bounded shards, far below this.
MAX_PARTS = 10_000
_READ_BLOCK = 8 * 1024 * 1024


@dataclass(frozen=True)
class ArtifactFile:
    """One file of an artifact folder."""

    path: str  # POSIX path relative to the artifact folder
    size: int
    sha256: str
    # S3's ETag with the quotes stripped for an upload in UPLOAD_PART_SIZE parts,
    # with s3transfer's rule that a file of at least the threshold goes multipart:
    # md5 hex for a single PUT (size < part size), else md5(concatenated part md5
    # digests) + "-N". A file of exactly one part size is a one-part upload ("-1").
    s3_etag: str

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "size": self.size, "sha256": self.sha256, "s3_etag": self.s3_etag}


class FileDigest:
    """sha256 and the S3 ETag of a byte stream, computed in one pass as it is written or read.

    Args:
        part_size: the multipart chunk size the ETag is computed for.
    """

    def __init__(self, part_size: int = UPLOAD_PART_SIZE) -> None:
        if part_size <= 0:
            raise ValueError(f"part_size must be positive, got {part_size}")
        self.part_size = part_size
        self.size = 0
        self._sha256 = hashlib.sha256()
        self._part = hashlib.md5(usedforsecurity=False)
        self._part_fill = 0
        self._part_digests: list[bytes] = []

    @classmethod
    def of_bytes(cls, data: bytes | bytearray | memoryview, part_size: int = UPLOAD_PART_SIZE) -> FileDigest:
        """The digest of bytes already in memory (a small file about to be written or sent)."""
        digest = cls(part_size)
        digest.update(data)
        return digest

    def update(self, data: bytes | bytearray | memoryview) -> None:
        """Add the next bytes of the stream."""
        self.update_sha256(data)
        self.update_parts(data)

    # The two halves of update() touch separate state, so a writer may run them on two
    # threads to hash in parallel; each half must still see every byte, in order.

    def update_sha256(self, data: bytes | bytearray | memoryview) -> None:
        """Add the next bytes to the sha256 and the size only."""
        view = memoryview(data).cast("B")
        self._sha256.update(view)
        self.size += len(view)

    def update_parts(self, data: bytes | bytearray | memoryview) -> None:
        """Add the next bytes to the part md5s (the ETag) only."""
        view = memoryview(data).cast("B")
        while len(view):
            take = min(len(view), self.part_size - self._part_fill)
            self._part.update(view[:take])
            self._part_fill += take
            view = view[take:]
            if self._part_fill == self.part_size:
                self._part_digests.append(self._part.digest())
                self._part = hashlib.md5(usedforsecurity=False)
                self._part_fill = 0

    @property
    def sha256(self) -> str:
        return self._sha256.hexdigest()

    @property
    def s3_etag(self) -> str:
        digests = list(self._part_digests)
        if self._part_fill or not digests:
            digests.append(self._part.digest())
        if self.size < self.part_size:
            return digests[0].hex()
        if len(digests) > MAX_PARTS:
            raise ValueError(
                f"{self.size} bytes need {len(digests)} parts of {self.part_size}; S3 allows {MAX_PARTS}"
            )
        return hashlib.md5(b"".join(digests), usedforsecurity=False).hexdigest() + f"-{len(digests)}"

    def result(self, path: str) -> ArtifactFile:
        """The :class:`ArtifactFile` for the bytes seen so far, stored at ``path``."""
        return ArtifactFile(path=path, size=self.size, sha256=self.sha256, s3_etag=self.s3_etag)


def digest_file(path: str | os.PathLike[str], part_size: int = UPLOAD_PART_SIZE) -> FileDigest:
    """Read ``path`` once and return its :class:`FileDigest`."""
    digest = FileDigest(part_size)
    with open(path, "rb") as stream:
        while block := stream.read(_READ_BLOCK):
            digest.update(block)
    return digest


def s3_etag(path: str | os.PathLike[str], part_size: int = UPLOAD_PART_SIZE) -> str:
    """The ETag S3 gives ``path`` when uploaded with threshold and chunk size ``part_size``.

    Raises:
        OSError: the file cannot be read.
    """
    return digest_file(path, part_size).s3_etag


def artifact_fingerprint(files: Iterable[ArtifactFile]) -> str:
    """sha256 hex of the sorted ``(path, sha256)`` list: exactly what the container reads.

    Settings reach the container only through files (serving.properties, config.json),
    so two artifacts with the same files are the same artifact whatever plan made them.
    """
    payload = {"files": sorted((f.path, f.sha256) for f in files)}
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _check_confined(folder: Path, relative: str) -> None:
    """Refuse a file that resolves outside ``folder`` (a symlink pointing out of it), which the
    uploader would otherwise read and publish under the artifact prefix."""
    if not (folder / relative).resolve().is_relative_to(folder.resolve()):
        raise ValueError(f"file {relative!r} resolves outside the artifact folder (a symlink?)")


@dataclass(frozen=True)
class Artifact:
    """A packaged artifact folder and its manifest."""

    directory: Path
    #: sha256 hex of the sorted (path, sha256) list (see ``artifact_fingerprint``)
    fingerprint: str
    #: every file except manifest.json, sorted by path
    files: tuple[ArtifactFile, ...]
    #: the plan's settings the container reads (``{"serving_properties": {...}}`` from the packager),
    #: never the endpoint's: no instance type, count or price
    plan: dict[str, Any]
    #: {"kind", "id", "fingerprint"} of the checkpoint the weights came from
    source: dict[str, Any]
    part_size: int = UPLOAD_PART_SIZE
    #: how the weights were converted: {"dtype", "max_shard_bytes"}
    conversion: dict[str, Any] = field(default_factory=dict)
    tool_version: str = __version__

    @property
    def total_bytes(self) -> int:
        """The size of every file except manifest.json."""
        return sum(f.size for f in self.files)

    @property
    def manifest_path(self) -> Path:
        return self.directory / MANIFEST_NAME

    def to_dict(self) -> dict[str, Any]:
        """The manifest.json content."""
        return {
            "format_version": FORMAT_VERSION,
            "tool_version": self.tool_version,
            "fingerprint": self.fingerprint,
            "part_size": self.part_size,
            "source": self.source,
            "plan": self.plan,
            "conversion": self.conversion,
            "files": [f.to_dict() for f in self.files],
        }

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> Artifact:
        """Read and validate ``directory/manifest.json``.

        Raises:
            ModelSourceError: the manifest is missing, unreadable or malformed.
        """
        folder = Path(directory)
        path = folder / MANIFEST_NAME
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ModelSourceError(f"{folder} has no {MANIFEST_NAME}", field="artifact", value=str(folder),
                                   hint="run inf2-deploy package first") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelSourceError(f"cannot read {path}: {exc}", field="artifact", value=str(path),
                                   hint="re-run inf2-deploy package --force") from None
        try:
            return cls._from_dict(folder, data)
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelSourceError(f"{path} is malformed: {exc}", field="artifact", value=str(path),
                                   hint="re-run inf2-deploy package --force") from None

    @classmethod
    def _from_dict(cls, folder: Path, data: dict[str, Any]) -> Artifact:
        if data["format_version"] != FORMAT_VERSION:
            raise ValueError(f"format_version {data['format_version']!r}, expected {FORMAT_VERSION}")
        files = []
        for entry in data["files"]:
            item = ArtifactFile(path=str(entry["path"]), size=int(entry["size"]),
                                sha256=str(entry["sha256"]), s3_etag=str(entry["s3_etag"]))
            relative = PurePosixPath(item.path)
            if relative.is_absolute() or ".." in relative.parts or item.path in ("", MANIFEST_NAME):
                raise ValueError(f"file path {item.path!r} is not a plain relative path")
            _check_confined(folder, item.path)
            if item.size < 0 or len(item.sha256) != 64:
                raise ValueError(f"entry for {item.path!r} has a bad size or sha256")
            files.append(item)
        for name in ("plan", "source"):
            if not isinstance(data[name], dict):
                raise TypeError(f"{name} must be an object")
        part_size = int(data["part_size"])
        if part_size <= 0:
            raise ValueError(f"part_size {part_size} must be positive")
        return cls(directory=folder, fingerprint=str(data["fingerprint"]), files=tuple(files),
                   plan=data["plan"], source=data["source"], part_size=part_size,
                   conversion=dict(data.get("conversion") or {}), tool_version=str(data["tool_version"]))

    def verify(self) -> Artifact:
        """Re-hash every file and check it against the manifest; return self.

        Raises:
            ModelSourceError: a file is missing, or its size, sha256 or ETag differs.
        """
        for item in self.files:
            path = self.directory / item.path
            try:
                _check_confined(self.directory, item.path)
            except ValueError as exc:
                raise ModelSourceError(str(exc), field="artifact", value=str(path),
                                       hint="re-run inf2-deploy package --force") from None
            try:
                actual = digest_file(path, self.part_size).result(item.path)
            except FileNotFoundError:
                raise ModelSourceError(f"artifact file {item.path} is missing from {self.directory}",
                                       field="artifact", value=str(path),
                                       hint="re-run inf2-deploy package --force") from None
            if actual != item:
                raise ModelSourceError(
                    f"artifact file {item.path} does not match manifest.json "
                    f"(size {actual.size} vs {item.size}, sha256 {actual.sha256[:12]} vs {item.sha256[:12]})",
                    field="artifact", value=str(path), hint="re-run inf2-deploy package --force")
        return self


def write_manifest(
    directory: str | os.PathLike[str],
    *,
    files: Iterable[ArtifactFile],
    plan: dict[str, Any],
    source: dict[str, Any],
    part_size: int = UPLOAD_PART_SIZE,
    conversion: dict[str, Any] | None = None,
) -> Artifact:
    """Write ``directory/manifest.json`` atomically and return the :class:`Artifact`.

    Args:
        directory: the artifact folder.
        files: every file of the folder except manifest.json.
        plan: the plan's settings the container reads (recorded, not fingerprinted: the files carry them).
        source: the source's ``{"kind", "id", "fingerprint"}``.
        part_size: the upload part size the ETags were computed for.
        conversion: the weight conversion settings.

    Returns:
        The artifact, as :meth:`Artifact.load` would read it back.
    """
    folder = Path(directory)
    ordered = tuple(sorted(files, key=lambda f: f.path))
    # A JSON round trip makes the returned object equal to what load() reads back.
    plan = json.loads(json.dumps(plan))
    source = json.loads(json.dumps(source))
    artifact = Artifact(directory=folder, fingerprint=artifact_fingerprint(ordered), files=ordered,
                        plan=plan, source=source, part_size=part_size,
                        conversion=json.loads(json.dumps(conversion or {})))
    text = json.dumps(artifact.to_dict(), indent=2, sort_keys=True) + "\n"
    atomic_write_text(folder / MANIFEST_NAME, text)
    return artifact
