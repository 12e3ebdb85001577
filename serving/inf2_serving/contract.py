"""What the laptop and the container must agree on, written once.

The client renders ``serving.properties`` and validates requests from these
tables, and the handler in the container parses and validates from the same
ones, so a value one side accepts is never refused by the other.

Standard library only, and Python 3.9: this module ships in every artifact and
runs in the LMI container as well as on the laptop.
"""
from __future__ import annotations

import re

__all__ = ["ENDPOINT_NAME", "ENDPOINT_NAME_RULE", "VARIANT_NAME"]

ENDPOINT_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
"""SageMaker's name rule for endpoints, endpoint configs and models; local deployment names follow it too."""
ENDPOINT_NAME_RULE = "must be 1-63 letters, digits or hyphens, starting with a letter or digit"
VARIANT_NAME = "AllTraffic"
"""The one production variant of every endpoint (the name SageMaker's runtime reports back)."""
