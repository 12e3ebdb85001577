"""Stand-in for ``transformers_neuronx/compiler.py``: scribing graphs and the compiler flags.

Nothing is compiled: ``compile_py_func`` returns the stand-in scribe, which holds the
recorded instructions (the real one returns the scribe's HLO module proto).
"""
from __future__ import annotations

import os
from typing import Any

from torch_neuronx.pyhlo.scribe import HloScribe


def compile_py_func(py_func: Any) -> HloScribe:
    """Mirrors transformers_neuronx/compiler.py:48-49 at c8d6bdc, returning the scribe, not its proto."""
    return HloScribe()(py_func)


def get_compiler_flags() -> str:
    """Mirrors transformers_neuronx/compiler.py:65-81 at c8d6bdc.

    ``NEURON_CC_FLAGS`` first, then each default flag whose name the user flags do not mention.
    """
    user_flags = os.environ.get("NEURON_CC_FLAGS", "").strip()
    flags = [user_flags] if user_flags else []
    for name, value in (("--model-type", "transformer"), ("--auto-cast", "none")):
        if name not in user_flags:
            flags.append(f"{name}={value}")
    return " ".join(flags)
