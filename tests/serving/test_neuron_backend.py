"""The Neuron backend against the transformers_neuronx stand-in (real signatures, CPU compute)."""
from __future__ import annotations

import os
import sys
import tempfile

import pytest
from inf2_serving.config import ConfigError, ServingConfig
from inf2_serving.handler import ModelHandler
from inf2_serving.neuron_backend import (
    DEFAULT_COMPILE_CACHE,
    configure_compiler_env,
    merge_cc_flags,
    neuron_available,
)
from inf2_serving.schema import parse_request

ENV = ("NEURON_COMPILE_CACHE_URL", "NEURON_CC_FLAGS")


@pytest.fixture
def neuron_env(standins, monkeypatch, tmp_path):
    """Stand-ins importable; env and cwd restored afterwards."""
    for name in ENV:
        monkeypatch.setenv(name, "placeholder")  # registers the original value for restore
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    from transformers_neuronx.gptj.model import GPTJForSampling

    GPTJForSampling.instances.clear()
    return GPTJForSampling


def _props(tiny_gptj, tmp_path, **extra):
    props = {"model_dir": str(tmp_path), "model_id": str(tiny_gptj), "backend": "neuron",
             "tensor_parallel_degree": "2", "n_positions": "256", "batch_size": "2", "dtype": "fp16"}
    props.update(extra)
    return props


def test_compiles_once_with_the_configured_shape(neuron_env, tiny_gptj, tmp_path, reference) -> None:
    cache = str(tmp_path / "cache")
    handler = ModelHandler()
    handler.initialize(_props(tiny_gptj, tmp_path, compiled_cache_url=cache,
                              neuron_cc_flags="--model-type=transformer"))
    (model,) = neuron_env.instances
    assert (model.config.batch_size, model.config.tp_degree, model.config.n_positions, model.config.amp) == \
        (2, 2, 256, "f16")
    assert model.to_neuron_calls == 1
    assert model.compile_env == {"NEURON_COMPILE_CACHE_URL": cache, "NEURON_CC_FLAGS": "--model-type=transformer"}
    assert model.compile_cwd == os.path.realpath(tempfile.gettempdir())
    assert handler.engine.backend.adapter.generate_calls == 1  # the warm-up generation

    body = handler.generate(parse_request({"inputs": "The capital of France is",
                                           "parameters": {"max_new_tokens": 8}}))
    assert body == {"generated_text": reference("The capital of France is", 8)}
    assert model.batch_shapes[-1][0] == 2  # one prompt, padded to the compiled batch
    assert model.to_neuron_calls == 1


def test_equal_length_batches_match_unbatched(neuron_env, tiny_gptj, tmp_path, reference) -> None:
    handler = ModelHandler()
    handler.initialize(_props(tiny_gptj, tmp_path))
    prompts = ["Hello world", "Good day", "Red car"]  # two tokens each
    body = handler.generate(parse_request({"inputs": prompts, "parameters": {"max_new_tokens": 6}}))
    assert [b["generated_text"] for b in body] == [reference(p, 6) for p in prompts]
    # Every graph call sees the compiled batch of 2: the third prompt ran with a padding row.
    assert {rows for rows, _ in neuron_env.instances[0].batch_shapes} == {2}


def test_sample_fallback_without_the_adapter(neuron_env, tiny_gptj, tmp_path, monkeypatch, reference) -> None:
    monkeypatch.setitem(sys.modules, "transformers_neuronx.generation_utils", None)  # import fails
    handler = ModelHandler()
    handler.initialize(_props(tiny_gptj, tmp_path))
    assert handler.engine.backend.adapter is None
    request = parse_request({"inputs": "Once upon a time", "parameters": {"max_new_tokens": 5, "details": True}})
    body = handler.generate(request)
    assert body["generated_text"] == reference("Once upon a time", 5)
    assert body["details"]["generated_tokens"] == 5
    assert neuron_env.instances[0].sample_calls == 2  # warm-up and the request


