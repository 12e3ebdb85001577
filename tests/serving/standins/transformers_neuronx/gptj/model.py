"""Stand-in for ``transformers_neuronx.gptj.model``."""
import os

import torch

from transformers_neuronx import module

RECORDED_ENV = ("NEURON_COMPILE_CACHE_URL", "NEURON_CC_FLAGS")


class GPTJForSampling(module.PretrainedModel):
    instances = []

    def __init__(self, config, batch_size=1, amp="f32", tp_degree=2, unroll=None, init_n_active_tokens=None,
                 neuron_config=None, **kwargs):
        super().__init__()
        self.config = config
        self.batch_size = batch_size
        self.amp = amp
        self.tp_degree = tp_degree
        self.n_positions = kwargs.pop("n_positions", 2048)
        self.init_kwargs = dict(kwargs)
        self.to_neuron_calls = 0
        self.reset_calls = 0
        self.sample_calls = 0
        self.compile_cwd = None
        self.compile_env = None
        self.batch_shapes = []
        self._cpu = None
        self._tokens = None
        GPTJForSampling.instances.append(self)

    def load_weights(self, path):
        from transformers import GPTJForCausalLM

        self._cpu = GPTJForCausalLM.from_pretrained(path).eval()

    def to_neuron(self):
        self.to_neuron_calls += 1
        self.compile_cwd = os.getcwd()
        self.compile_env = {name: os.environ.get(name) for name in RECORDED_ENV}

    def reset(self):
        self.reset_calls += 1
        self._tokens = None

    def check_batch(self, input_ids):
        """A compiled graph takes exactly its batch size and at most n_positions."""
        if self.to_neuron_calls == 0:
            raise RuntimeError("to_neuron() was not called")
        rows, length = input_ids.shape
        if rows != self.batch_size:
            raise ValueError(f"compiled for batch_size {self.batch_size}, got {rows} rows")
        if length > self.n_positions:
            raise ValueError(f"compiled for n_positions {self.n_positions}, got {length} tokens")
        self.batch_shapes.append((rows, length))

    @torch.no_grad()
    def forward(self, input_ids, cache_offset, start_ids=None):
        # As on Neuron, start_ids is ignored: every position attends to all before it.
        self.check_batch(input_ids)
        offset = int(torch.as_tensor(cache_offset).reshape(-1)[0])
        prefix = input_ids[:, :0] if self._tokens is None else self._tokens[:, :offset]
        self._tokens = torch.cat([prefix, input_ids], dim=1)
        return self._cpu(self._tokens).logits[:, -1, :]

    @torch.no_grad()
    def sample(self, input_ids, sequence_length, start_ids=None, top_k=50, streamer=None):
        self.check_batch(input_ids)
        self.sample_calls += 1
        eos = self.config.eos_token_id
        sampling = {"do_sample": True, "top_k": top_k} if top_k > 1 else {"do_sample": False}
        out = self._cpu.generate(
            input_ids, attention_mask=torch.ones_like(input_ids), max_length=sequence_length,
            pad_token_id=eos, eos_token_id=eos, **sampling,
        )
        if streamer is not None:
            for step in range(input_ids.shape[1], out.shape[1]):
                streamer.put(out[:, step:step + 1])
            streamer.end()
        return out
