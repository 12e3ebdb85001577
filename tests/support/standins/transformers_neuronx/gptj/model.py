"""Stand-in for ``transformers_neuronx/gptj/model.py``: GPT-J's Neuron graph, computed in torch.

The constructor, weight linking, sharding, KV caches, buckets, ``forward`` and
``sample`` follow the real file. ``to_neuron()`` scribes one graph per bucket with the
stand-in scribe (parameters and attention mask, see :mod:`transformers_neuronx.gptj.hlo`)
instead of compiling; each graph run is then computed here in torch, rank by rank over
the tensor-parallel shards, following the real graph (gptj/hlo.py) op by op: the same
layouts, dtypes (amp for weights and activations, float32 for layer norms, scores and
softmax), rotary matrix, additive mask and all-reduce sums. The mask is the scribed one,
evaluated for each run's ``cache_offset``, so the library's mask defect is reproduced
unless a corrected ``transformers_neuronx.hlo.decoder_attention_mask_legacy`` was
installed before ``to_neuron()``.

Stand-in only, for tests: the class-level ``instances`` list, and per model
``to_neuron_calls``, ``compile_cwd``, ``compile_env`` (``NEURON_COMPILE_CACHE_URL`` and
``NEURON_CC_FLAGS`` when ``to_neuron()`` ran), ``compile_flags``, ``forward_calls``,
``graph_runs`` (one per token), ``batch_shapes`` (``(rows, tokens)`` per ``forward``),
``reset_calls``, ``sample_calls`` and ``mask_nodes`` (the scribed mask, one per bucket).
"""
from __future__ import annotations

import os
from typing import Any, ClassVar

import torch
from torch_neuronx.pyhlo.scribe import HloScribe, HloShape, evaluate, torch_dtype

from transformers_neuronx import NeuronConfig, compiler, dtypes, module, parallel, utils
from transformers_neuronx.gptj import hlo
from transformers_neuronx.gptj.config import GPTJConfig
from transformers_neuronx.sampling import simple_sample

RECORDED_ENV = ("NEURON_COMPILE_CACHE_URL", "NEURON_CC_FLAGS")
_LAYER_NORM_EPSILON = 1e-5  # hlo.py:51 batch_norm's default; the checkpoint's layer_norm_epsilon is not read
_MASKED_SCORE = -65536.0  # gptj/hlo.py:106