def test_cache_defaults_and_keeps_an_existing_env() -> None:
    config = ServingConfig(model_dir="/m", weights_dir="/m")
    env = {}
    assert configure_compiler_env(config, env) == DEFAULT_COMPILE_CACHE
    assert env == {"NEURON_COMPILE_CACHE_URL": DEFAULT_COMPILE_CACHE}
    env = {"NEURON_COMPILE_CACHE_URL": "s3://bucket/cache"}
    assert configure_compiler_env(config, env) == "s3://bucket/cache"
    override = ServingConfig(model_dir="/m", weights_dir="/m", compile_cache_url="/var/tmp/x")
    assert configure_compiler_env(override, env) == "/var/tmp/x"


@pytest.mark.parametrize(("existing", "ours", "merged"), [
    ("", "--model-type=transformer", "--model-type=transformer"),
    ("--retry_failed_compilation", "-O2", "--retry_failed_compilation -O2"),
    ("--model-type=cnn --verbose 35", "--model-type=transformer", "--verbose 35 --model-type=transformer"),
    ("--cache_dir /a --auto-cast none", "--cache_dir=/b", "--auto-cast none --cache_dir=/b"),
    ("--enable-fast-loading-neuron-binaries", "", "--enable-fast-loading-neuron-binaries"),
])
def test_our_compiler_flags_merge_into_the_existing_ones(existing: str, ours: str, merged: str) -> None:
    assert merge_cc_flags(existing, ours) == merged
    env = {"NEURON_CC_FLAGS": existing} if existing else {}
    configure_compiler_env(ServingConfig(model_dir="/m", weights_dir="/m", neuron_cc_flags=ours or None), env)
    assert env["NEURON_CC_FLAGS"] == merged


@pytest.mark.parametrize("flags", ["--cache_dir=/var/tmp/mine -O1", "-O1 --cache_dir /var/tmp/mine"])
def test_a_cache_dir_flag_wins_over_the_cache_url(flags: str) -> None:
    # libneuronxla resolves --cache_dir in NEURON_CC_FLAGS before NEURON_COMPILE_CACHE_URL.
    config = ServingConfig(model_dir="/m", weights_dir="/m", compile_cache_url="s3://bucket/cache")
    env = {"NEURON_CC_FLAGS": flags}
    assert configure_compiler_env(config, env) == "/var/tmp/mine"
    assert "NEURON_COMPILE_CACHE_URL" not in env and env["NEURON_CC_FLAGS"] == flags


def _read_only_cache(tmp_path):
    model_dir = tmp_path / "opt-ml-model"
    cache = model_dir / "neuron-cache"
    (cache / "neuronxcc-2.14" / "MODULE_1").mkdir(parents=True)
    (cache / "neuronxcc-2.14" / "MODULE_1" / "model.neff").write_bytes(b"neff")
    return model_dir, cache


def test_a_cache_in_the_read_only_model_dir_is_copied_to_a_writable_place(tmp_path) -> None:
    model_dir, cache = _read_only_cache(tmp_path)
    writable = tmp_path / "var-tmp-cache"
    for field, config, env in [
        ("property", ServingConfig(model_dir="/m", weights_dir="/m", compile_cache_url=str(cache)), {}),
        ("env", ServingConfig(model_dir="/m", weights_dir="/m"), {"NEURON_COMPILE_CACHE_URL": str(cache)}),
    ]:
        used = configure_compiler_env(config, env, read_only_root=str(model_dir), default_cache=str(writable))
        assert used == str(writable), field
        assert env["NEURON_COMPILE_CACHE_URL"] == str(writable), field
        assert (writable / "neuronxcc-2.14" / "MODULE_1" / "model.neff").read_bytes() == b"neff"


def test_a_read_only_cache_dir_flag_is_redirected_too(tmp_path) -> None:
    model_dir, cache = _read_only_cache(tmp_path)
    writable = tmp_path / "var-tmp-cache"
    env = {"NEURON_CC_FLAGS": f"--cache_dir={cache} -O1"}
    used = configure_compiler_env(ServingConfig(model_dir="/m", weights_dir="/m"), env,
                                  read_only_root=str(model_dir), default_cache=str(writable))
    assert used == str(writable)
    assert env["NEURON_CC_FLAGS"] == f"-O1 --cache_dir={writable}"
    assert (writable / "neuronxcc-2.14" / "MODULE_1" / "model.neff").exists()


