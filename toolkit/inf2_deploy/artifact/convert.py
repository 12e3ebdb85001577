"""Stream a checkpoint's tensors into fp16/bf16/fp32 safetensors shards with bounded memory.

Tensors are read in slices of at most ``chunk_bytes`` and cast
(:mod:`inf2_deploy.artifact.tensors`), and appended to output shards of at most
``max_shard_bytes``. Peak memory is a few chunks, whatever the model size: the
read and cast buffers are a small reused ring. While the next slice is read and
cast, one background thread writes and computes the sha256 and another the S3
part md5s, so no output file is read twice.

The output is a pure function of the input tensors and the settings, so the same
input gives byte-identical shards.
"""
from __future__ import annotations

import json
import os
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from inf2_serving.contract import DTYPES

from ..errors import ModelSourceError
from .manifest import UPLOAD_PART_SIZE, ArtifactFile, FileDigest
from .sources import Checkpoint, ProgressCallback
from .tensors import TARGET_DTYPES, BufferRing, SliceReader, TensorInfo, cast_array, read_tensor_infos

__all__ = [
    "DEFAULT_MAX_SHARD_BYTES",
    "DEFAULT_CHUNK_BYTES",
    "SAFE_INDEX_NAME",
    "TORCH_DTYPE_NAMES",
    "check_tensors",
    "plan_shards",
    "shard_name",
    "convert_weights",
]

#: Shard size for every artifact, packaged alone or while uploading: small enough that
#: the last shard, the part still to send once conversion ends, is a small share of a
#: deploy's upload. GPT-J-6B in fp16 gets about 50 shards (its 413 MB lm_head one of
#: its own); transformers and transformers-neuronx load them through the index.
DEFAULT_MAX_SHARD_BYTES = 256 * 1024**2
DEFAULT_CHUNK_BYTES = 8 * 1024**2
# Chunks queued for the writer thread at most; reading and casting run this far ahead.
_WRITE_DEPTH = 2
# Read and cast buffers each: more than the writer holds, so none is refilled while queued.
_RING_SIZE = _WRITE_DEPTH + 2
SAFE_INDEX_NAME = "model.safetensors.index.json"
SAFE_SINGLE_NAME = "model.safetensors"
#: ``torch_dtype`` written to config.json for each target
TORCH_DTYPE_NAMES = {name: dtype.torch_name for name, dtype in DTYPES.items()}


# ---------------------------------------------------------------- checking


def check_tensors(infos: list[TensorInfo], expected: dict[str, tuple[int, ...]], source_id: str) -> None:
    """Compare tensor names and shapes with what the model config implies.

    Raises:
        ModelSourceError: a tensor is missing, unexpected, or has the wrong shape.
    """
    found = {info.name: info.shape for info in infos}
    problems = [f"{name} is missing" for name in expected if name not in found]
    problems += [f"{name} is unexpected" for name in found if name not in expected]
    problems += [f"{name} has shape {list(found[name])}, config.json implies {list(shape)}"
                 for name, shape in expected.items() if name in found and found[name] != shape]
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise ModelSourceError(f"the weights of {source_id} do not match its config.json: "
                               + "; ".join(problems[:3]) + more, field="model", value=source_id)


# ---------------------------------------------------------------- writing


def plan_shards(infos: list[TensorInfo], target: str, max_shard_bytes: int) -> list[list[TensorInfo]]:
    """Group tensors, in order, into shards of at most ``max_shard_bytes`` of data.

    A tensor larger than the limit gets a shard of its own.
    """
    shards: list[list[TensorInfo]] = [[]]
    used = 0
    for info in infos:
        size = info.out_nbytes(target)
        if shards[-1] and used + size > max_shard_bytes:
            shards.append([])
            used = 0
        shards[-1].append(info)
        used += size
    return shards if shards[0] else []


def shard_name(index: int, count: int) -> str:
    """Hugging Face's shard file name; a single shard is ``model.safetensors``."""
    return SAFE_SINGLE_NAME if count == 1 else f"model-{index + 1:05d}-of-{count:05d}.safetensors"


