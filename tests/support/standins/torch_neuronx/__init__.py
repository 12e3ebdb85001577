"""Stand-in for ``torch_neuronx``: only the ``pyhlo`` scribe DSL that transformers-neuronx builds graphs with.

The real package (aws-neuron, closed source, shipped as a wheel) compiles the scribed
HLO for NeuronCores. This stand-in records the scribed instructions instead and can
evaluate them with torch (``torch_neuronx.pyhlo.scribe.evaluate``, a stand-in-only helper).
"""
