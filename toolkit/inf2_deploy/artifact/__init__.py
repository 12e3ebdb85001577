"""The artifact the container sees at /opt/ml/model: checkpoint sources, conversion, manifest, packaging.

Laptop side. The tiny model builder needs torch and transformers; the rest does not.
"""
