"""Talking to a deployment: predictors, streamed JSON lines, and the correctness check.

Laptop side.
"""
