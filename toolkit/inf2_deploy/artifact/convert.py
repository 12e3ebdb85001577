"""Stream a checkpoint's tensors into fp16/bf16/fp32 safetensors shards with bounded memory.

Tensors are read in slices of at most ``chunk_bytes`` (safetensors input is read
with ``readinto`` at known offsets, never loaded whole nor memory-mapped, so the
page cache does not count against this process), cast with numpy (and
ml_dtypes for bfloat16), and appended to output shards of at most
``max_shard_bytes``. Peak memory is a few chunks, whatever the model size: the
read and cast buffers are a small reused ring. While the next slice is read and
cast, one background thread writes and computes the sha256 and another the S3
part md5s, so no output file is read twice.

PyTorch ``.bin`` input needs torch and is loaded one shard at a time with
``torch.load(mmap=True, weights_only=True)``; there, memory is bounded by the
largest input shard's touched pages.

The output is a pure function of the input tensors and the settings, so the same
input gives byte-identical shards.
"""
from __future__ import annotations

import json
import math
import os
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import ml_dtypes
import numpy as np
from inf2_serving.contract import DTYPES

from ..errors import ModelSourceError
from .manifest import UPLOAD_PART_SIZE, ArtifactFile, FileDigest
from .sources import Checkpoint, ProgressCallback

__all__ = [
    "DEFAULT_MAX_SHARD_BYTES",
    "DEFAULT_CHUNK_BYTES",
    "TARGET_DTYPES",
    "TensorInfo",
    "cast_array",
    "read_tensor_infos",
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
SAFE_INDEX_NAME = "model.safetensors.index.json"
SAFE_SINGLE_NAME = "model.safetensors"
# A safetensors header larger than this is corrupt (the format caps it at 100 MB).
_MAX_HEADER_BYTES = 100 * 1024**2
# Non-persistent attention buffers that old GPT-J checkpoints saved; every loader rebuilds them.
_IGNORED_SUFFIXES = (".attn.bias", ".attn.masked_bias")

# safetensors dtype code <-> little-endian numpy dtype
_NUMPY_DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"), "I8": np.dtype("i1"),
    "U8": np.dtype("u1"), "BOOL": np.dtype("?"),
}
_FLOAT_CODES = {"F64", "F32", "F16", "BF16"}
TARGET_DTYPES = {name: dtype.safetensors_code for name, dtype in DTYPES.items()}
#: ``torch_dtype`` written to config.json for each target
TORCH_DTYPE_NAMES = {name: dtype.torch_name for name, dtype in DTYPES.items()}


@dataclass(frozen=True)
class TensorInfo:
    """One input tensor: where it is and what it becomes."""

    name: str
    dtype: str  # safetensors code of the input
    shape: tuple[int, ...]
    file: Path
    #: byte range in the file's data section (safetensors input only)
    begin: int = 0
    end: int = 0

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    def out_dtype(self, target: str) -> str:
        """The output code: floats become ``target``; other tensors keep their type."""
        return TARGET_DTYPES[target] if self.dtype in _FLOAT_CODES else self.dtype

    def out_nbytes(self, target: str) -> int:
        return self.numel * _NUMPY_DTYPES[self.out_dtype(target)].itemsize

    @property
    def in_nbytes(self) -> int:
        return self.numel * _NUMPY_DTYPES[self.dtype].itemsize


def cast_array(array: np.ndarray, target: str, *, out: np.ndarray | None = None) -> np.ndarray:
    """Cast a floating array to ``target`` (fp16, bf16 or fp32) with round-to-nearest-even.

    Non-floating arrays (integers, bools) and arrays already of ``target`` are
    returned unchanged.

    Args:
        out: a buffer of the target dtype and the same size to cast into, instead
            of allocating one.
    """
    if array.dtype not in (_NUMPY_DTYPES[code] for code in _FLOAT_CODES):
        return array
    dtype = _NUMPY_DTYPES[TARGET_DTYPES[target]]
    if array.dtype == dtype:
        return array
    # Values beyond fp16's range become +-inf, exactly as torch's cast does.
    with np.errstate(over="ignore"):
        if out is None:
            return array.astype(dtype)
        np.copyto(out, array.reshape(out.shape), casting="unsafe")
        return out


