"""Stand-in for ``transformers_neuronx.generation_utils``."""


class HuggingFaceGenerationModelAdapter:
    """transformers ``generate()`` over a Neuron model.

    The real adapter runs generate() over ``model.forward`` and turns the attention
    mask into ``start_ids``, which GPT-J ignores; this one runs the CPU model with an
    all-ones mask to the same effect.
    """

    def __init__(self, config, model):
        self.config = config
        self.model = model
        self.generate_calls = 0

    def generate(self, *args, **kwargs):
        import torch

        input_ids = kwargs["input_ids"] if "input_ids" in kwargs else args[0]
        self.model.check_batch(input_ids)
        self.generate_calls += 1
        kwargs["attention_mask"] = torch.ones_like(input_ids)
        self.model.reset()
        return self.model._cpu.generate(*args, **kwargs)
