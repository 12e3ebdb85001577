"""The artifacts in S3 as a store: which prefixes an endpoint deployed, where content already lies,
and which SageMaker models still read a prefix.

- **The index.** A deploy records its artifact's prefix in ``<prefix_root>/index/<endpoint>.json``
  before sending a byte, so ``delete --purge-artifacts`` finds every prefix the endpoint ever
  deployed, also those of earlier deploys whose models are long gone (:class:`ArtifactIndex`).
- **Stored content.** The manifests of the complete artifacts under a prefix root name each
  file's sha256, so a file already stored under another prefix is copied inside S3 instead of
  uploaded again (:class:`StoredContent`).
- **Users.** Two endpoints deployed with the same settings share one prefix. Before a prefix
  is deleted, every model of the account is described, and any model whose
  ``ModelDataSource``, ``ModelDataUrl`` or ``AdditionalModelDataSources`` lies in the prefix
  (or contains it) keeps it (:func:`artifact_users`, :func:`purge_unused`).
"""
from __future__ import annotations

import json
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from ..artifact.manifest import MANIFEST_NAME
from .resources import describe_model
from .s3 import delete_prefix, split_s3_uri
from .session import aws_errors, is_not_found

__all__ = [
    "INDEX_FOLDER",
    "ArtifactIndex",
    "Purge",
    "StoredContent",
    "artifact_users",
    "model_data_uris",
    "purge_unused",
]

#: The folder under a prefix root that holds one index object per endpoint.
INDEX_FOLDER = "index"


def _prefix_uri(bucket: str, key_prefix: str) -> str:
    return f"s3://{bucket}/{key_prefix.strip('/')}/"


@dataclass(frozen=True)
class ArtifactIndex:
    """``s3://bucket/<prefix_root>/index/<endpoint>.json``: every artifact prefix the endpoint deployed.

    Only prefixes directly under the same prefix root are recorded or read back, so a
    damaged or hand-edited index cannot point a purge anywhere else.
    """

    s3: Any = field(repr=False, compare=False)
    bucket: str
    prefix_root: str
    endpoint_name: str

    @classmethod
    def beside(cls, s3: Any, artifact_uri: str, endpoint_name: str) -> ArtifactIndex:
        """The index of ``endpoint_name`` under the prefix root that holds ``artifact_uri``."""
        bucket, key = split_s3_uri(artifact_uri)
        return cls(s3, bucket, key.strip("/").rpartition("/")[0], endpoint_name)

    @property
    def _root(self) -> str:
        """The prefix root with its trailing slash; empty for the bucket's top."""
        root = self.prefix_root.strip("/")
        return f"{root}/" if root else ""

    @property
    def key(self) -> str:
        return f"{self._root}{INDEX_FOLDER}/{self.endpoint_name}.json"

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    def _is_artifact(self, uri: str) -> bool:
        """Is ``uri`` an artifact prefix directly under this index's prefix root?"""
        head = f"s3://{self.bucket}/{self._root}"
        name = uri.removeprefix(head).removesuffix("/")
        return (uri.startswith(head) and uri.endswith("/") and name not in ("", ".", "..", INDEX_FOLDER)
                and "/" not in name)

    def read(self) -> list[str]:
        """The recorded prefixes (``s3://bucket/root/key/``), oldest first; none when there is no index.

        Raises:
            AwsError: the read failed for another reason than a missing object.
        """
        with aws_errors(f"s3:GetObject {self.uri}"):
            try:
                body = self.s3.get_object(Bucket=self.bucket, Key=self.key)["Body"].read()
            except ClientError as exc:
                if is_not_found(exc):
                    return []
                raise
        try:
            recorded = json.loads(body).get("artifacts", [])
        except (ValueError, AttributeError):
            return []  # not ours to trust: nothing is purged on its word
        return [uri for uri in recorded if isinstance(uri, str) and self._is_artifact(uri)]

    def record(self, artifact_uri: str, *, sse: dict[str, str]) -> bool:
        """Add ``artifact_uri`` (a prefix under this root); False when it was already there.

        Args:
            artifact_uri: ``s3://bucket/<prefix_root>/<key>/``.
            sse: the encryption arguments of the artifact's own objects.

        Raises:
            ValueError: ``artifact_uri`` is not directly under this index's prefix root.
            AwsError: the read or the write failed.
        """
        uri = artifact_uri.rstrip("/") + "/"
        if not self._is_artifact(uri):
            raise ValueError(f"{artifact_uri} is not an artifact prefix under s3://{self.bucket}/{self._root}")
        recorded = self.read()
        if uri in recorded:
            return False
        # Read-modify-write: concurrent deploys of one endpoint are refused later (EndpointBusy), and a
        # lost record only leaves a prefix behind for the next purge's usage check, never deletes one.
        body = json.dumps({"endpoint": self.endpoint_name, "artifacts": [*recorded, uri]}, indent=2) + "\n"
        with aws_errors(f"s3:PutObject {self.uri}"):
            self.s3.put_object(Bucket=self.bucket, Key=self.key, Body=body.encode("utf-8"),
                               ContentType="application/json", **sse)
        return True

    def delete(self) -> None:
        """Remove the index object (a missing one is no error).

        Raises:
            AwsError: the delete failed.
        """
        with aws_errors(f"s3:DeleteObject {self.uri}"):
            self.s3.delete_object(Bucket=self.bucket, Key=self.key)