# ---------------------------------------------------------------- reading


def _corrupt(path: Path, why: str) -> ModelSourceError:
    return ModelSourceError(f"{path.name} is corrupt or truncated: {why}", field="model", value=str(path),
                            hint="re-download or re-save the checkpoint")


def _safetensors_header(path: Path) -> tuple[int, dict[str, Any]]:
    """The data section's start and the parsed header of a safetensors file."""
    size = path.stat().st_size
    with open(path, "rb") as stream:
        head = stream.read(8)
        if len(head) < 8:
            raise _corrupt(path, f"{size} bytes is too short for a header")
        length = int.from_bytes(head, "little")
        if length > min(_MAX_HEADER_BYTES, size - 8):
            raise _corrupt(path, f"header length {length} does not fit in {size} bytes")
        try:
            header = json.loads(stream.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise _corrupt(path, f"header is not JSON ({exc})") from None
    if not isinstance(header, dict):
        raise _corrupt(path, "header is not a JSON object")
    return 8 + length, header


def _safetensors_infos(path: Path) -> list[TensorInfo]:
    data_start, header = _safetensors_header(path)
    data_size = path.stat().st_size - data_start
    infos = []
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (begin, end) = entry["dtype"], tuple(int(d) for d in entry["shape"]), entry["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise _corrupt(path, f"bad header entry for {name}") from None
        if dtype not in _NUMPY_DTYPES:
            raise ModelSourceError(f"{path.name}: tensor {name} has dtype {dtype}, which is not supported",
                                   field="model", value=str(path))
        info = TensorInfo(name, dtype, shape, path, data_start + begin, data_start + end)
        if end - begin != info.in_nbytes or begin < 0:
            raise _corrupt(path, f"{name} spans {end - begin} bytes, its shape needs {info.in_nbytes}")
        if end > data_size:
            raise _corrupt(path, f"{name} ends at byte {end} of the data, which has {data_size}")
        infos.append(info)
    # File order keeps reads sequential.
    return sorted(infos, key=lambda i: i.begin)


def _torch_dtype_code(dtype: Any) -> str:
    import torch

    codes = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
             torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
             torch.uint8: "U8", torch.bool: "BOOL"}
    return codes[dtype] if dtype in codes else str(dtype)


def _load_torch_shard(path: Path) -> dict[str, Any]:
    import pickle

    import torch

    try:
        state = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, EOFError, OSError) as exc:
        raise _corrupt(path, str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None
    if not isinstance(state, dict):
        raise _corrupt(path, "it does not hold a state dict")
    return state


def _torch_infos(path: Path) -> list[TensorInfo]:
    # mmap=True maps the storages without reading them: this pass only sees shapes.
    infos = []
    for name, tensor in _load_torch_shard(path).items():
        code = _torch_dtype_code(tensor.dtype)
        if code not in _NUMPY_DTYPES:
            raise ModelSourceError(f"{path.name}: tensor {name} has dtype {code}, which is not supported",
                                   field="model", value=str(path))
        infos.append(TensorInfo(name, code, tuple(tensor.shape), path))
    return infos


def read_tensor_infos(checkpoint: Checkpoint) -> list[TensorInfo]:
    """Every tensor of ``checkpoint`` in read order, from headers only.

    Raises:
        ModelSourceError: a file is corrupt, a dtype is unsupported, or a name repeats.
    """
    reader = _safetensors_infos if checkpoint.weight_format == "safetensors" else _torch_infos
    infos: list[TensorInfo] = []
    seen: dict[str, Path] = {}
    for path in checkpoint.weight_files:
        for info in reader(path):
            if info.name.endswith(_IGNORED_SUFFIXES):
                continue
            if info.name in seen:
                raise ModelSourceError(f"tensor {info.name} is in both {seen[info.name].name} and {path.name}",
                                       field="model", value=str(path))
            seen[info.name] = path
            infos.append(info)
    return infos


class _BufferRing:
    """Reusable buffers handed out in turn, so the steady state allocates (and page-faults) nothing.

    A buffer comes round again after ``size`` hand-outs. The writer keeps at most
    ``_WRITE_DEPTH`` chunks queued, so with ``size > _WRITE_DEPTH`` a buffer is never
    refilled while a chunk in it still waits to be written.
    """

    def __init__(self, size: int = _WRITE_DEPTH + 2) -> None:
        self._buffers = [bytearray() for _ in range(size)]
        self._next = 0

    def array(self, dtype: np.dtype, count: int) -> np.ndarray:
        index = self._next
        self._next = (index + 1) % len(self._buffers)
        nbytes = count * dtype.itemsize
        if len(self._buffers[index]) < nbytes:
            self._buffers[index] = bytearray(nbytes)
        return np.frombuffer(self._buffers[index], dtype=dtype, count=count)


class _SliceReader:
    """Reads tensors in slices of at most ``chunk_bytes``, keeping one input file open at a time."""

    def __init__(self, weight_format: str, chunk_bytes: int) -> None:
        self._format = weight_format
        self._chunk_bytes = chunk_bytes
        self._ring = _BufferRing()
        self._file: Path | None = None
        self._stream: BinaryIO | None = None
        self._state: dict[str, Any] | None = None

    def _switch(self, path: Path) -> None:
        if path == self._file:
            return
        self.close()
        self._file = path
        if self._format == "safetensors":
            self._stream = open(path, "rb", buffering=0)  # noqa: SIM115 - closed by close()
        else:
            self._state = _load_torch_shard(path)  # one .bin shard at a time

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
        self._file, self._stream, self._state = None, None, None

    def slices(self, info: TensorInfo) -> Iterator[np.ndarray]:
        """The tensor's elements, flattened, in slices."""
        self._switch(info.file)
        dtype = _NUMPY_DTYPES[info.dtype]
        step = max(self._chunk_bytes // dtype.itemsize, 1)
        if self._stream is not None:
            yield from self._file_slices(info, dtype, step)
        else:
            yield from self._torch_slices(info, dtype, step)

    def _file_slices(self, info: TensorInfo, dtype: np.dtype, step: int) -> Iterator[np.ndarray]:
        assert self._stream is not None
        self._stream.seek(info.begin)
        for start in range(0, info.numel, step):
            piece = self._ring.array(dtype, min(step, info.numel - start))
            view = memoryview(piece).cast("B")
            got = 0
            while got < len(view):
                more = self._stream.readinto(view[got:])
                if not more:
                    raise _corrupt(info.file, f"it ends inside tensor {info.name}")
                got += more
            yield piece

    def _torch_slices(self, info: TensorInfo, dtype: np.dtype, step: int) -> Iterator[np.ndarray]:
        import torch

        assert self._state is not None
        flat = self._state[info.name].detach().reshape(-1)
        for start in range(0, info.numel, step):
            piece = flat[start:start + step].contiguous()
            if piece.dtype == torch.bfloat16:
                # numpy has no bfloat16; reinterpret the bits as ml_dtypes.bfloat16.
                yield piece.view(torch.int16).numpy().view(dtype)
            else:
                yield piece.numpy()


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


def _copy_tensors(reader: _SliceReader, writer: _ShardWriter, ring: _BufferRing, shard: list[TensorInfo],
                  target: str, progress: _InputProgress) -> None:
    """Queue every tensor of ``shard`` for writing, slice by slice, floats cast to ``target``."""
    for info in shard:
        out_dtype = _NUMPY_DTYPES[info.out_dtype(target)]
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
    reader = _SliceReader(checkpoint.weight_format, chunk_bytes)
    writer = _ShardWriter()
    ring = _BufferRing()
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
