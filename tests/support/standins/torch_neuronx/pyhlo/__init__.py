"""Stand-in for ``torch_neuronx.pyhlo``: see :mod:`torch_neuronx.pyhlo.scribe`."""
