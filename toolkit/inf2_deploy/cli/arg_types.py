"""argparse value types shared by commands; a bad value is a usage error (exit 2) naming the flag."""
from __future__ import annotations

import argparse

__all__ = ["fraction", "positive_int"]


def positive_int(text: str) -> int:
    """A whole number of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def fraction(text: str) -> float:
    """A number in [0, 1)."""
    value = float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError("must be at least 0 and below 1")
    return value
