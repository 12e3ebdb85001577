"""Stand-in for DJL's ``djl_python`` (engines/python/setup/djl_python, v0.29.0).

Only the parts our handler and DJL's own test harness touch, with the real class and
function signatures, encodings and behaviour: ``inputs``, ``outputs``, ``pair_list``,
``service_loader`` and ``test_model``.
"""
from .inputs import Input
from .outputs import Output
from .pair_list import PairList

__all__ = ["Input", "Output", "PairList"]
