"""Stand-in for ``transformers_neuronx/dtypes.py``."""
from __future__ import annotations

import torch

_AMP_TO_TORCH = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16, "s8": torch.int8}


def to_torch_dtype(dtype: str) -> torch.dtype:
    """Mirrors transformers_neuronx/dtypes.py:18-25 at c8d6bdc: an unknown amp string is a KeyError."""
    return _AMP_TO_TORCH[dtype]