class GPTJForSampling(module.PretrainedModel):
    """Mirrors transformers_neuronx/gptj/model.py:29-160 at c8d6bdc."""

    instances: ClassVar[list[GPTJForSampling]] = []

    def __init__(self, config: Any, batch_size: int = 1, amp: str = "f32", tp_degree: int = 2, unroll: Any = None,
                 init_n_active_tokens: Any = None, neuron_config: Any = None, **kwargs: Any) -> None:
        """Mirrors gptj/model.py:31-58.

        Raises ``KeyError`` for a keyword GPTJConfig lacks (utils.py:53), ``ValueError`` for
        ``n_positions`` above the checkpoint's (model.py:38-42), ``NotImplementedError`` for
        quantization (model.py:43-44) or any ``init_n_active_tokens`` (model.py:48-49).
        """
        super().__init__()
        config = GPTJConfig(config, batch_size, amp, tp_degree, **kwargs)
        self.config = config
        self.neuron_config = neuron_config if neuron_config else NeuronConfig()
        sequence_length = kwargs.get("n_positions", None)
        if sequence_length and sequence_length > config.n_ctx:
            raise ValueError(f"Sequence length ({sequence_length}) cannot be larger than position embedding's "
                             f"context size ({config.n_ctx})!")
        if self.neuron_config.quant:
            raise NotImplementedError("Support for quantization is not yet implemented")
        # A smaller unroll splits the real graph into multi-layer pieces; the arithmetic is the same.
        self.unroll = config.n_layer if unroll is None else unroll
        if init_n_active_tokens is not None:
            raise NotImplementedError(f"init_n_active_tokens={init_n_active_tokens}")
        self.init_n_active_tokens = init_n_active_tokens
        dtype = dtypes.to_torch_dtype(config.amp)
        self.transformer = GPTJTransformer(config)
        self.lm_head = module.LowMemoryLazyLinear(config.vocab_size, dtype=dtype)
        self.ln_lm_head = GPTJLnLmHead(config, self.transformer.ln_f, self.lm_head)
        self.n_positions_list = utils.power_of_two_bucket_sizes(128, config.n_positions)
        self.program: GPTJProgram | None = None
        self.manipulator = parallel.ParallelTensorManipulator(config.tp_degree)
        # Stand-in records.
        self.to_neuron_calls = 0
        self.compile_cwd: str | None = None
        self.compile_env: dict[str, str | None] | None = None
        self.compile_flags: str | None = None
        self.forward_calls = 0
        self.graph_runs = 0
        self.batch_shapes: list[tuple[int, int]] = []
        self.reset_calls = 0
        self.sample_calls = 0
        GPTJForSampling.instances.append(self)

    @property
    def mask_nodes(self) -> list[HloShape]:
        """Stand-in only: the scribed attention mask of each bucket's graph (``[]`` before ``to_neuron()``)."""
        return [] if self.program is None else list(self.program.mask_nodes)

    def get_tied_parameters(self) -> list[tuple[torch.nn.Parameter, ...]]:
        """Mirrors gptj/model.py:60-61: lm_head may borrow the embedding's checkpoint entry."""
        return [(self.transformer.wte.weight, self.lm_head.weight)]

    def get_base_model(self) -> GPTJTransformer:
        """Mirrors gptj/model.py:63-64: checkpoints may omit the ``transformer.`` prefix."""
        return self.transformer

    def to_neuron(self) -> None:
        """Mirrors gptj/model.py:66-80: scribe a graph per bucket, read and shard the weights, load.

        Scribing calls ``transformers_neuronx.hlo.decoder_attention_mask_legacy`` as it is
        at this moment. Weight data is read here: a key missing from its safetensors file
        is ``FileNotFoundError``; a parameter no checkpoint key named fails with torch's
        ``ValueError`` for an uninitialized parameter.
        """
        self.to_neuron_calls += 1
        self.compile_cwd = os.getcwd()
        self.compile_env = {name: os.environ.get(name) for name in RECORDED_ENV}
        self.compile_flags = compiler.get_compiler_flags()
        config = self.config
        scribes = [compiler.compile_py_func(hlo.gen_scribable_gptj(config, 1, npos))
                   for npos in self.n_positions_list]
        program = GPTJProgram(config, scribes)
        self.transformer.wte.materialize()
        for block in self.transformer.h:
            block.to_neuron(self.n_positions_list)
        self.ln_lm_head.to_neuron()
        program.setup(self.transformer.h, self.ln_lm_head)
        self.program = program

    def reset(self) -> None:
        """Mirrors gptj/model.py:82-84: zero every layer's key and value cache."""
        self.reset_calls += 1
        for block in self.transformer.h:
            block.reset()

    def forward(self, input_ids: torch.Tensor, cache_offset: Any, start_ids: Any = None) -> torch.Tensor:
        """Mirrors gptj/model.py:86-108: one graph run per token; ``[batch, vocab]`` logits of the last.

        ``cache_offset`` (positional; ``None`` means ``arange``) holds each token's cache
        position; the bucket is the first whose size exceeds the last offset
        (``StopIteration`` past the largest). ``start_ids`` is ignored, as in the real graph.
        """
        self.forward_calls += 1
        batch_size, context_length = input_ids.shape
        self.batch_shapes.append((batch_size, context_length))
        if cache_offset is None:
            cache_offset = torch.arange(context_length, dtype=torch.int32)
        last_offset = cache_offset[-1].item()
        bucket_id = find_first_ge_index(self.n_positions_list, last_offset)
        logits = None
        for cur_len in range(input_ids.shape[-1]):
            step = slice(cur_len, cur_len + 1)
            logits = self._run_program(self.program, bucket_id, input_ids[:, step], cache_offset[step])
        logits = self.manipulator.unshard_along(logits, dim=0)
        logits = self._cast_logits(logits)
        logits = logits[: self.config.vocab_size]
        logits = logits.transpose(0, -1)
        return logits[:, -1, :]

    def _run_program(self, program: GPTJProgram, bucket_id: int, input_ids: torch.Tensor,
                     cache_offset: torch.Tensor) -> list[torch.Tensor]:
        """Mirrors gptj/model.py:110-129: embed on the CPU (float32), write the inputs, run the bucket's graph."""
        hidden = self.transformer.wte(input_ids)
        hidden = hidden.transpose(0, -1).contiguous()
        hidden_buffer, pos_embd_buffer, _ = program.input_buffers
        hidden = hidden.to(hidden_buffer.dtype)
        config = self.config
        last_offset = cache_offset[-1].item()
        pos_embd = self._fixed_pos_embedding(config.rotary_dim, config.n_embd // config.n_head, offset=last_offset)
        pos_embd = pos_embd.unsqueeze(0).to(pos_embd_buffer.dtype)
        for index, tensor in enumerate((hidden, pos_embd, cache_offset)):
            _write(program.input_buffers[index], tensor)
        self.graph_runs += 1
        return program.run(bucket_id)

    def sample(self, input_ids: torch.Tensor, sequence_length: int, start_ids: Any = None, top_k: int = 50,
               streamer: Any = None) -> torch.Tensor:
        """Mirrors gptj/model.py:131-133: ``sampling.simple_sample`` with the config's EOS (never drawn)."""
        self.sample_calls += 1
        return simple_sample(self, input_ids, start_ids, sequence_length, eos_token_id=self.config.eos_token_id,
                             top_k=top_k, streamer=streamer)

    def _fixed_pos_embedding(self, dim: int, head_dim: int, offset: int) -> torch.Tensor:
        """Mirrors gptj/model.py:135-153: the ``[head_dim, head_dim]`` rotary matrix for position ``offset``.

        Row vector times this matrix rotates each pair ``(x[2i], x[2i+1])`` of the first
        ``dim`` features by ``offset * 10000 ** (-2i / dim)``, GPT-J's interleaved rotary;
        the remaining features pass through.
        """
        inv_freq = 1.0 / (10000 ** (torch.arange(0, dim, 2) / dim))
        angle = torch.full((1,), float(offset)) * inv_freq
        sin, cos = torch.sin(angle.float()), torch.cos(angle.float())
        even = torch.arange(0, dim, 2)
        matrix = torch.eye(head_dim)
        matrix[even, even] = cos
        matrix[even + 1, even + 1] = cos
        matrix[even, even + 1] = sin
        matrix[even + 1, even] = -sin
        return matrix

    def _cast_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """Mirrors gptj/model.py:155-160: to ``neuron_config.cast_logits_dtype`` (float32 by default)."""
        dtype = torch.float32
        if self.neuron_config:
            dtype = getattr(torch, self.neuron_config.cast_logits_dtype)
        return logits.to(dtype)


def find_first_ge_index(values: list[int], target: int) -> int:
    """Mirrors gptj/model.py:187-188: the first bucket holding position ``target`` (``StopIteration`` if none)."""
    return next(index for index, value in enumerate(values) if value >= target + 1)


def _write(buffer: torch.Tensor, tensor: torch.Tensor) -> None:
    """Stands in for ops.parallel_write (ops.py:56-57, called at gptj/model.py:127-128).

    The compiled graph's inputs have fixed shapes (batch size and one active token), so a
    tensor of any other shape is refused with ``ValueError``; the dtype converts as on copy.
    """
    if tuple(tensor.shape) != tuple(buffer.shape):
        raise ValueError(f"input of shape {list(tensor.shape)} does not fit the compiled graph's input of shape "
                         f"{list(buffer.shape)} (batch size and active tokens are fixed at compile time)")
    buffer.copy_(tensor)


class GPTJTransformer(module.LowMemoryModule):
    """Mirrors transformers_neuronx/gptj/model.py:191-200 at c8d6bdc."""

    def __init__(self, config: GPTJConfig) -> None:
        super().__init__()
        self.wte = module.LowMemoryEmbedding(config.vocab_size, config.n_embd)
        self.h = module.LowMemoryModuleList([GPTJBlock(config) for _ in range(config.n_layer)])
        self.ln_f = module.LowMemoryLayerNorm(config.n_embd)


class GPTJBlock(module.LowMemoryModule):
    """Mirrors transformers_neuronx/gptj/model.py:203-286 at c8d6bdc (tensors per rank are lists)."""

    def __init__(self, config: GPTJConfig) -> None:
        super().__init__()
        self.ln_1 = module.LowMemoryLayerNorm(config.n_embd)
        self.attn = GPTJAttention(config)
        self.mlp = GPTJMLP(config)
        self.config = config
        self.ln_1_weight = self.ln_1_bias = None
        self.attn_q_weight = self.attn_k_weight = self.attn_v_weight = self.attn_out_weight = None
        self.mlp_in_weight = self.mlp_in_bias = self.mlp_out_weight = self.mlp_out_bias = None
        self.key_cache = self.key_cache_slices = None
        self.value_cache = self.value_cache_slices = None

    def to_neuron(self, n_positions_list: list[int]) -> None:
        """Mirrors gptj/model.py:226-263.

        Read the weights; duplicate ln_1; shard q/k/v/fc_in (transposed) by columns and
        fc_in's bias, out_proj and fc_out (transposed) by rows; fc_out's bias on rank 0
        only; drop the module's own copies; allocate zeroed amp caches
        ``[n_positions, batch, n_head, head_dim]`` sharded by head, with one view per bucket.
        """
        self.materialize()
        config = self.config
        manipulator = parallel.ParallelTensorManipulator(config.tp_degree)
        duplicate, shard_along = manipulator.duplicate, manipulator.shard_along
        self.ln_1_weight = duplicate(self.ln_1.weight.detach())
        self.ln_1_bias = duplicate(self.ln_1.bias.detach())
        attn, mlp = self.attn, self.mlp
        self.attn_q_weight = shard_along(attn.q_proj.weight.detach().T, dim=1)
        self.attn_k_weight = shard_along(attn.k_proj.weight.detach().T, dim=1)
        self.attn_v_weight = shard_along(attn.v_proj.weight.detach().T, dim=1)
        self.attn_out_weight = shard_along(attn.out_proj.weight.detach().T, dim=0)
        self.mlp_in_weight = shard_along(mlp.fc_in.weight.detach().T, dim=1)
        self.mlp_in_bias = shard_along(mlp.fc_in.bias.detach(), dim=0)
        self.mlp_out_weight = shard_along(mlp.fc_out.weight.detach().T, dim=0)
        self.mlp_out_bias = manipulator.primary_only(mlp.fc_out.bias.detach())
        self.nullify()
        head_dim = config.n_embd // config.n_head
        cache_shape = [config.n_positions, config.batch_size, config.n_head, head_dim]
        dtype = dtypes.to_torch_dtype(config.amp)
        self.key_cache = shard_along(torch.zeros(cache_shape, dtype=dtype), dim=2)
        self.key_cache_slices = [manipulator.slice_on_nc(self.key_cache, 0, start=0, end=npos, step=1)
                                 for npos in n_positions_list]
        self.value_cache = shard_along(torch.zeros(cache_shape, dtype=dtype), dim=2)
        self.value_cache_slices = [manipulator.slice_on_nc(self.value_cache, 0, start=0, end=npos, step=1)
                                   for npos in n_positions_list]

    def get_parameters(self) -> list[list[torch.Tensor]]:
        """Mirrors gptj/model.py:265-277: the order the graph declares them in."""
        return [self.ln_1_weight, self.ln_1_bias, self.attn_q_weight, self.attn_k_weight, self.attn_v_weight,
                self.attn_out_weight, self.mlp_in_weight, self.mlp_in_bias, self.mlp_out_weight, self.mlp_out_bias]

    def get_cache_slices(self) -> list[list[list[torch.Tensor]]]:
        """Mirrors gptj/model.py:279-280."""
        return [self.key_cache_slices, self.value_cache_slices]

    def reset(self) -> None:
        """Mirrors gptj/model.py:282-286: zero-fill the caches in place (the bucket views see it)."""
        for cache in (*self.key_cache, *self.value_cache):
            cache.zero_()


class GPTJAttention(module.LowMemoryModule):
    """Mirrors transformers_neuronx/gptj/model.py:289-298 at c8d6bdc: bias-free amp projections."""

    def __init__(self, config: GPTJConfig) -> None:
        super().__init__()
        dtype = dtypes.to_torch_dtype(config.amp)
        self.q_proj = module.LowMemoryLazyLinear(config.n_embd, bias=False, dtype=dtype)
        self.k_proj = module.LowMemoryLazyLinear(config.n_embd, bias=False, dtype=dtype)
        self.v_proj = module.LowMemoryLazyLinear(config.n_embd, bias=False, dtype=dtype)
        self.out_proj = module.LowMemoryLazyLinear(config.n_embd, bias=False, dtype=dtype)


class GPTJMLP(module.LowMemoryModule):
    """Mirrors transformers_neuronx/gptj/model.py:301-307 at c8d6bdc."""

    def __init__(self, config: GPTJConfig) -> None:
        super().__init__()
        dtype = dtypes.to_torch_dtype(config.amp)
        self.fc_in = module.LowMemoryLazyLinear(config.intermediate_dim, dtype=dtype)
        self.fc_out = module.LowMemoryLazyLinear(config.n_embd, dtype=dtype)


class GPTJLnLmHead:
    """Mirrors transformers_neuronx/gptj/model.py:310-341 at c8d6bdc."""

    def __init__(self, config: GPTJConfig, ln_f: module.LowMemoryLayerNorm, lm_head: module.LowMemoryLazyLinear):
        self.tp_degree = config.tp_degree
        self.ln_f = ln_f
        self.lm_head = lm_head
        self.ln_f_weight = self.ln_f_bias = self.lm_head_weight = self.lm_head_bias = None
        self.manipulator = parallel.ParallelTensorManipulator(config.tp_degree)

    def to_neuron(self) -> None:
        """Mirrors gptj/model.py:322-338: ln_f duplicated; lm_head padded to a multiple of tp, by columns."""
        manipulator = self.manipulator
        self.ln_f.materialize()
        self.ln_f_weight = manipulator.duplicate(self.ln_f.weight.detach())
        self.ln_f_bias = manipulator.duplicate(self.ln_f.bias.detach())
        self.lm_head.materialize()
        weight = self.lm_head.weight.detach().T
        pad = utils.get_pad_size(weight.shape[1], self.tp_degree)
        self.lm_head_weight = manipulator.shard_along(torch.nn.functional.pad(weight, (0, pad, 0, 0)), dim=1)
        bias = torch.nn.functional.pad(self.lm_head.bias.detach(), (0, pad))
        self.lm_head_bias = manipulator.shard_along(bias, dim=0)
        self.lm_head.nullify()

    def get_parameters(self) -> list[list[torch.Tensor]]:
        """Mirrors gptj/model.py:340-341."""
        return [self.ln_f_weight, self.ln_f_bias, self.lm_head_weight, self.lm_head_bias]


class GPTJProgram:
    """Stand-in for program.FullyUnrolledDecoder with GPTJBuffers (program.py:101-122, gptj/model.py:163-184).

    Holds each bucket's scribed graph. ``setup`` binds the caches and weights to the
    graph's declared parameters, refusing any tensor whose shape or dtype differs (as
    the runtime does); ``run`` computes one graph run, i.e. one token, in torch.
    """

    def __init__(self, config: GPTJConfig, scribes: list[HloScribe]) -> None:
        self.config = config
        self.scribes = scribes
        self.mask_nodes = [scribe.root for scribe in scribes]
        declared = scribes[0].parameters
        self.input_buffers = [torch.zeros(declared[i].sizes, dtype=torch_dtype(declared[i].element_type))
                              for i in range(3)]
        for scribe in scribes:
            mask = scribe.root
            n_positions = scribe.parameters[3].sizes[0]
            if not isinstance(mask, HloShape) or mask.element_type != "f32" or mask.sizes != (1, n_positions):
                raise ValueError(f"the attention mask must be f32[1, {n_positions}], got {mask!r}")
        self.blocks: list[GPTJBlock] = []
        self.ln_lm_head: GPTJLnLmHead | None = None

    def setup(self, blocks: Any, ln_lm_head: GPTJLnLmHead) -> None:
        """Bind like program.py:109-118: inputs, every layer's cache views, every layer's weights, the head."""
        caches = [cache for block in blocks for cache in block.get_cache_slices()]
        weights = [param for block in blocks for param in block.get_parameters()] + ln_lm_head.get_parameters()
        for bucket_id, scribe in enumerate(self.scribes):
            declared = scribe.parameters
            bound = [per_bucket[bucket_id] for per_bucket in caches] + weights
            if len(declared) != 3 + len(bound):
                raise ValueError(f"the graph declares {len(declared)} parameters; {3 + len(bound)} were bound")
            for number, per_rank in enumerate(bound, start=3):
                expected = declared[number]
                for rank, tensor in enumerate(per_rank):
                    if (tuple(tensor.shape) != expected.sizes
                            or tensor.dtype != torch_dtype(expected.element_type)):
                        raise ValueError(f"parameter {number} on rank {rank}: {tensor.dtype} {list(tensor.shape)} "
                                         f"does not fit the compiled {expected.element_type}{list(expected.sizes)}")
        self.blocks = list(blocks)
        self.ln_lm_head = ln_lm_head

    def run(self, bucket_id: int) -> list[torch.Tensor]:
        """One run of gptj/hlo.py:219-238: every block, then ln_f and lm_head; per-rank logits [vocab/tp, 1, batch]."""
        hidden, pos_embd, cache_offset = self.input_buffers
        mask = evaluate(self.mask_nodes[bucket_id], {2: cache_offset.clone()})
        tp_degree = self.config.tp_degree
        for block in self.blocks:
            ln_hidden = _layer_norm(hidden, block.ln_1_weight[0], block.ln_1_bias[0])
            attn_parts = [
                _attention(ln_hidden, block.attn_q_weight[rank], block.attn_k_weight[rank],
                           block.attn_v_weight[rank], block.attn_out_weight[rank], pos_embd,
                           block.key_cache_slices[bucket_id][rank], block.value_cache_slices[bucket_id][rank],
                           cache_offset, mask)
                for rank in range(tp_degree)]
            hidden = _all_reduce_sum(attn_parts) + hidden
            mlp_parts = [
                _mlp(ln_hidden, block.mlp_in_weight[rank], block.mlp_in_bias[rank], block.mlp_out_weight[rank],
                     block.mlp_out_bias[rank])
                for rank in range(tp_degree)]
            hidden = _all_reduce_sum(mlp_parts) + hidden
        head = self.ln_lm_head
        return [_ln_lm_head(hidden, head.ln_f_weight[rank], head.ln_f_bias[rank], head.lm_head_weight[rank],
                            head.lm_head_bias[rank])
                for rank in range(tp_degree)]


# ---------------------------------------------------------------------------------------------
# The graph's arithmetic. Hidden states are [n_embd, n_active, batch] in the amp dtype.


def _layer_norm(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Follows hlo.py:84-101 with batch_norm (hlo.py:51-81): float32, biased variance, epsilon 1e-5, back to amp."""
    features, n_active, batch = hidden.shape
    x = hidden.reshape(features, n_active * batch).to(torch.float32)
    mean = x.mean(dim=0, keepdim=True)
    var = (x - mean).square().mean(dim=0, keepdim=True)
    normed = (x - mean) * torch.rsqrt(var + _LAYER_NORM_EPSILON)
    out = normed * weight[:, None] + bias[:, None]
    return out.to(hidden.dtype).reshape(features, n_active, batch)


def _attention(hidden: torch.Tensor, q_weight: torch.Tensor, k_weight: torch.Tensor, v_weight: torch.Tensor,
               out_weight: torch.Tensor, pos_embd: torch.Tensor, key_cache: torch.Tensor,
               value_cache: torch.Tensor, cache_offset: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Follows gptj/hlo.py:34-136 on one rank; returns its un-reduced ``[n_embd, n_active, batch]`` share.

    q, k, v in amp; q and k times the rotary matrix; k and v written into the bucket's
    cache rows at ``cache_offset`` (rows outside the bucket are skipped, as XLA's Scatter
    does); scores ``(q / sqrt(head_dim)) . K`` in float32 over the whole bucket, then
    ``score * mask + (1 - mask) * -65536``, float32 softmax, probabilities cast to amp,
    times V, out_proj.
    """
    features, n_active, batch = hidden.shape
    n_positions, _, n_heads, head_dim = key_cache.shape
    flat = hidden.reshape(features, n_active * batch)
    query = (flat.T @ q_weight).reshape(n_active, batch * n_heads, head_dim)
    query = torch.bmm(query, pos_embd).reshape(n_active, batch, n_heads, head_dim)
    key = (flat.T @ k_weight).reshape(n_active, batch * n_heads, head_dim)
    key = torch.bmm(key, pos_embd).reshape(n_active, batch, n_heads, head_dim)
    value = (flat.T @ v_weight).reshape(n_active, batch, n_heads, head_dim)
    for index, row in enumerate(cache_offset.tolist()):
        if 0 <= row < n_positions:
            key_cache[row] = key[index]
            value_cache[row] = value[index]
    query = query.to(torch.float32) / torch.tensor(head_dim ** 0.5, dtype=torch.float32)
    score = torch.einsum("abhd,pbhd->bhap", query, key_cache.to(torch.float32))
    score = score * mask + (1.0 - mask) * _MASKED_SCORE
    score = score - score.amax(dim=-1, keepdim=True)
    probs = score.exp()
    probs = (probs / probs.sum(dim=-1, keepdim=True)).to(hidden.dtype)
    context = torch.einsum("bhap,pbhd->bhad", probs, value_cache)
    context = context.permute(2, 0, 1, 3).reshape(n_active * batch, n_heads * head_dim)
    return (out_weight.T @ context.T).reshape(features, n_active, batch)


def _mlp(hidden: torch.Tensor, in_weight: torch.Tensor, in_bias: torch.Tensor, out_weight: torch.Tensor,
         out_bias: torch.Tensor) -> torch.Tensor:
    """Follows hlo.py:465-523 on one rank: fc_in + bias, gelu_new (tanh; activations.py:17-18), fc_out + bias."""
    features, n_active, batch = hidden.shape
    flat = hidden.reshape(features, n_active * batch)
    inner = flat.T @ in_weight + in_bias[None, :]
    inner = torch.nn.functional.gelu(inner, approximate="tanh")
    out = inner @ out_weight + out_bias[None, :]
    return out.T.reshape(features, n_active, batch)


def _all_reduce_sum(parts: list[torch.Tensor]) -> torch.Tensor:
    """Follows hlo.py:1067-1094 (and gptj/hlo.py:132-134): the ranks' shares summed, in their dtype."""
    total = parts[0]
    for part in parts[1:]:
        total = total + part
    return total


def _ln_lm_head(hidden: torch.Tensor, ln_weight: torch.Tensor, ln_bias: torch.Tensor, weight: torch.Tensor,
                bias: torch.Tensor) -> torch.Tensor:
    """Follows gptj/hlo.py:171-194 on one rank: ln_f, then ``weight^T . ln + bias`` in amp, [vocab/tp, a, b]."""
    features, n_active, batch = hidden.shape
    normed = _layer_norm(hidden, ln_weight, ln_bias).reshape(features, n_active * batch)
    logits = weight.T @ normed + bias[:, None]
    return logits.reshape(-1, n_active, batch)
