"""A checkpoint's tensors: where each one is, read in slices with bounded memory, and cast.

Tensors are described from file headers alone. They are then read in slices of
at most ``chunk_bytes`` (safetensors input with ``readinto`` at known offsets,
never loaded whole nor memory-mapped, so the page cache does not count against
this process) into a small ring of reused buffers, and cast with numpy (and
ml_dtypes for bfloat16).

PyTorch ``.bin`` input needs torch and is loaded one shard at a time with
``torch.load(mmap=True, weights_only=True)``; there, memory is bounded by the
largest input shard's touched pages.
"""
from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import ml_dtypes
import numpy as np
from inf2_serving.contract import DTYPES

from ..errors import ModelSourceError
from .sources import Checkpoint

__all__ = ["TARGET_DTYPES", "BufferRing", "SliceReader", "TensorInfo", "cast_array", "read_tensor_infos"]

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

    def out_numpy_dtype(self, target: str) -> np.dtype:
        """The numpy dtype of the output (see :meth:`out_dtype`)."""
        return _NUMPY_DTYPES[self.out_dtype(target)]

    def out_nbytes(self, target: str) -> int:
        return self.numel * self.out_numpy_dtype(target).itemsize

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


class BufferRing:
    """Reusable buffers handed out in turn, so the steady state allocates (and page-faults) nothing.

    A buffer comes round again after ``size`` hand-outs: a consumer that holds at
    most ``size - 1`` of them (e.g. chunks queued for a writer thread) never sees one
    refilled while it still holds it.
    """

    def __init__(self, size: int) -> None:
        self._buffers = [bytearray() for _ in range(size)]
        self._next = 0

    def array(self, dtype: np.dtype, count: int) -> np.ndarray:
        """The next buffer, as ``count`` elements of ``dtype`` (its content is stale)."""
        index = self._next
        self._next = (index + 1) % len(self._buffers)
        nbytes = count * dtype.itemsize
        if len(self._buffers[index]) < nbytes:
            self._buffers[index] = bytearray(nbytes)
        return np.frombuffer(self._buffers[index], dtype=dtype, count=count)


class SliceReader:
    """Reads tensors in slices of at most ``chunk_bytes``, keeping one input file open at a time.

    Args:
        weight_format: ``safetensors`` or ``pytorch``.
        chunk_bytes: the largest slice.
        ring_size: the read buffers; a slice is overwritten ``ring_size`` slices later.
    """

    def __init__(self, weight_format: str, chunk_bytes: int, ring_size: int) -> None:
        self._format = weight_format
        self._chunk_bytes = chunk_bytes
        self._ring = BufferRing(ring_size)
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
        """Close the open input file, if any."""
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
