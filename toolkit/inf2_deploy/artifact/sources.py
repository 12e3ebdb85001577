"""Checkpoint sources: find the weights, config and tokenizer of a GPT-J checkpoint.

A model is named the way the spec names it (see
:class:`~inf2_deploy.spec.model_ref.ModelRef`): the alias ``tiny-gptj`` (built
offline into a cache folder), the alias ``gpt-j-6b`` (EleutherAI/gpt-j-6b on the
Hugging Face Hub), a Hub id ``owner/name``, an ``s3://`` prefix, or a local
folder. A folder holds either safetensors (one file, or shards with
``model.safetensors.index.json``) or PyTorch ``.bin`` files (one, or shards with
``pytorch_model.bin.index.json``).

Hub and S3 checkpoints are copied into the cache, then converted like a local
folder: the converter seeks (safetensors offsets, ``torch.load``'s memory map of a
``.bin`` zip), and a kept copy lets a rebuild download nothing. S3 objects come down
with s3transfer (parallel ranged GETs, memory bounded by :func:`s3_transfer_config`);
a copy is current while each object's ETag is the one recorded at download.

Resolving a source checks that the checkpoint is complete (config, every shard
the index names) without reading any weights, and gives it a cheap fingerprint
from file names, sizes and modification times, so that re-packaging an unchanged
source can be skipped without hashing gigabytes.
"""
from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_text
from ..errors import AwsError, ModelSourceError
from ..spec.model_ref import ModelRef, read_model_json

__all__ = [
    "ProgressCallback",
    "Checkpoint",
    "WEIGHT_FORMATS",
    "TOKENIZER_FILES",
    "default_cache_dir",
    "open_checkpoint",
    "resolve_checkpoint",
    "hub_allow_patterns",
    "S3_OBJECTS_NAME",
    "s3_transfer_config",
]

ProgressCallback = Callable[[int, int, str], None]
"""``(done_bytes, total_bytes, label) -> None``."""

# (format, single file, index file, shard glob), in order of preference.
WEIGHT_FORMATS: tuple[tuple[str, str, str, str], ...] = (
    ("safetensors", "model.safetensors", "model.safetensors.index.json", "model-*.safetensors"),
    ("pytorch", "pytorch_model.bin", "pytorch_model.bin.index.json", "pytorch_model-*.bin"),
)
TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json",
                   "special_tokens_map.json", "added_tokens.json")
_METADATA_FILES = ("config.json", "generation_config.json")
TINY_SEED = 0
#: In the local copy of an S3 checkpoint: ``{name: [size, etag]}`` of each object as downloaded.
S3_OBJECTS_NAME = ".s3-objects.json"
_S3_CONCURRENCY = 10
_S3_IO_CHUNK = 256 * 1024
_S3_IO_QUEUE = 64


@dataclass(frozen=True)
class Checkpoint:
    """A complete checkpoint folder, checked but not read.

    Attributes:
        directory: the folder holding the files.
        weight_format: ``"safetensors"`` or ``"pytorch"``.
        weight_files: the weight files in the order their tensors are read.
        config: the parsed ``config.json``.
        source: ``{"kind", "id", "fingerprint"}``, recorded in the manifest.
    """

    directory: Path
    weight_format: str
    weight_files: tuple[Path, ...]
    config: dict[str, Any]
    source: dict[str, str]

    def optional_file(self, name: str) -> Path | None:
        """``directory/name`` when it exists."""
        path = self.directory / name
        return path if path.is_file() else None


def default_cache_dir() -> Path:
    """Where built and downloaded models are kept: ``$XDG_CACHE_HOME/inf2-deploy`` or ``~/.cache/inf2-deploy``."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "inf2-deploy"


def _missing(directory: Path, name: str, source_id: str, hint: str | None = None) -> ModelSourceError:
    return ModelSourceError(f"checkpoint {source_id} is incomplete: {name} is missing from {directory}",
                            field="model", value=source_id, hint=hint)


def _weight_files(directory: Path, source_id: str) -> tuple[str, tuple[Path, ...]] | None:
    """The first weight format present, with its files in order, or None when there are none."""
    for fmt, single, index_name, _shards in WEIGHT_FORMATS:
        index_path = directory / index_name
        if index_path.is_file():
            index = read_model_json(index_path, source_id)
            weight_map = index.get("weight_map") if isinstance(index, dict) else None
            if not isinstance(weight_map, dict) or not weight_map:
                raise ModelSourceError(f"{index_name} of {source_id} has no weight_map", field="model",
                                       value=source_id)
            names = sorted(set(weight_map.values()))
            for name in names:
                if not (directory / name).is_file():
                    raise _missing(directory, name, source_id, hint=f"{index_name} names it")
            return fmt, tuple(directory / name for name in names)
        if (directory / single).is_file():
            return fmt, (directory / single,)
    return None


def _fingerprint(files: list[Path]) -> str:
    """sha256 over each file's name, size and modification time (cheap: nothing is read)."""
    entries = []
    for path in sorted(files):
        stat = path.stat()
        entries.append((path.name, stat.st_size, stat.st_mtime_ns))
    return hashlib.sha256(json.dumps(entries).encode("utf-8")).hexdigest()


