"""Local deployments: the packaged artifact served on this machine by the same handler as the container.

Laptop side only: nothing here ships in the artifact.
"""
