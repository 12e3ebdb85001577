"""How many examples each property test draws, per Hypothesis profile.

``ci`` (the default, what ``make test`` runs): derandomized, so a run draws the same
examples every time and CI cannot pass or fail by chance. ``deep`` (``make fuzz``):
random draws, ten times as many, with the example database, for local bug hunting.
Every failure ``deep`` finds is kept as an explicit ``@example`` in its test.
"""
from __future__ import annotations

import os

from hypothesis import settings

__all__ = ["PROFILE", "examples"]

DEEP_FACTOR = 10
settings.register_profile("ci", derandomize=True, database=None, deadline=None, print_blob=True)
settings.register_profile("deep", deadline=None, print_blob=True)
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
settings.load_profile(PROFILE)


def examples(count: int) -> int:
    """``count`` under ``ci``, ``DEEP_FACTOR`` times as many under ``deep``."""
    return count * DEEP_FACTOR if PROFILE == "deep" else count
