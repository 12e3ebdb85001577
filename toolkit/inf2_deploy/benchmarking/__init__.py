"""Benchmarks of a deployment: the request runner, the statistics and the plot.

Laptop side.
"""