def open_checkpoint(directory: str | os.PathLike[str], *, kind: str = "local", source_id: str | None = None
                    ) -> Checkpoint:
    """Check a local checkpoint folder and describe it, without reading weights.

    Args:
        directory: the folder.
        kind: how it was obtained (``local``, ``hub``, ``s3``, ``tiny-gptj``), for the manifest.
        source_id: the name the user gave; defaults to the folder path.

    Raises:
        ModelSourceError: the folder, ``config.json``, the weights or a shard named
            by the index is missing, or a file cannot be parsed.
    """
    folder = Path(directory).expanduser()
    source_id = source_id or str(folder)
    if not folder.is_dir():
        raise ModelSourceError(f"checkpoint folder {folder} does not exist", field="model", value=source_id)
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise _missing(folder, "config.json", source_id)
    config = read_model_json(config_path, source_id)
    if not isinstance(config, dict):
        raise ModelSourceError(f"config.json of {source_id} is not a JSON object", field="model",
                               value=source_id)
    found = _weight_files(folder, source_id)
    if found is None:
        expected = " or ".join(f"{single} / {index}" for _f, single, index, _s in WEIGHT_FORMATS)
        raise _missing(folder, f"the weights ({expected})", source_id,
                       hint="only safetensors and PyTorch .bin checkpoints are supported")
    fmt, weights = found
    listed = [folder / name for name in (*_METADATA_FILES, *TOKENIZER_FILES) if (folder / name).is_file()]
    fingerprint = _fingerprint([*weights, *listed])
    return Checkpoint(directory=folder, weight_format=fmt, weight_files=weights, config=config,
                      source={"kind": kind, "id": source_id, "fingerprint": fingerprint})


def hub_allow_patterns(weight_format: str) -> list[str]:
    """What to fetch from the Hub for one weight format: its files, the config and the tokenizer."""
    for fmt, single, index_name, shards in WEIGHT_FORMATS:
        if fmt == weight_format:
            return [single, index_name, shards, *_METADATA_FILES, *TOKENIZER_FILES]
    raise ValueError(f"unknown weight format {weight_format!r}")


def _forwarding_tqdm(progress: ProgressCallback | None) -> type:
    """A tqdm class for ``snapshot_download`` that draws nothing and reports bytes to ``progress``."""
    from tqdm.auto import tqdm

    state = {"bar": None}

    class _Forward(tqdm):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            # Only the first byte bar is forwarded (huggingface_hub 1.x+ creates one for
            # the bytes received); file-count bars are not bytes.
            self._forwarded = kwargs.get("unit") == "B" and state["bar"] is None
            if self._forwarded:
                state["bar"] = self
            self._done = int(kwargs.get("initial") or 0)
            kwargs.pop("name", None)
            kwargs["disable"] = True  # the caller draws progress, not huggingface_hub
            super().__init__(*args, **kwargs)

        def update(self, n: float | None = 1) -> bool | None:
            self._done += int(n or 0)
            if self._forwarded and progress is not None:
                progress(self._done, int(self.total or 0), "download")
            return None

    return _Forward


def _hub_checkpoint(repo_id: str, *, snapshot_download: Callable[..., str] | None,
                    progress: ProgressCallback | None) -> Checkpoint:
    if snapshot_download is None:
        from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    folder: Path | None = None
    for fmt, _single, _index, _shards in WEIGHT_FORMATS:
        # Ask for one weight format at a time, preferring safetensors, so a repo that
        # has both never downloads both.
        try:
            folder = Path(snapshot_download(repo_id, allow_patterns=hub_allow_patterns(fmt),
                                            tqdm_class=_forwarding_tqdm(progress)))
        except (HfHubHTTPError, LocalEntryNotFoundError) as exc:
            raise ModelSourceError(f"cannot download {repo_id} from the Hugging Face Hub: {exc}",
                                   field="model", value=repo_id,
                                   hint="check the id, HF_TOKEN and the network, or pass a local folder") from None
        found = _weight_files(folder, repo_id)
        if found is not None and found[0] == fmt:
            break
    assert folder is not None
    return open_checkpoint(folder, kind="hub", source_id=repo_id)


