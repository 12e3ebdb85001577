"""GPT-J on the strict transformers-neuronx stand-in computes what transformers computes, because
the Neuron backend builds the graph with a causal decode mask; without it the self-check refuses to serve.

The model is tiny-gptj with weight matrices of std 0.16 (``sharp_gptj``): at GPT-J's 0.02
the logits are nearly flat and even the library's wrong mask leaves greedy tokens unchanged.
"""
from __future__ import annotations

import logging

import pytest
import torch
from inf2_serving.handler import ModelHandler, ReadinessState
from inf2_serving.schema import parse_request
from inf2_serving.self_check import FAILURE_MARKER, SelfCheckFailed

PROMPTS = ["The capital of France is", "Once upon a time there"]


@pytest.fixture
def neuron(standins, monkeypatch, tmp_path):
    """The stand-ins importable, cwd restored, no compiler env leaking in or out."""
    for name in ("NEURON_COMPILE_CACHE_URL", "NEURON_CC_FLAGS"):
        monkeypatch.setenv(name, "placeholder")
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    from transformers_neuronx import hlo
    from transformers_neuronx.gptj.model import GPTJForSampling

    GPTJForSampling.instances.clear()
    return hlo


@pytest.fixture(scope="module")
def transformers_gptj(sharp_gptj):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoTokenizer.from_pretrained(sharp_gptj), AutoModelForCausalLM.from_pretrained(sharp_gptj).eval()


def _properties(folder, tmp_path, **extra: str) -> dict[str, str]:
    return {"model_dir": str(tmp_path), "model_id": str(folder), "backend": "neuron", "n_positions": "128",
            "dtype": "fp32", **extra}


def _ids(tokenizer, count: int) -> torch.Tensor:
    rows = [tokenizer(p)["input_ids"] for p in PROMPTS[:count]]
    width = min(len(r) for r in rows)
    return torch.tensor([r[:width] for r in rows])


def _greedy(model, ids: torch.Tensor, steps: int) -> torch.Tensor:
    with torch.no_grad():
        return model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=steps, do_sample=False,
                              pad_token_id=50256)[:, ids.shape[1]:]


@pytest.mark.parametrize(("tp", "batch"), [(1, 1), (1, 2), (2, 1), (2, 2)])
def test_the_corrected_graph_computes_transformers_logits_and_tokens(
        neuron, sharp_gptj, transformers_gptj, tmp_path, caplog, tp: int, batch: int) -> None:
    tokenizer, model = transformers_gptj
    library_mask = neuron.decoder_attention_mask_legacy
    handler = ModelHandler()
    with caplog.at_level(logging.INFO, logger="inf2_serving"):
        handler.initialize(_properties(sharp_gptj, tmp_path, tensor_parallel_degree=str(tp), batch_size=str(batch)))
    assert any("causal mask position <= cache_offset" in r.getMessage() for r in caplog.records)
    assert neuron.decoder_attention_mask_legacy is library_mask  # put back once the graphs were built
    backend = handler.engine.backend

    ids = _ids(tokenizer, batch)
    with torch.no_grad():
        wanted = model(ids).logits[:, -1]
    torch.testing.assert_close(backend.next_token_logits(ids), wanted, atol=1e-4, rtol=1e-4)

    body = handler.generate(parse_request({"inputs": PROMPTS[:batch], "parameters": {"max_new_tokens": 8}}))
    expected = [tokenizer.decode(_greedy(model, torch.tensor([tokenizer(p)["input_ids"]]), 8)[0])
                for p in PROMPTS[:batch]]
    assert [item["generated_text"] for item in body] == expected