class StoredContent:
    """Where each file content (by sha256) already lies under a prefix root.

    Read once, on the first :meth:`find`, from the manifests of the complete artifacts
    (those with a manifest.json) directly under the root: one listing plus one small
    GetObject per artifact. A source found here is a candidate only: the copy is checked
    like an upload, and a failed or wrong copy is uploaded instead.

    Args:
        s3: a boto3 S3 client.
        bucket: the bucket.
        prefix_root: the key prefix the artifacts' own prefixes are under.
    """

    def __init__(self, s3: Any, bucket: str, prefix_root: str) -> None:
        self._s3 = s3
        self.bucket = bucket
        self.prefix_root = prefix_root.strip("/")
        self._keys: dict[tuple[str, int], list[str]] | None = None

    def find(self, sha256: str, size: int, *, destination: str) -> str | None:
        """The key of an object holding this content, preferring one other than ``destination``
        (a copy onto itself only re-encrypts); None when there is none.

        Raises:
            AwsError: listing or reading a manifest failed.
        """
        if self._keys is None:
            self._keys = self._load()
        keys = self._keys.get((sha256, size), [])
        others = [key for key in keys if key != destination]
        return (others or keys or [None])[0]

    def _load(self) -> dict[tuple[str, int], list[str]]:
        root = f"{self.prefix_root}/"
        found: dict[tuple[str, int], list[str]] = {}
        with aws_errors(f"s3:ListObjectsV2 s3://{self.bucket}/{root}"):
            pages = self._s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=root,
                                                                        Delimiter="/")
            prefixes = [item["Prefix"] for page in pages for item in page.get("CommonPrefixes", [])]
        for prefix in prefixes:
            if prefix != f"{root}{INDEX_FOLDER}/":
                for path, sha256, size in self._manifest_files(prefix):
                    found.setdefault((sha256, size), []).append(prefix + path)
        return found

    def _manifest_files(self, prefix: str) -> list[tuple[str, str, int]]:
        """``(path, sha256, size)`` of each file the manifest under ``prefix`` lists; none without one."""
        with aws_errors(f"s3:GetObject s3://{self.bucket}/{prefix}{MANIFEST_NAME}"):
            try:
                body = self._s3.get_object(Bucket=self.bucket, Key=prefix + MANIFEST_NAME)["Body"].read()
            except ClientError as exc:
                if is_not_found(exc):
                    return []  # still being uploaded, or not an artifact
                raise
        try:
            return [(str(f["path"]), str(f["sha256"]), int(f["size"])) for f in json.loads(body)["files"]]
        except (ValueError, KeyError, TypeError):
            return []


