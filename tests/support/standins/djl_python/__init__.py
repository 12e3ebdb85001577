"""Stand-in for DJL's ``djl_python`` (engines/python/setup/djl_python, v0.29.0).

Only the parts our handler touches, with the real class and method signatures.
"""