def test_with_the_correction_off_the_graph_attends_to_position_zero_only(
        neuron, sharp_gptj, transformers_gptj, tmp_path) -> None:
    from inf2_serving.config import ServingConfig
    from inf2_serving.neuron_backend import NeuronBackend
    from transformers import AutoConfig

    tokenizer, model = transformers_gptj
    config = ServingConfig.from_properties(_properties(sharp_gptj, tmp_path, correct_decode_mask="false"))
    backend = NeuronBackend(config, AutoConfig.from_pretrained(sharp_gptj), tokenizer.eos_token_id)
    ids = _ids(tokenizer, 1)
    with torch.no_grad():
        wanted = model(ids).logits[:, -1]
    got = backend.next_token_logits(ids)
    assert (got - wanted).abs().max() > 0.5
    # Only the first token and the last one itself shape the last logits: the middle is ignored.
    shuffled = torch.cat([ids[:, :1], ids[:, 1:-1].flip(1), ids[:, -1:]], dim=1)
    assert torch.equal(backend.next_token_logits(shuffled), got)

    tokens, wanted_tokens = [], _greedy(model, ids, 8)[0].tolist()
    current = ids
    for _ in range(8):  # greedy through the wrong graph
        tokens.append(int(backend.next_token_logits(current).argmax()))
        current = torch.cat([current, torch.tensor([[tokens[-1]]])], dim=1)
    assert tokens != wanted_tokens


def test_the_self_check_refuses_the_uncorrected_graph_in_one_line(neuron, sharp_gptj, tmp_path, caplog) -> None:
    handler = ModelHandler()
    with caplog.at_level(logging.INFO, logger="inf2_serving"), pytest.raises(SelfCheckFailed) as failed:
        handler.initialize(_properties(sharp_gptj, tmp_path, correct_decode_mask="false"))
    assert handler.state is ReadinessState.FAILED and FAILURE_MARKER in handler.error
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info is None  # one line, no traceback
    line = errors[0].getMessage()
    assert line.startswith(FAILURE_MARKER) and "\n" not in line and "correct_decode_mask=true" in line
    assert str(failed.value) == line


def test_startup_self_check_false_serves_anyway(neuron, sharp_gptj, tmp_path, caplog) -> None:
    handler = ModelHandler()
    with caplog.at_level(logging.WARNING, logger="inf2_serving"):
        handler.initialize(_properties(sharp_gptj, tmp_path, correct_decode_mask="false",
                                       startup_self_check="false"))
    assert handler.state is ReadinessState.READY
    assert any(r.getMessage().startswith("serving anyway") for r in caplog.records)


def test_a_library_without_the_function_keeps_its_own_mask(neuron, caplog, monkeypatch) -> None:
    from inf2_serving.neuron_mask import causal_decode_mask, decode_mask_installed

    def renamed(cache_ids, dtype, n_positions):  # another signature: not the function GPT-J's builder calls
        raise AssertionError("never called here")

    monkeypatch.setattr(neuron, "decoder_attention_mask_legacy", renamed)
    with caplog.at_level(logging.WARNING, logger="inf2_serving"), decode_mask_installed(True) as installed:
        assert not installed and neuron.decoder_attention_mask_legacy is renamed
    assert "keeps the library's mask" in caplog.text
    monkeypatch.setattr(neuron, "decoder_attention_mask_legacy", causal_decode_mask)
    with decode_mask_installed(True) as installed:  # already corrected: nothing to swap
        assert installed and neuron.decoder_attention_mask_legacy is causal_decode_mask


@pytest.mark.parametrize("corrected", [True, False])
def test_verify_passes_the_corrected_server_and_catches_the_uncorrected_one(
        neuron, sharp_gptj, tmp_path, serve, corrected: bool) -> None:
    pytest.importorskip("pydantic", reason="verify is client code; the compat venv holds only the container's")
    from inf2_deploy.client.verify import verify

    options = {"n_positions": "256", "correct_decode_mask": str(corrected).lower(), "startup_self_check": "false"}
    handler = ModelHandler()
    handler.initialize(_properties(sharp_gptj, tmp_path, **options))
    with serve(tmp_path / "artifact", sharp_gptj, handler, backend="neuron", **options) as url:
        report = verify(url, artifact=sharp_gptj, tokens=12)
    assert [p.label.split()[0] for p in report.prompts] == ["short", "long", "non-ascii"]
    if corrected:
        assert report.ok and report.agreement == 1.0
    else:
        assert not report.ok
        assert all(not p.agrees for p in report.prompts)
        assert report.agreement < 0.5
