"""Stand-in for ``transformers_neuronx`` (aws-neuron/transformers-neuronx, 0.10-0.13).

Class and method signatures mirror the real ``gptj/model.py``, ``module.py`` and
``generation_utils.py``. Instead of compiling for NeuronCores, the model computes
with transformers' CPU GPT-J on the same weights, so results are real; it records
what the serving code asked for (tp, amp, n_positions, batch_size, compile calls,
the environment and working directory at compile time) and, like a compiled Neuron
graph, rejects batches of any other size.
"""
