"""The transformers_neuronx and torch_neuronx stand-ins behave like the real libraries.

The real sources are transformers-neuronx 0.11.351 (aws-neuron/transformers-neuronx at
c8d6bdc); each test names the file and lines it pins. The scribe stand-in follows
torch_neuronx/pyhlo/scribe.py's calling conventions and XLA's operation semantics.

The tiny GPT-J here has weights drawn with std 0.16 and random layer-norm and bias
terms: at GPT-J's usual 0.02 the logits are nearly flat and a wrong attention mask
hardly shows.
"""
from __future__ import annotations

import inspect
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from inf2_serving.neuron_mask import causal_decode_mask

VOCAB = 999  # odd: at tp 2 the lm_head is padded to 1000 (gptj/model.py:329-337)
N_POSITIONS = 256
EOS = 7


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    """A tiny GPT-J saved as model.safetensors, and its state dict."""
    from transformers import GPTJConfig, GPTJForCausalLM

    torch.manual_seed(1234)
    config = GPTJConfig(n_layer=2, n_embd=64, n_head=4, rotary_dim=16, n_positions=N_POSITIONS, vocab_size=VOCAB,
                        initializer_range=0.16, bos_token_id=EOS, eos_token_id=EOS)
    model = GPTJForCausalLM(config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "ln_" in name or name.endswith(".bias"):  # HF initializes these to 1 and 0
                param.add_(0.16 * torch.randn_like(param))
    folder = tmp_path_factory.mktemp("standin") / "tiny-gptj"
    model.save_pretrained(folder, safe_serialization=True)
    state = {key: value.detach().clone() for key, value in model.state_dict().items()
             if key in _checkpoint_keys(folder)}
    return folder, state


def _checkpoint_keys(folder: Path) -> set[str]:
    from safetensors import safe_open

    with safe_open(str(folder / "model.safetensors"), framework="pt") as handle:
        return set(handle.keys())


@pytest.fixture
def nx(standins):
    """The stand-in modules, freshly imported; ``GPTJForSampling.instances`` emptied."""
    import transformers_neuronx
    from transformers_neuronx import hlo
    from transformers_neuronx.gptj import model

    model.GPTJForSampling.instances.clear()

    class Modules:
        package = transformers_neuronx
        GPTJForSampling = model.GPTJForSampling
        gptj_model = model

    Modules.hlo = hlo
    return Modules


def _load(nx, folder, batch_size=2, tp_degree=2, amp="f32", compile=True, **kwargs):
    model = nx.GPTJForSampling.from_pretrained(str(folder), batch_size=batch_size, tp_degree=tp_degree, amp=amp,
                                               **kwargs)
    if compile:
        model.to_neuron()
    return model


def _prompt(batch: int, length: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, VOCAB, (batch, length), generator=generator)
    ids[ids == EOS] = EOS + 1
    return ids


def reference_logits(state: dict[str, torch.Tensor], ids: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """GPT-J in plain float32 torch over a whole sequence, attention limited by ``allowed[query, key]``.

    Written from transformers' GPT-J (interleaved rotary on the first 16 features,
    parallel attention and MLP residual, gelu_new); returns ``[batch, seq, vocab]``.
    """
    f = torch.nn.functional
    batch, length = ids.shape
    embed, heads, rotary = 64, 4, 16
    head_dim = embed // heads

    def norm(x, name):
        return f.layer_norm(x, (embed,), state[f"{name}.weight"], state[f"{name}.bias"], 1e-5)

    inv_freq = 1.0 / (10000 ** (torch.arange(0, rotary, 2, dtype=torch.int64).float() / rotary))
    angles = torch.arange(length).float()[:, None] * inv_freq[None, :]
    sin = angles.sin().repeat_interleave(2, dim=-1)[None, :, None, :]
    cos = angles.cos().repeat_interleave(2, dim=-1)[None, :, None, :]

    def rotate(x):
        part, rest = x[..., :rotary], x[..., rotary:]
        turned = torch.stack((-part[..., 1::2], part[..., 0::2]), dim=-1).flatten(-2)
        return torch.cat((part * cos + turned * sin, rest), dim=-1)

    hidden = state["transformer.wte.weight"][ids]
    for layer in range(2):
        prefix = f"transformer.h.{layer}"
        x = norm(hidden, f"{prefix}.ln_1")

        def project(name, x=x, prefix=prefix):
            return (x @ state[f"{prefix}.attn.{name}.weight"].T).view(batch, length, heads, head_dim)

        query, key, value = rotate(project("q_proj")), rotate(project("k_proj")), project("v_proj")
        scores = torch.einsum("bqhd,bkhd->bhqk", query, key) / head_dim ** 0.5
        probs = scores.masked_fill(~allowed, float("-inf")).softmax(dim=-1)
        attn = torch.einsum("bhqk,bkhd->bqhd", probs, value).reshape(batch, length, embed)
        attn = attn @ state[f"{prefix}.attn.out_proj.weight"].T
        inner = f.gelu(x @ state[f"{prefix}.mlp.fc_in.weight"].T + state[f"{prefix}.mlp.fc_in.bias"],
                       approximate="tanh")
        mlp = inner @ state[f"{prefix}.mlp.fc_out.weight"].T + state[f"{prefix}.mlp.fc_out.bias"]
        hidden = hidden + attn + mlp
    return norm(hidden, "transformer.ln_f") @ state["lm_head.weight"].T + state["lm_head.bias"]


def _causal(length: int) -> torch.Tensor:
    return torch.ones(length, length, dtype=torch.bool).tril()


def _key_zero_only(length: int) -> torch.Tensor:
    allowed = torch.zeros(length, length, dtype=torch.bool)
    allowed[:, 0] = True
    return allowed


# ---------------------------------------------------------------------------------------------
# torch_neuronx.pyhlo.scribe stand-in


def _scribe(standins):
    from torch_neuronx.pyhlo import scribe

    return scribe


def test_scribe_call_context_and_shapes(standins) -> None:
    """HloScribe()(func): a fresh scribe is HloScribe.context while func runs; shapes as in pyhlo."""
    scribe_module = _scribe(standins)
    seen = {}

    def func(scribe):
        seen["context"] = scribe_module.HloScribe.context
        shape = scribe.f32[2, 3]
        seen["shape"] = (shape.sizes, shape.dtype is scribe.f32, shape.scribe is scribe, scribe.s32[4].sizes)
        return scribe.f32[2].Parameter(parameter_number=0)

    outer = scribe_module.HloScribe()
    result = outer(func)
    assert result is not outer and seen["context"] is result
    assert scribe_module.HloScribe.context is None
    assert seen["shape"] == ((2, 3), True, True, (4,))
    assert result.root.instruction.opcode == "Parameter" and result.parameters[0] is result.root
    assert scribe_module.HloScribe().pred.sizes == ()


def _run(standins, build, parameters=None):
    """Scribe ``build(scribe)`` and evaluate what it returns."""
    scribe_module = _scribe(standins)
    scribe = scribe_module.HloScribe()(build)
    return scribe_module.evaluate(scribe.root, parameters or {})


def test_scribe_evaluates_xla_semantics(standins) -> None:
    """Iota, Broadcast, Compare, Convert, Select and the elementwise ops as XLA defines them."""
    iota0 = _run(standins, lambda s: s.s32[2, 3].Iota(dimensions=[0]))
    iota1 = _run(standins, lambda s: s.s32[2, 3].Iota(dimensions=[1]))
    assert iota0.tolist() == [[0, 0, 0], [1, 1, 1]] and iota1.tolist() == [[0, 1, 2], [0, 1, 2]]
    assert iota0.dtype == torch.int32

    vector = torch.tensor([5, 7], dtype=torch.int32)
    rows = _run(standins, lambda s: s.s32[2, 3].Broadcast(s.s32[2].Parameter(parameter_number=0), dimensions=[0]),
                {0: vector})
    cols = _run(standins, lambda s: s.s32[3, 2].Broadcast(s.s32[2].Parameter(parameter_number=0), dimensions=[1]),
                {0: vector})
    scalar = _run(standins, lambda s: s.f32[2, 2].Broadcast(s.f32.Constant(constant_value=1.5), dimensions=[]))
    assert rows.tolist() == [[5, 5, 5], [7, 7, 7]] and cols.tolist() == [[5, 7]] * 3
    assert scalar.tolist() == [[1.5, 1.5], [1.5, 1.5]]

    lhs, rhs = torch.tensor([1, 2, 3], dtype=torch.int32), torch.tensor([2, 2, 2], dtype=torch.int32)
    expected = {"EQ": [0, 1, 0], "NE": [1, 0, 1], "LT": [1, 0, 0], "LE": [1, 1, 0], "GT": [0, 0, 1], "GE": [0, 1, 1]}
    for direction, values in expected.items():
        def compare(s, direction=direction):
            a, b = s.s32[3].Parameter(parameter_number=0), s.s32[3].Parameter(parameter_number=1)
            return s.f32[3].Convert(s.pred[3].Compare(a, b, comparison_direction=direction))
        out = _run(standins, compare, {0: lhs, 1: rhs})
        assert out.dtype == torch.float32 and out.tolist() == [float(v) for v in values], direction

    def arithmetic(s):
        a, b = s.f32[3].Parameter(parameter_number=0), s.f32[3].Parameter(parameter_number=1)
        total = s.f32[3].Add(s.f32[3].Multiply(a, b), s.f32[3].Subtract(a, b))  # a*b + (a-b)
        return s.f32[3].Maximum(s.f32[3].Divide(total, b), s.f32[3].Minimum(a, b))

    a, b = torch.tensor([1.0, -4.0, 6.0]), torch.tensor([2.0, 2.0, -3.0])
    assert torch.equal(_run(standins, arithmetic, {0: a, 1: b}),
                       torch.maximum((a * b + (a - b)) / b, torch.minimum(a, b)))
    quotient = _run(standins, lambda s: s.s32[2].Divide(s.s32[2].Parameter(parameter_number=0),
                                                        s.s32[2].Parameter(parameter_number=1)),
                    {0: torch.tensor([7, -7], dtype=torch.int32), 1: torch.tensor([2, 2], dtype=torch.int32)})
    assert quotient.tolist() == [3, -3]  # integer division rounds toward zero

    def logic(s):
        p, q = s.pred[4].Parameter(parameter_number=0), s.pred[4].Parameter(parameter_number=1)
        chosen = s.pred[4].Or(s.pred[4].And(p, q), s.pred[4].Not(p))
        return s.s32[4].Select(chosen, s.s32[4].Iota(dimensions=[0]),
                               s.s32[4].Broadcast(s.s32.Constant(constant_value=-1), dimensions=[]))

    p, q = torch.tensor([True, True, False, False]), torch.tensor([True, False, True, False])
    assert _run(standins, logic, {0: p, 1: q}).tolist() == [0, -1, 2, 3]


def test_scribe_refuses_what_xla_refuses(standins) -> None:
    """Arity (the real scribe's ValueError), unsupported ops, and sizes or types XLA would reject."""
    scribe_module = _scribe(standins)

    def one_operand_add(s):
        return s.f32[2].Add(s.f32[2].Parameter(parameter_number=0))

    with pytest.raises(ValueError, match=r"^Add accepts 2 operands; received 1$"):
        scribe_module.HloScribe()(one_operand_add)
    with pytest.raises(ValueError, match=r"^Iota accepts 0 operands; received 1$"):
        scribe_module.HloScribe()(lambda s: s.s32[2].Iota(s.s32[2].Iota(dimensions=[0]), dimensions=[0]))
    with pytest.raises(NotImplementedError, match="Reshape"):
        scribe_module.HloScribe()(lambda s: s.f32[4].Reshape(s.f32[2, 2].Parameter(parameter_number=0)))

    def wrong(build, parameters=None):
        with pytest.raises(ValueError):
            _run(standins, build, parameters)

    two = {0: torch.zeros(2), 1: torch.zeros(3)}
    wrong(lambda s: s.f32[3].Add(s.f32[2].Parameter(parameter_number=0), s.f32[3].Parameter(parameter_number=1)),
          two)  # no implicit broadcasting
    wrong(lambda s: s.f32[2].Constant(constant_value=1.0))  # a scalar declared as [2]
    wrong(lambda s: s.f32[3, 2].Broadcast(s.f32[2].Parameter(parameter_number=0), dimensions=[0]),
          two)  # operand size 2 into an output dimension of 3
    wrong(lambda s: s.f32[2].Parameter(parameter_number=0), {0: torch.zeros(3)})  # wrong argument shape
    wrong(lambda s: s.s32[2].Parameter(parameter_number=0), {0: torch.zeros(2)})  # wrong argument type
    wrong(lambda s: s.f32[2].Parameter(parameter_number=0), {})  # missing argument
    wrong(lambda s: s.f32[2, 2].Broadcast(s.f32[2, 2].Parameter(parameter_number=0), dimensions=[1, 0]),
          {0: torch.zeros(2, 2)})  # dimensions must increase


# ---------------------------------------------------------------------------------------------
# hlo.decoder_attention_mask_legacy


def _mask(nx, function, offsets: list[int], n_positions: int) -> torch.Tensor:
    from torch_neuronx.pyhlo.scribe import HloScribe, evaluate

    def build(scribe):
        position_ids = scribe.s32[len(offsets)].Parameter(parameter_number=0)
        return function(position_ids, scribe.f32, n_positions)

    return evaluate(HloScribe()(build).root, {0: torch.tensor(offsets, dtype=torch.int32)})


def test_library_mask_is_indexed_by_active_token(nx) -> None:
    """hlo.py:901-913: mask[i, p] = (p <= position_ids[i]) * (i >= p), i the active-token index."""
    offsets = [4, 5, 6]
    mask = _mask(nx, nx.hlo.decoder_attention_mask_legacy, offsets, 8)
    expected = [[float(p <= offsets[i] and i >= p) for p in range(8)] for i in range(3)]
    assert mask.tolist() == expected
    for offset in (0, 5, 100):  # GPT-J's single active token sees position 0 only
        single = _mask(nx, nx.hlo.decoder_attention_mask_legacy, [offset], 128)
        assert single.tolist() == [[1.0] + [0.0] * 127]
    assert _mask(nx, causal_decode_mask, [5], 8).tolist() == [[1.0] * 6 + [0.0] * 2]


def test_to_neuron_scribes_the_mask_function_it_finds(nx, checkpoint, monkeypatch) -> None:
    """gptj/hlo.py:296 calls hlo.decoder_attention_mask_legacy when the graph is built, per bucket."""
    from torch_neuronx.pyhlo.scribe import evaluate

    folder, _ = checkpoint
    model = _load(nx, folder, compile=False)
    with monkeypatch.context() as patch:
        patch.setattr(nx.package.hlo, "decoder_attention_mask_legacy", causal_decode_mask)  # after construction
        model.to_neuron()
    assert nx.hlo.decoder_attention_mask_legacy is not causal_decode_mask
    assert [node.sizes for node in model.mask_nodes] == [(1, 128), (1, 256)]
    offset = torch.tensor([3], dtype=torch.int32)
    # The cache offset is the graph's parameter 2 (hidden and pos_embd come first: gptj/hlo.py:260-262).
    assert evaluate(model.mask_nodes[0], {2: offset}).tolist() == [[1.0] * 4 + [0.0] * 124]
    default = _load(nx, folder)
    assert evaluate(default.mask_nodes[1], {2: offset}).tolist() == [[1.0] + [0.0] * 255]


# ---------------------------------------------------------------------------------------------
# The model's numbers


@pytest.mark.parametrize("tp_degree", [1, 2])
def test_library_mask_attends_to_position_zero_only(nx, checkpoint, tp_degree) -> None:
    """With the library's own mask every token, prompt included, attends to cache position 0 alone."""
    folder, state = checkpoint
    ids = _prompt(2, 6)
    model = _load(nx, folder, tp_degree=tp_degree)
    logits = model(ids, None)
    wanted = reference_logits(state, ids, _key_zero_only(6))[:, -1]
    torch.testing.assert_close(logits, wanted, atol=1e-4, rtol=1e-4)
    step = model(torch.tensor([[11], [12]]), torch.tensor([6], dtype=torch.int32))
    longer = torch.cat([ids, torch.tensor([[11], [12]])], dim=1)
    torch.testing.assert_close(step, reference_logits(state, longer, _key_zero_only(7))[:, -1], atol=1e-4, rtol=1e-4)


def test_reference_is_transformers_gptj(checkpoint) -> None:
    """The test's own reference, causally masked, is transformers' GPTJForCausalLM."""
    from transformers import GPTJForCausalLM

    folder, state = checkpoint
    ids = _prompt(2, 6)
    with torch.no_grad():
        hf = GPTJForCausalLM.from_pretrained(folder).eval()(ids).logits
    torch.testing.assert_close(reference_logits(state, ids, _causal(6)), hf, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(("tp_degree", "batch_size"), [(1, 1), (1, 2), (2, 1), (2, 2)])
def test_corrected_mask_matches_transformers(nx, checkpoint, monkeypatch, tp_degree, batch_size) -> None:
    """With a corrected mask installed before to_neuron(), logits and greedy tokens are transformers' own."""
    from transformers import GPTJForCausalLM

    folder, _ = checkpoint
    hf = GPTJForCausalLM.from_pretrained(folder).eval()
    ids = _prompt(batch_size, 5, seed=tp_degree)
    with monkeypatch.context() as patch:
        patch.setattr(nx.hlo, "decoder_attention_mask_legacy", causal_decode_mask)
        model = _load(nx, folder, batch_size=batch_size, tp_degree=tp_degree)
    library = _load(nx, folder, batch_size=batch_size, tp_degree=tp_degree)

    tokens, logits, library_logits = ids, model(ids, None), library(ids, None)
    greedy, library_greedy = [], []
    for step in range(8):
        with torch.no_grad():
            wanted = hf(tokens).logits[:, -1]
        torch.testing.assert_close(logits, wanted, atol=1e-4, rtol=1e-4)
        greedy.append(wanted.argmax(-1))
        library_greedy.append(library_logits.argmax(-1))
        if step == 0:
            assert (library_logits - wanted).abs().max() > 0.5
        nxt = logits.argmax(-1, keepdim=True)
        assert torch.equal(nxt[:, 0], greedy[-1])
        offset = torch.tensor([tokens.shape[1]], dtype=torch.int32)
        tokens = torch.cat([tokens, nxt], dim=1)
        logits, library_logits = model(nxt, offset), library(nxt, offset)
    assert not torch.equal(torch.stack(greedy), torch.stack(library_greedy))


def test_adapter_generate_matches_transformers(nx, checkpoint, monkeypatch) -> None:
    """generation_utils.py:15-106 drives transformers' generate(): greedy output equals GPTJForCausalLM's."""
    from transformers import AutoConfig, GPTJForCausalLM

    folder, _ = checkpoint
    monkeypatch.setattr(nx.hlo, "decoder_attention_mask_legacy", causal_decode_mask)
    model = _load(nx, folder)
    adapter = nx.package.HuggingFaceGenerationModelAdapter(AutoConfig.from_pretrained(folder), model)
    ids = _prompt(2, 4, seed=5)
    settings = dict(max_new_tokens=6, do_sample=False, pad_token_id=EOS, eos_token_id=EOS)
    with torch.no_grad():
        out = adapter.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **settings)
        wanted = GPTJForCausalLM.from_pretrained(folder).eval().generate(
            ids, attention_mask=torch.ones_like(ids), **settings)
    assert torch.equal(out, wanted)
    assert adapter.generate_calls == 1 and model.reset_calls == 0  # generate() does not reset the caches
    assert model.graph_runs == 4 + 5  # the prompt token by token, then one run per new token


def test_amp_dtypes(nx, checkpoint) -> None:
    """Linear weights in the amp dtype, layer norms and the embedding in float32 (module.py:282-321)."""
    folder, state = checkpoint
    model = _load(nx, folder, amp="f16", compile=False)
    model.transformer.h[0].materialize()
    block = model.transformer.h[0]
    assert block.attn.q_proj.weight.dtype == torch.float16 and block.mlp.fc_in.bias.dtype == torch.float16
    assert block.ln_1.weight.dtype == torch.float32
    model.to_neuron()
    assert model.transformer.wte.weight.dtype == torch.float32
    assert model.transformer.h[1].key_cache[0].dtype == torch.float16
    ids = _prompt(2, 5)
    logits = model(ids, None)
    assert logits.dtype == torch.float32  # cast_logits_dtype (model.py:155-160)
    wanted = reference_logits(state, ids, _key_zero_only(5))[:, -1]
    assert (logits - wanted).abs().max() < 0.05


# ---------------------------------------------------------------------------------------------
# Constructor and configuration


def test_constructor_checks(nx, checkpoint) -> None:
    """gptj/model.py:31-58 with gptj/config.py:18-34 and utils.py:50-65."""
    from transformers_neuronx import NeuronConfig

    folder, _ = checkpoint
    with pytest.raises(KeyError, match='Found invalid key "n_position".'):
        _load(nx, folder, compile=False, n_position=128)
    with pytest.raises(ValueError, match=r"^Sequence length \(512\) cannot be larger than position embedding's "
                                         r"context size \(256\)!$"):
        _load(nx, folder, compile=False, n_positions=512)
    with pytest.raises(NotImplementedError, match="^init_n_active_tokens=4$"):
        _load(nx, folder, compile=False, init_n_active_tokens=4)
    with pytest.raises(NotImplementedError, match="quantization"):
        _load(nx, folder, compile=False, neuron_config=NeuronConfig(quant=object()))
    with pytest.raises(KeyError):
        _load(nx, folder, compile=False, amp="fp16")  # dtypes.py:18-25
    assert nx.GPTJForSampling.instances == []

    model = _load(nx, folder, compile=False, n_positions=200, batch_size=3, tp_degree=1)
    config = model.config
    assert (config.n_positions, config.n_ctx, config.intermediate_dim) == (200, 256, 256)
    assert (config.batch_size, config.tp_degree, config.amp, config.eos_token_id) == (3, 1, "f32", EOS)
    assert model.n_positions_list == [128, 200] and model.unroll == 2
    assert _load(nx, folder, compile=False).n_positions_list == [128, 256]
    assert _load(nx, folder, compile=False, n_positions=100).n_positions_list == [100]
    assert _load(nx, folder, compile=False, n_positions=None).config.n_positions == 256  # None is ignored
    assert len(nx.GPTJForSampling.instances) == 4


def test_utils_and_neuron_config(nx) -> None:
    """utils.py:50-65 and 140-141; config.py:98-253 defaults and checks."""
    from transformers_neuronx import NeuronConfig, utils

    assert utils.power_of_two_bucket_sizes(128, 1024) == [128, 256, 512, 1024]
    assert utils.power_of_two_bucket_sizes(128, 300) == [128, 256, 300]
    assert [utils.get_pad_size(v, d) for v, d in ((50400, 8), (999, 2), (1000, 3), (4, 4))] == [0, 1, 2, 0]

    class Target:
        a = 1
        b = 2

    target = Target()
    utils.maybe_override_attributes(target, {"a": 5, "b": None})
    assert (target.a, target.b) == (5, 2)
    with pytest.raises(KeyError, match='Found invalid key "c".'):
        utils.maybe_override_attributes(target, {"c": 1})

    config = NeuronConfig()
    assert (config.quant, config.cast_logits_dtype, config.is_pp(), config.use_2d_cache_ids) == (
        None, "float32", False, False)
    assert NeuronConfig(padding_side="right").use_2d_cache_ids
    with pytest.raises(AssertionError, match="Unexpected NeuronConfig keyword arguments"):
        NeuronConfig(bogus=1)
    with pytest.raises(AssertionError):
        NeuronConfig(cast_logits_dtype="float64")
    with pytest.raises(TypeError):
        NeuronConfig("float32")  # keyword-only


def test_compile_records_env_cwd_and_flags(nx, checkpoint, monkeypatch, tmp_path) -> None:
    """What to_neuron() saw (stand-in records); flags as compiler.py:65-81 builds them."""
    folder, _ = checkpoint
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NEURON_COMPILE_CACHE_URL", "/var/tmp/cache")
    monkeypatch.setenv("NEURON_CC_FLAGS", "--model-type=transformer -O1")
    model = _load(nx, folder)
    assert model.to_neuron_calls == 1 and model.compile_cwd == os.getcwd()
    assert model.compile_env == {"NEURON_COMPILE_CACHE_URL": "/var/tmp/cache",
                                 "NEURON_CC_FLAGS": "--model-type=transformer -O1"}
    assert model.compile_flags == "--model-type=transformer -O1 --auto-cast=none"
    assert nx.GPTJForSampling.instances == [model]


# ---------------------------------------------------------------------------------------------
# Weights: lazy linking, layouts, sharding


def _copy_config(folder: Path, target: Path) -> Path:
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy(folder / "config.json", target / "config.json")
    return target


def test_weights_are_linked_lazily_and_read_by_to_neuron(nx, checkpoint) -> None:
    """module.py:199-207 links each parameter to a file and key; module.py:63-85 reads them in to_neuron()."""
    folder, state = checkpoint
    model = _load(nx, folder, compile=False)
    params = dict(model.named_parameters())
    assert all(torch.nn.parameter.is_lazy(param) for param in params.values())  # no data read yet
    q_proj = params["transformer.h.0.attn.q_proj.weight"]
    assert q_proj._file_path == os.path.join(os.path.realpath(folder), "model.safetensors")
    assert q_proj._global_key == "transformer.h.0.attn.q_proj.weight"
    model.to_neuron()
    assert torch.equal(model.transformer.wte.weight, state["transformer.wte.weight"])
    assert torch.nn.parameter.is_lazy(model.transformer.h[0].attn.q_proj.weight)  # nullified after sharding
    assert model.transformer.h[0].attn.q_proj.weight._global_key == "transformer.h.0.attn.q_proj.weight"


def test_missing_weights_fail_in_to_neuron(nx, checkpoint, tmp_path) -> None:
    """A key absent from its safetensors file (module.py:77-80); a parameter never linked stays uninitialized."""
    from safetensors.torch import save_file

    folder, state = checkpoint
    gone = "transformer.h.1.mlp.fc_out.bias"
    sharded = _copy_config(folder, tmp_path / "sharded")
    save_file({k: v for k, v in state.items() if k != gone}, str(sharded / "part-1.safetensors"))
    index = {"metadata": {}, "weight_map": dict.fromkeys(state, "part-1.safetensors")}
    (sharded / "model.safetensors.index.json").write_text(json.dumps(index))
    model = _load(nx, sharded, compile=False)  # linking does not look inside the files
    shard_path = os.path.join(os.path.realpath(sharded), "part-1.safetensors")
    with pytest.raises(FileNotFoundError, match=f"^Could not find a weight for {gone} in {shard_path}$"):
        model.to_neuron()

    unlinked = _copy_config(folder, tmp_path / "unlinked")
    save_file({k: v for k, v in state.items() if k != "transformer.h.0.ln_1.bias"},
              str(unlinked / "model.safetensors"))
    model = _load(nx, unlinked, compile=False)
    with pytest.raises(ValueError, match="uninitialized parameter"):
        model.to_neuron()


def test_base_model_prefix_and_tied_lm_head(nx, checkpoint, tmp_path) -> None:
    """module.py:161-176: keys without 'transformer.' link through the base model; lm_head may tie to wte."""
    from safetensors.torch import save_file

    folder, state = checkpoint
    bare = _copy_config(folder, tmp_path / "bare")
    save_file({k.removeprefix("transformer."): v for k, v in state.items()}, str(bare / "model.safetensors"))
    model = _load(nx, bare, compile=False)
    assert model.transformer.h[1].mlp.fc_in.weight._global_key == "h.1.mlp.fc_in.weight"
    model.to_neuron()
    reference = _load(nx, folder)
    ids = _prompt(2, 3)
    assert torch.equal(model(ids, None), reference(ids, None))

    tied = _copy_config(folder, tmp_path / "tied")
    save_file({k: v for k, v in state.items() if k != "lm_head.weight"}, str(tied / "model.safetensors"))
    model = _load(nx, tied, compile=False)
    assert model.lm_head.weight._global_key == "transformer.wte.weight"
    model.to_neuron()  # loads; the lm_head is now the embedding matrix


def _write_layouts(folder: Path, state: dict[str, torch.Tensor], target: Path, layouts: list[str]) -> Path:
    from safetensors.torch import save_file

    _copy_config(folder, target)
    for layout in layouts:
        if layout == "safetensors":
            save_file(state, str(target / "model.safetensors"))
        elif layout == "safetensors-index":
            save_file(state, str(target / "shard.safetensors"))
            index = {"metadata": {}, "weight_map": dict.fromkeys(state, "shard.safetensors")}
            (target / "model.safetensors.index.json").write_text(json.dumps(index))
        elif layout == "split":
            split = target / "pytorch_model.bin"
            split.mkdir()
            names = {key: f"p{i}.{key}" for i, key in enumerate(state)}
            (split / "key_to_filename.json").write_text(json.dumps(names))
            for key, name in names.items():
                torch.save(state[key], split / name)
        elif layout == "bin":
            torch.save(state, target / "pytorch_model.bin")
        elif layout == "bin-index":
            torch.save(state, target / "weights-1.bin")
            index = {"metadata": {}, "weight_map": dict.fromkeys(state, "weights-1.bin")}
            (target / "pytorch_model.bin.index.json").write_text(json.dumps(index))
    return target


@pytest.mark.parametrize(("layouts", "source"), [
    (["safetensors", "safetensors-index", "bin-index"], "model.safetensors"),
    (["safetensors-index", "split", "bin-index"], "shard.safetensors"),
    (["split", "bin-index"], "pytorch_model.bin/p0.transformer.wte.weight"),
    (["bin", "bin-index"], None),
    (["bin-index"], None),
])
def test_checkpoint_layout_precedence(nx, checkpoint, tmp_path, layouts, source) -> None:
    """module.py:425-451: safetensors, its index, a split folder, pytorch_model.bin, its index; bins load eagerly."""
    folder, state = checkpoint
    target = _write_layouts(folder, state, tmp_path / "ckpt", layouts)
    model = _load(nx, target, compile=False)
    wte = model.transformer.wte.weight
    if source is None:  # module.py:178-197: read now, no links
        assert not torch.nn.parameter.is_lazy(wte) and not hasattr(wte, "_file_path")
        assert torch.equal(wte, state["transformer.wte.weight"])
    else:
        assert torch.nn.parameter.is_lazy(wte)
        assert wte._file_path == os.path.join(os.path.realpath(target), source)
    model.to_neuron()
    ids = _prompt(2, 3)
    assert torch.equal(model(ids, None), _load(nx, folder)(ids, None))


def test_no_checkpoint_is_file_not_found(nx, checkpoint, tmp_path) -> None:
    """module.py:450-451."""
    folder, _ = checkpoint
    empty = _copy_config(folder, tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match=f"^Can not find model.safetensors or pytorch_model.bin in {empty}$"):
        _load(nx, empty, compile=False)


def test_sharding_and_caches(nx, checkpoint) -> None:
    """gptj/model.py:226-263 and 322-338: column/row shards, fc_out bias on rank 0, padded lm_head, caches."""
    folder, state = checkpoint
    model = _load(nx, folder, batch_size=2, tp_degree=2)
    block = model.transformer.h[0]
    q = state["transformer.h.0.attn.q_proj.weight"].T
    assert [tuple(s.shape) for s in block.attn_q_weight] == [(64, 32), (64, 32)]
    assert torch.equal(torch.cat(block.attn_q_weight, dim=1), q)
    assert torch.equal(torch.cat(block.attn_out_weight, dim=0), state["transformer.h.0.attn.out_proj.weight"].T)
    assert torch.equal(torch.cat(block.mlp_in_bias), state["transformer.h.0.mlp.fc_in.bias"])
    assert torch.equal(block.mlp_out_bias[0], state["transformer.h.0.mlp.fc_out.bias"])
    assert not block.mlp_out_bias[1].any()
    head = model.ln_lm_head
    assert [tuple(s.shape) for s in head.lm_head_weight] == [(64, 500), (64, 500)]
    assert not head.lm_head_weight[1][:, -1].any() and head.lm_head_bias[1][-1] == 0
    assert [tuple(c.shape) for c in block.key_cache] == [(256, 2, 2, 16)] * 2
    assert [tuple(c[0].shape) for c in block.key_cache_slices] == [(128, 2, 2, 16), (256, 2, 2, 16)]
    with pytest.raises(ValueError, match="cannot be sharded"):
        _load(nx, folder, tp_degree=3)  # parallel.py:120-125


# ---------------------------------------------------------------------------------------------
# forward, buckets, reset, sample


def test_forward_signature_and_shape(nx, checkpoint) -> None:
    """gptj/model.py:86-108: forward(input_ids, cache_offset, start_ids=None) -> float32 [batch, vocab]."""
    folder, _ = checkpoint
    model = _load(nx, folder)
    assert list(inspect.signature(model.forward).parameters) == ["input_ids", "cache_offset", "start_ids"]
    ids = _prompt(2, 5)
    with pytest.raises(TypeError):
        model(ids, cache_ids=None)
    logits = model(ids, None)
    assert logits.shape == (2, VOCAB) and logits.dtype == torch.float32
    assert model.forward_calls == 1 and model.graph_runs == 5  # one graph run per token (model.py:99-102)
    model(ids[:, :1], torch.tensor([5], dtype=torch.int32))
    assert model.forward_calls == 2 and model.graph_runs == 6
    assert model.batch_shapes == [(2, 5), (2, 1)]
    with pytest.raises(ValueError, match="compiled graph"):
        model(ids[:1], None)  # the graph was compiled for 2 rows
    with pytest.raises(ValueError, match="compiled graph"):
        model(torch.cat([ids, ids]), None)


def test_start_ids_are_ignored(nx, checkpoint) -> None:
    """gptj/model.py:86-108 never reads start_ids (left padding is not masked)."""
    folder, _ = checkpoint
    model = _load(nx, folder)
    ids = _prompt(2, 5)
    plain = model(ids, None)
    model.reset()
    assert torch.equal(model(ids, None, torch.tensor([3, 0], dtype=torch.int32)), plain)


def test_bucket_selection(nx, checkpoint, monkeypatch) -> None:
    """gptj/model.py:90-91 and 187-188: the first bucket larger than the last offset; none is StopIteration."""
    folder, _ = checkpoint
    model = _load(nx, folder)
    runs = []
    original = model.program.run
    monkeypatch.setattr(model.program, "run", lambda bucket_id: runs.append(bucket_id) or original(bucket_id))
    token = torch.tensor([[1], [2]])
    for offset in (0, 127, 128, 255):
        model(token, torch.tensor([offset], dtype=torch.int32))
    assert runs == [0, 0, 1, 1]
    runs.clear()
    model(_prompt(2, 3), torch.tensor([100, 126, 127], dtype=torch.int32))
    model(_prompt(2, 2), torch.tensor([127, 128], dtype=torch.int32))  # every token in the last offset's bucket
    assert runs == [0, 0, 0, 1, 1]
    with pytest.raises(StopIteration):
        model(token, torch.tensor([256], dtype=torch.int32))
    assert nx.gptj_model.find_first_ge_index([128, 256], 127) == 0


def test_reset_zero_fills_every_cache(nx, checkpoint) -> None:
    """gptj/model.py:82-84 and 282-286."""
    folder, _ = checkpoint
    model = _load(nx, folder)
    model(_prompt(2, 4), None)
    caches = [cache for block in model.transformer.h for cache in (*block.key_cache, *block.value_cache)]
    assert all(cache[:4].any() for cache in caches) and not any(cache[4:].any() for cache in caches)
    model.reset()
    assert model.reset_calls == 1 and not any(cache.any() for cache in caches)
    assert not model.transformer.h[0].key_cache_slices[0][1].any()  # the bucket views share the storage


class _Streamer:
    def __init__(self) -> None:
        self.chunks: list[torch.Tensor] = []
        self.ended = 0

    def put(self, value: torch.Tensor) -> None:
        self.chunks.append(value.clone())

    def end(self) -> None:
        self.ended += 1


def test_sample_never_emits_eos_and_runs_to_sequence_length(nx, checkpoint, monkeypatch) -> None:
    """sampling.py:24-29 and 117-166: EOS is forbidden, there is no early stop, and no reset()."""
    folder, _ = checkpoint
    ids = _prompt(2, 4)
    probe = _load(nx, folder)
    favourite = int(probe(ids, None)[0].argmax())  # the greedy first token of row 0
    model = _load(nx, folder, eos_token_id=favourite)  # gptj/config.py:29-30: kwargs may override the EOS
    calls = []
    original = model.forward
    monkeypatch.setattr(model, "forward", lambda *args: calls.append(args[1:]) or original(*args))
    streamer = _Streamer()
    out = model.sample(ids, 10, start_ids=torch.tensor([0, 1]), top_k=1, streamer=streamer)
    assert out.shape == (2, 10) and torch.equal(out[:, :4], ids)
    assert not (out[:, 4:] == favourite).any()
    assert int(out[0, 4]) != favourite
    assert [tuple(chunk.shape) for chunk in streamer.chunks] == [(2, 1)] * 6 and streamer.ended == 1
    assert torch.equal(torch.cat(streamer.chunks, dim=1), out[:, 4:])
    assert calls[0][0] is None and [int(c[0]) for c in calls[1:]] == [4, 5, 6, 7, 8]
    assert all(c[0].dtype == torch.int32 for c in calls[1:])
    assert model.sample_calls == 1 and model.reset_calls == 0
    assert model.graph_runs == 4 + 5


# ---------------------------------------------------------------------------------------------
# HuggingFaceGenerationModelAdapter


def test_adapter_forward_and_cache_ids(nx, checkpoint) -> None:
    """generation_utils.py:30-47 and 60-106: logits [batch, 1, vocab]; start_ids from the mask; 1-D cache ids."""
    from transformers import AutoConfig

    folder, _ = checkpoint
    model = _load(nx, folder)
    adapter = nx.package.HuggingFaceGenerationModelAdapter(AutoConfig.from_pretrained(folder), model)
    ids = _prompt(2, 3)
    mask = torch.tensor([[0, 1, 1], [1, 1, 1]])
    inputs = adapter.prepare_inputs_for_generation(ids, attention_mask=mask)
    assert torch.equal(inputs["input_ids"], ids) and inputs["cache_ids"].tolist() == [0, 1, 2]
    assert inputs["start_ids"].tolist() == [1, 0] and inputs["start_ids"].dtype == torch.int32
    (logits,) = adapter(**inputs)
    assert logits.shape == (2, 1, VOCAB)
    longer = torch.cat([ids, torch.tensor([[4], [5]])], dim=1)
    step = adapter.prepare_inputs_for_generation(longer, attention_mask=torch.ones_like(longer))
    assert torch.equal(step["input_ids"], longer[:, -1:]) and step["cache_ids"].tolist() == [3]
    assert adapter.cur_len.tolist() == [4]
    output = adapter(**step, return_dict=True)
    assert output.logits.shape == (2, 1, VOCAB)
    with pytest.warns(UserWarning, match="not used by forward"):
        adapter(ids[:, :1], torch.tensor([4]), attention_mask=mask)
