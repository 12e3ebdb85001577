"""Stand-in for ``transformers_neuronx`` 0.11.351 (aws-neuron/transformers-neuronx at c8d6bdc).

As strict as the real library on the path our serving code uses: GPT-J's
``GPTJForSampling`` (constructor checks, lazy checkpoint linking, ``to_neuron()``,
buckets, one graph run per token, ``sample()``), ``NeuronConfig`` and
``HuggingFaceGenerationModelAdapter``. Nothing runs on Neuron: ``to_neuron()`` scribes
each bucket's graph (its parameters and attention mask) with the ``torch_neuronx``
stand-in, and each graph run is computed in torch following the real graph op by op,
never with transformers' GPT-J, so the library's own numerics and defects (the
attention mask of ``hlo.decoder_attention_mask_legacy``) show. Every stand-in
function cites the real file and lines it mirrors; the real package exports more
models (Bloom, Llama, ...), which are left out.
"""
from transformers_neuronx.version import __version__  # noqa: I001  (the real import order)
from transformers_neuronx.constants import Layout
from transformers_neuronx.config import NeuronConfig
from transformers_neuronx.generation_utils import HuggingFaceGenerationModelAdapter
from transformers_neuronx.gptj.model import GPTJForSampling

__all__ = ["GPTJForSampling", "HuggingFaceGenerationModelAdapter", "Layout", "NeuronConfig", "__version__"]
