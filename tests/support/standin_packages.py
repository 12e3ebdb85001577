"""Stand-ins for the packages that exist only in the container: DJL's ``djl_python``, and Neuron's
``torch_neuronx`` and ``transformers_neuronx``, with the real class and function names.

They live in tests/support/standins/ and are imported by their own names, with that folder on
``sys.path``: :func:`on_path`.
"""
from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).parent / "standins"
PACKAGES = ("djl_python", "torch_neuronx", "transformers_neuronx")


def forget() -> None:
    """Drop every stand-in module from ``sys.modules``, so that the next import is a fresh one."""
    for name in list(sys.modules):
        if name.split(".")[0] in PACKAGES:
            del sys.modules[name]


@contextlib.contextmanager
def on_path() -> Iterator[Path]:
    """The stand-ins on ``sys.path``, freshly imported, for the ``with`` block; yields their folder."""
    forget()
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.syspath_prepend(str(ROOT))
            yield ROOT
    finally:
        forget()