def _tiny_checkpoint(model: str, cache_dir: str | os.PathLike[str] | None) -> Checkpoint:
    from .tiny import build_tiny_gptj

    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    try:
        built = build_tiny_gptj(folder / f"tiny-gptj-seed{TINY_SEED}", seed=TINY_SEED)
    except OSError as exc:
        raise ModelSourceError(f"cannot build tiny-gptj in {folder}: {exc}", field="model", value=model) from None
    return open_checkpoint(built, kind="tiny-gptj", source_id=model)


def s3_transfer_config() -> Any:
    """The s3transfer settings for checkpoint downloads.

    Memory: parts arrive in ``io_chunksize`` pieces that wait in a queue of at most
    ``max_io_queue_size`` for the writer thread, so 64 x 256 KiB = 16 MiB, plus one
    256 KiB read per request thread: about 19 MiB whatever the checkpoint's size
    (measured: the process grew by 57 MiB for a 0.5 GB object and 53 MiB for a 1.6 GB
    one, s3transfer's import and threads included; see docs/performance.md).
    """
    from s3transfer.manager import TransferConfig

    return TransferConfig(max_request_concurrency=_S3_CONCURRENCY, io_chunksize=_S3_IO_CHUNK,
                          max_io_queue_size=_S3_IO_QUEUE)


def _s3_listing(s3: Any, bucket: str, key_prefix: str) -> dict[str, tuple[int, str]]:
    """``{name: (size, etag)}`` of the objects right under ``key_prefix`` (a checkpoint is flat)."""
    from ..aws.session import aws_errors

    found = {}
    with aws_errors(f"s3:ListObjectsV2 s3://{bucket}/{key_prefix}"):
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key_prefix):
            for obj in page.get("Contents", []):
                name = obj["Key"][len(key_prefix):]
                if name and "/" not in name:
                    found[name] = (int(obj["Size"]), obj["ETag"])
    return found


def _s3_wanted(listing: dict[str, tuple[int, str]], url: str) -> dict[str, tuple[int, str]]:
    """The objects of the preferred weight format, the config and the tokenizer: as from the Hub."""
    for fmt, single, index_name, _shards in WEIGHT_FORMATS:
        if single in listing or index_name in listing:
            patterns = hub_allow_patterns(fmt)
            return {name: meta for name, meta in listing.items()
                    if any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)}
    expected = " or ".join(f"{single} / {index}" for _f, single, index, _s in WEIGHT_FORMATS)
    raise ModelSourceError(f"{url} holds no checkpoint weights ({expected})", field="model", value=url,
                           hint="point at the folder that holds config.json and the weights")


class _Counter:
    """Sums bytes from s3transfer's threads and reports them as ``download`` progress."""

    def __init__(self, total: int, progress: ProgressCallback | None) -> None:
        self._total, self._progress, self._done = total, progress, 0
        self._lock = threading.Lock()

    def add(self, amount: int) -> None:
        with self._lock:
            self._done += amount  # negative when s3transfer rewinds a part to retry it
            done = self._done
        if self._progress is not None:
            self._progress(done, self._total, "download")


class _Fetch:
    """An s3transfer subscriber for one object: its listed size and ETag spare a HeadObject, and
    s3transfer sends the ETag as ``IfMatch`` with every GET, so the copy is the version listed or the
    download fails, never a mix of two uploads. (s3transfer finds ``on_*`` methods by name.)"""

    def __init__(self, size: int, etag: str, counter: _Counter) -> None:
        self._size, self._etag, self._counter = size, etag, counter

    def on_queued(self, future: Any, **kwargs: Any) -> None:
        future.meta.provide_transfer_size(self._size)
        future.meta.provide_object_etag(self._etag)

    def on_progress(self, future: Any, bytes_transferred: int, **kwargs: Any) -> None:
        self._counter.add(bytes_transferred)


