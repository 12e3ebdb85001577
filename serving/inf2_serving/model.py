"""DJL entry point (``option.entryPoint=model.py``), shipped at the artifact root.

The packager copies this file next to the ``inf2_serving/`` folder; DJL imports it
and calls ``handle(inputs)``. Everything else lives in ``inf2_serving``.
"""
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
# DJL imports model.py by path from the artifact root, which holds inf2_serving/.
# Inside an installed package there is no such subfolder and nothing to add.
if os.path.isdir(os.path.join(_HERE, "inf2_serving")) and _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from inf2_serving.djl import handle  # noqa: E402

__all__ = ["handle"]