def test_a_missing_read_only_cache_just_uses_the_default(tmp_path) -> None:
    config = ServingConfig(model_dir="/m", weights_dir="/m", compile_cache_url="/opt/ml/model/../model/c")
    env = {}
    assert configure_compiler_env(config, env, default_cache=str(tmp_path / "d")) == str(tmp_path / "d")
    assert not (tmp_path / "d").exists()


def test_auto_picks_neuron_only_with_device_and_library(standins, monkeypatch) -> None:
    real_exists = os.path.exists
    monkeypatch.setattr(os.path, "exists", lambda p: p == "/dev/neuron0" or real_exists(p))
    assert neuron_available()
    monkeypatch.setitem(sys.modules, "transformers_neuronx", None)
    assert not neuron_available()
    monkeypatch.setattr(os.path, "exists", lambda p: False if p == "/dev/neuron0" else real_exists(p))
    monkeypatch.delitem(sys.modules, "transformers_neuronx")
    assert not neuron_available()


def test_n_positions_beyond_the_model_is_refused(neuron_env, tiny_gptj, tmp_path) -> None:
    handler = ModelHandler()
    with pytest.raises(ConfigError, match="at most 1024 positions"):
        handler.initialize(_props(tiny_gptj, tmp_path, n_positions="2048"))
    assert neuron_env.instances == []


def test_neuron_backend_refuses_other_architectures(neuron_env, tiny_gptj, tmp_path) -> None:
    import shutil

    from transformers import GPT2Config

    folder = tmp_path / "gpt2"
    GPT2Config(n_layer=1, n_embd=8, n_head=2).save_pretrained(folder)
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(tiny_gptj / name, folder / name)
    handler = ModelHandler()
    with pytest.raises(ConfigError, match="GPT-J only"):
        handler.initialize({"model_dir": str(folder), "backend": "neuron"})
    assert neuron_env.instances == []



def _stream_requests():
    return [parse_request({"inputs": prompt, "stream": True, "parameters": {"max_new_tokens": new_tokens}})
            for prompt, new_tokens in (("Hello world", 100), ("Good day", 10))]  # two tokens each


def _first_client_leaves_after_two_lines():
    seen: dict[int, int] = {}

    def on_line(position: int, line: dict) -> bool:
        seen[position] = seen.get(position, 0) + 1
        return not (position == 0 and seen[position] == 2)

    return on_line


def test_a_cancelled_stream_stops_the_adapter_generation(
        neuron_env, tiny_gptj, tmp_path, record_steps, reference) -> None:
    handler = ModelHandler()
    handler.initialize(_props(tiny_gptj, tmp_path))
    log = record_steps(handler.engine.backend)
    gone, kept = handler.generate_many(_stream_requests(), on_line=_first_client_leaves_after_two_lines())
    assert len(gone) == 2 and len(kept) == 10 and kept[-1]["generated_text"] == reference("Good day", 10)
    assert log.steps == [10]  # the 100-token row stopped after 2; the batch ended with its mate
    (gone,) = handler.generate_many(_stream_requests()[:1], on_line=_first_client_leaves_after_two_lines())
    assert len(gone) == 2 and log.steps == [10, 2]  # alone with a padding row (done from the start): stops


def test_the_sample_fallback_stops_delivering_a_cancelled_stream(
        neuron_env, tiny_gptj, tmp_path, monkeypatch, record_steps) -> None:
    monkeypatch.setitem(sys.modules, "transformers_neuronx.generation_utils", None)
    handler = ModelHandler()
    handler.initialize(_props(tiny_gptj, tmp_path))
    log = record_steps(handler.engine.backend)
    (gone,) = handler.generate_many(_stream_requests()[:1], on_line=_first_client_leaves_after_two_lines())
    # sample() has already generated every token on the device; only their replay to the client stops.
    assert len(gone) == 2 and log.steps == [2]
    assert neuron_env.instances[0].sample_calls == 2  # warm-up and the request