def _header_bytes(shard: list[TensorInfo], target: str) -> bytes:
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for info in shard:
        size = info.out_nbytes(target)
        header[info.name] = {"dtype": info.out_dtype(target), "shape": list(info.shape),
                             "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    # safetensors pads the header with spaces so the data starts 8-byte aligned.
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text


class _ShardWriter:
    """Writes shards on one background thread and md5s their S3 parts on another.

    This is a streaming safetensors writer, written by hand because
    ``safetensors.numpy.save_file`` needs every tensor of a file in memory at once.
    The file layout is the format's: an 8-byte little-endian header length, the
    JSON header (dtype, shape, data_offsets per tensor), then the raw data.
    The writer thread also computes the sha256; at most ``depth`` chunks are queued.
    """

    def __init__(self, depth: int = _WRITE_DEPTH) -> None:
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shard-writer")
        self._hasher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shard-md5")
        self._pending: deque[Future[Any]] = deque()
        self._depth = depth
        self._stream: BinaryIO | None = None
        self._digest: FileDigest | None = None

    def open(self, path: Path, part_size: int) -> None:
        self._stream = open(path, "xb")  # noqa: SIM115 - closed by close() or shutdown()
        self._digest = FileDigest(part_size)

    def _write(self, stream: BinaryIO, digest: FileDigest, view: memoryview) -> None:
        stream.write(view)
        digest.update_sha256(view)

    def write(self, data: bytes | np.ndarray) -> None:
        assert self._stream is not None and self._digest is not None
        # A byte view, since the buffer protocol does not know ml_dtypes' bfloat16.
        view = memoryview(data.reshape(-1).view(np.uint8) if isinstance(data, np.ndarray) else data)
        self._pending.append(self._writer.submit(self._write, self._stream, self._digest, view))
        self._pending.append(self._hasher.submit(self._digest.update_parts, view))
        while len(self._pending) > 2 * self._depth:  # two futures per chunk
            self._pending.popleft().result()

    def close(self, relative: str, expected_size: int) -> ArtifactFile:
        """Finish the open file and return its size and hashes."""
        assert self._stream is not None and self._digest is not None
        self.finish()
        self._stream.close()
        self._stream = None
        if self._digest.size != expected_size:
            raise RuntimeError(f"{relative}: wrote {self._digest.size} bytes, header promised {expected_size}")
        return self._digest.result(relative)

    def finish(self) -> None:
        """Wait for every queued chunk; re-raise the first failure."""
        while self._pending:
            self._pending.popleft().result()

    def shutdown(self) -> None:
        """Stop the threads, dropping queued work (after a failure), and close any open file."""
        for future in self._pending:
            future.cancel()
        self._writer.shutdown(wait=True)
        self._hasher.shutdown(wait=True)
        if self._stream is not None:
            self._stream.close()


def _write_index(out_dir: Path, shards: list[list[TensorInfo]], target: str, part_size: int) -> ArtifactFile:
    weight_map = {info.name: shard_name(i, len(shards)) for i, shard in enumerate(shards) for info in shard}
    total = sum(info.out_nbytes(target) for shard in shards for info in shard)
    text = json.dumps({"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))},
                      indent=2, sort_keys=True) + "\n"
    data = text.encode("utf-8")
    (out_dir / SAFE_INDEX_NAME).write_bytes(data)
    return FileDigest.of_bytes(data, part_size).result(SAFE_INDEX_NAME)


class _InputProgress:
    """Counts the input bytes converted and reports them, labelled ``weights``."""

    def __init__(self, total: int, progress: ProgressCallback | None) -> None:
        self._total, self._progress, self._done = total, progress, 0

    def add(self, nbytes: int) -> None:
        self._done += nbytes
        if self._progress is not None:
            self._progress(self._done, self._total, "weights")


def _copy_tensors(reader: SliceReader, writer: _ShardWriter, ring: BufferRing, shard: list[TensorInfo],
                  target: str, progress: _InputProgress) -> None:
    """Queue every tensor of ``shard`` for writing, slice by slice, floats cast to ``target``."""
    for info in shard:
        out_dtype = info.out_numpy_dtype(target)
        for piece in reader.slices(info):
            if piece.dtype == out_dtype:
                writer.write(piece)
            else:
                writer.write(cast_array(piece, target, out=ring.array(out_dtype, piece.size)))
            progress.add(piece.nbytes)


def _write_shards(checkpoint: Checkpoint, folder: Path, shards: list[list[TensorInfo]], target: str, *,
                  chunk_bytes: int, part_size: int, progress: _InputProgress,
                  on_file: Callable[[ArtifactFile, Path], None] | None) -> list[ArtifactFile]:
    """Write each shard file, reporting each to ``on_file`` once it is complete."""
    reader = SliceReader(checkpoint.weight_format, chunk_bytes, _RING_SIZE)
    writer = _ShardWriter()
    ring = BufferRing(_RING_SIZE)
    files: list[ArtifactFile] = []
    try:
        for index, shard in enumerate(shards):
            name = shard_name(index, len(shards))
            header = _header_bytes(shard, target)
            writer.open(folder / name, part_size)
            writer.write(header)
            _copy_tensors(reader, writer, ring, shard, target, progress)
            files.append(writer.close(name, len(header) + sum(i.out_nbytes(target) for i in shard)))
            if on_file is not None:
                on_file(files[-1], folder / name)
    finally:
        reader.close()
        writer.shutdown()
    return files


def convert_weights(
    checkpoint: Checkpoint,
    out_dir: str | os.PathLike[str],
    *,
    dtype: str,
    expected_shapes: dict[str, tuple[int, ...]] | None = None,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    part_size: int = UPLOAD_PART_SIZE,
    progress: ProgressCallback | None = None,
    on_file: Callable[[ArtifactFile, Path], None] | None = None,
) -> list[ArtifactFile]:
    """Write ``checkpoint``'s weights into ``out_dir`` as safetensors shards of ``dtype``.

    Args:
        checkpoint: the checked source.
        out_dir: an existing folder; shard files must not exist yet.
        dtype: ``fp16``, ``bf16`` or ``fp32``; floating tensors are cast to it.
        expected_shapes: name -> shape the tensors must match exactly (after the
            ignored attention buffers are dropped); None skips the check.
        max_shard_bytes: the data bytes per output shard.
        chunk_bytes: the read size; peak memory is a few of these.
        part_size: the upload part size the ETags are computed for.
        progress: called with input bytes done, the total, and the label ``weights``.
        on_file: called with each output file and its path once the file is complete
            (``pipeline`` uploads a shard while the next one is converted).

    Returns:
        The written files (shards, and the index when there is more than one shard).

    Raises:
        ModelSourceError: the input is corrupt or does not match ``expected_shapes``.
        ValueError: ``dtype`` or a size is invalid.
    """
    if dtype not in TARGET_DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(TARGET_DTYPES)}, got {dtype!r}")
    if max_shard_bytes <= 0 or chunk_bytes <= 0:
        raise ValueError("max_shard_bytes and chunk_bytes must be positive")
    folder = Path(out_dir)
    infos = read_tensor_infos(checkpoint)
    if not infos:
        raise ModelSourceError(f"{checkpoint.source['id']} has no tensors", field="model",
                               value=checkpoint.source["id"])
    if expected_shapes is not None:
        check_tensors(infos, expected_shapes, checkpoint.source["id"])
    shards = plan_shards(infos, dtype, max_shard_bytes)
    files = _write_shards(checkpoint, folder, shards, dtype, chunk_bytes=chunk_bytes, part_size=part_size,
                          progress=_InputProgress(sum(info.in_nbytes for info in infos), progress),
                          on_file=on_file)
    if len(shards) > 1:
        files.append(_write_index(folder, shards, dtype, part_size))
        if on_file is not None:
            on_file(files[-1], folder / SAFE_INDEX_NAME)
    return files
