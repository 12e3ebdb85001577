"""Stand-in for ``transformers_neuronx/constants.py``: the layout names NeuronConfig uses.

Mirrors transformers_neuronx/constants.py:24-34 at c8d6bdc.
"""
from __future__ import annotations

import enum

LAYOUT_BSH = "BSH"
LAYOUT_HSB = "HSB"
LAYOUT_SBH = "SBH"


class Layout(enum.Enum):
    """Mirrors transformers_neuronx/constants.py:28-34 at c8d6bdc: compares equal to its string value."""

    HSB = "HSB"
    BSH = "BSH"
    SBH = "SBH"

    def __eq__(self, value: object) -> bool:
        return super().__eq__(Layout(value))

    __hash__ = enum.Enum.__hash__
