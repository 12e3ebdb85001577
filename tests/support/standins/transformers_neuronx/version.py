"""Stand-in for ``transformers_neuronx/version.py``.

Mirrors transformers_neuronx/version.py at c8d6bdc, which says ``0.10.x`` although the
release built from that commit is 0.11.351.
"""
__version__ = "0.10.x"