def model_data_uris(described: dict[str, Any]) -> list[str]:
    """Every S3 location a DescribeModel answer reads model data from: each container's
    ``ModelDataUrl``, ``ModelDataSource.S3DataSource.S3Uri`` and ``AdditionalModelDataSources``."""
    containers = [described.get("PrimaryContainer") or {}, *(described.get("Containers") or [])]
    uris = []
    for container in containers:
        sources = [container.get("ModelDataSource") or {}, *(container.get("AdditionalModelDataSources") or [])]
        uris += [source["S3DataSource"]["S3Uri"] for source in sources if source.get("S3DataSource", {}).get("S3Uri")]
        if container.get("ModelDataUrl"):
            uris.append(container["ModelDataUrl"])
    return uris


def _overlaps(prefix_uri: str, used_uri: str) -> bool:
    """Does a model reading ``used_uri`` read anything under ``prefix_uri``? S3 prefixes match as
    strings, so a model reading a parent of the prefix reads it too."""
    if not used_uri.startswith("s3://"):
        return False
    bucket, key = split_s3_uri(prefix_uri)
    used_bucket, used_key = split_s3_uri(used_uri)
    return bucket == used_bucket and (used_key.startswith(key) or key.startswith(used_key))


def artifact_users(sagemaker: Any, uris: Collection[str], *, ignore: Collection[str] = ()) -> dict[str, list[str]]:
    """For each of ``uris``, the names of the models (other than ``ignore``) that read from it.

    Every model of the account (ListModels, paginated) is described: the list call does not
    say where a model's data lies. Models deleted meanwhile are skipped.

    Raises:
        AwsError: a call failed.
    """
    users: dict[str, list[str]] = {uri: [] for uri in uris}
    if not users:
        return users
    with aws_errors("sagemaker:ListModels"):
        names = [model["ModelName"] for page in sagemaker.get_paginator("list_models").paginate()
                 for model in page.get("Models", [])]
    for name in names:
        described = None if name in ignore else describe_model(sagemaker, name)
        if described is None:
            continue
        used = model_data_uris(described)
        for uri, models in users.items():
            if any(_overlaps(uri, each) for each in used):
                models.append(name)
    return users


@dataclass(frozen=True)
class Purge:
    """What :func:`purge_unused` deleted (or, in a dry run, would delete) and what it kept."""

    #: ``"N S3 objects under s3://..."`` for each prefix that held objects
    deleted: list[str]
    #: each prefix a live model still reads, with the names of those models
    kept: dict[str, list[str]]


def purge_unused(s3: Any, sagemaker: Any, uris: Iterable[str], *, ignore_models: Collection[str] = (),
                    dry_run: bool = False) -> Purge:
    """Delete the artifact prefixes ``uris`` that no model reads.

    Args:
        s3: a boto3 S3 client.
        sagemaker: a boto3 SageMaker client.
        uris: ``s3://bucket/prefix/`` of each candidate.
        ignore_models: models that do not count as users (the ones being deleted with them).
        dry_run: count what would be deleted, delete nothing.

    Raises:
        AwsError: a call failed.
    """
    candidates = list(dict.fromkeys(_prefix_uri(*split_s3_uri(uri)) for uri in uris))
    users = artifact_users(sagemaker, candidates, ignore=ignore_models)
    deleted, kept = [], {}
    for uri in candidates:
        if users[uri]:
            kept[uri] = users[uri]
            continue
        bucket, key = split_s3_uri(uri)
        count = delete_prefix(s3, bucket, key, dry_run=dry_run)
        if count:
            deleted.append(f"{count} S3 objects under {uri}")
    return Purge(deleted, kept)