def _s3_download(s3: Any, bucket: str, key_prefix: str, wanted: dict[str, tuple[int, str]], folder: Path,
                 progress: ProgressCallback | None) -> None:
    """Bring ``folder`` up to date with ``wanted``: fetch what changed, drop what is no longer there."""
    from s3transfer.exceptions import S3DownloadFailedError
    from s3transfer.manager import TransferManager

    from ..aws.session import aws_errors

    try:
        recorded = json.loads((folder / S3_OBJECTS_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        recorded = {}
    current = {name for name, (size, etag) in wanted.items()
               if recorded.get(name) == [size, etag] and (folder / name).is_file()
               and (folder / name).stat().st_size == size}
    for stale in folder.glob("*") if folder.is_dir() else ():
        if stale.name not in wanted and stale.name != S3_OBJECTS_NAME and stale.is_file():
            stale.unlink()  # e.g. the shards of an earlier upload: the index must not find them
    missing = sorted(set(wanted) - current)
    folder.mkdir(parents=True, exist_ok=True)
    counter = _Counter(sum(wanted[name][0] for name in missing), progress)
    action = f"s3:GetObject s3://{bucket}/{key_prefix}"
    with aws_errors(action), TransferManager(s3, s3_transfer_config()) as manager:
        futures = [manager.download(bucket, key_prefix + name, str(folder / name),
                                    subscribers=[_Fetch(*wanted[name], counter)]) for name in missing]
        try:
            for future in futures:
                future.result()
        except S3DownloadFailedError as exc:  # an ETag mismatch, or retries used up
            raise AwsError(f"{action} failed: {exc}", hint="if the checkpoint was being replaced, run again "
                                                           "once the upload is complete") from exc
    atomic_write_text(folder / S3_OBJECTS_NAME,
                      json.dumps({name: list(meta) for name, meta in sorted(wanted.items())}, indent=1) + "\n")


def _s3_checkpoint(url: str, *, cache_dir: str | os.PathLike[str] | None, progress: ProgressCallback | None,
                   s3: Any) -> Checkpoint:
    from ..aws.s3 import split_s3_uri

    bucket, key = split_s3_uri(url)
    key_prefix = key.strip("/") + "/" if key.strip("/") else ""
    if any(part in (".", "..") for part in key_prefix.split("/")):
        # The copy's folder is named after the prefix, so it must stay inside the cache.
        raise ModelSourceError(f"{url} has a . or .. path segment", field="model", value=url)
    folder = (Path(cache_dir) if cache_dir is not None else default_cache_dir()) / "s3" / bucket / key_prefix
    if s3 is None:
        from ..aws.session import make_session

        s3 = make_session().client("s3")
    wanted = _s3_wanted(_s3_listing(s3, bucket, key_prefix), url)
    _s3_download(s3, bucket, key_prefix, wanted, folder, progress)
    checkpoint = open_checkpoint(folder, kind="s3", source_id=url)
    # The objects' ETags name the content, where the copy's modification times name only the download.
    fingerprint = hashlib.sha256(json.dumps(sorted(wanted.items())).encode("utf-8")).hexdigest()
    return replace(checkpoint, source={**checkpoint.source, "fingerprint": fingerprint})


def resolve_checkpoint(
    model: str,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: ProgressCallback | None = None,
    snapshot_download: Callable[..., str] | None = None,
    s3: Any = None,
) -> Checkpoint:
    """Find (building or downloading if needed) the checkpoint ``model`` names.

    Args:
        model: ``tiny-gptj``, ``gpt-j-6b``, a Hugging Face id ``owner/name``, an ``s3://`` prefix
            or a local folder.
        cache_dir: where ``tiny-gptj`` is built and S3 checkpoints are copied (under ``s3/``);
            default :func:`default_cache_dir`.
        progress: called with download progress in bytes, label ``download``.
        snapshot_download: ``huggingface_hub.snapshot_download`` or a stand-in with its signature.
        s3: the boto3 S3 client for ``s3://`` models; default one from the standard AWS resolution.

    Returns:
        The checked checkpoint.

    Raises:
        ModelSourceError: ``model`` is no model reference (see :meth:`ModelRef.parse`), or the
            checkpoint cannot be found, fetched, or is incomplete.
        AwsError: listing or downloading an ``s3://`` checkpoint failed.
    """
    ref = ModelRef.parse(model)
    if ref.kind == "tiny":
        return _tiny_checkpoint(model, cache_dir)
    if ref.kind == "s3":
        return _s3_checkpoint(ref.location, cache_dir=cache_dir, progress=progress, s3=s3)
    if ref.kind == "local":
        return open_checkpoint(ref.path, kind="local", source_id=model)
    return _hub_checkpoint(ref.location, snapshot_download=snapshot_download, progress=progress)
