"""Planner checks on GPT-J-6B, with expectations derived from the arithmetic."""
from __future__ import annotations

import math

import pytest
from inf2_deploy.errors import ConfigError, PlanError
from inf2_deploy.spec.catalog import GIB, GPTJ_6B_CONFIG, INSTANCES, ModelFacts, gptj_tensor_shapes
from inf2_deploy.spec.deployment_spec import load_spec
from inf2_deploy.spec.planner import (
    RUNTIME_RESERVE_BYTES,
    make_plan,
    memory_per_core,
    plan,
)

FAKE_IMAGE = "123.dkr.ecr.{region}.amazonaws.com/djl-inference:{version}-neuronx"


def fake_resolver(region: str, version: str) -> str:
    return FAKE_IMAGE.format(region=region, version=version)


def gptj_plan(**settings):
    return make_plan(load_spec(region="us-east-1", **settings), image_resolver=fake_resolver)


GPTJ = ModelFacts.from_config(GPTJ_6B_CONFIG, source="gpt-j-6b")


def test_parameter_count_is_summed_from_gptj_shapes():
    # 6.05e9 is the published size; we derive it from the layer shapes.
    assert GPTJ.parameters == 6_050_882_784
    embd, inner, vocab = 4096, 16384, 50400
    per_layer = 4 * embd * embd + 2 * embd * inner + inner + embd + 2 * embd
    assert GPTJ.parameters == 2 * vocab * embd + vocab + 28 * per_layer + 2 * embd
    assert len(gptj_tensor_shapes(GPTJ_6B_CONFIG)) == 1 + 28 * 10 + 2 + 2


@pytest.mark.parametrize(
    ("tp", "n_positions", "batch", "dtype"),
    [(1, 1024, 1, "fp16"), (2, 512, 1, "fp16"), (8, 1024, 4, "bf16"), (2, 2048, 1, "fp32")],
)
def test_memory_per_core_arithmetic(tp, n_positions, batch, dtype):
    memory = memory_per_core(GPTJ, tp=tp, n_positions=n_positions, batch_size=batch, dtype=dtype)
    width = {"fp16": 2, "bf16": 2, "fp32": 4}[dtype]
    assert memory.weights == math.ceil(GPTJ.parameters * width / tp)
    assert memory.kv_cache == math.ceil(2 * 28 * batch * n_positions * 4096 * width / tp)
    assert memory.total == memory.weights + memory.kv_cache + RUNTIME_RESERVE_BYTES
    assert memory.limit == 16 * GIB


# (settings, ok, field at fault)
TABLE = [
    ({"instance_type": "ml.inf2.8xlarge", "tensor_parallel_degree": 2, "n_positions": 512}, True, None),
    ({"instance_type": "ml.inf2.48xlarge", "tensor_parallel_degree": 8, "n_positions": 1024, "batch_size": 4},
     True, None),
    ({"instance_type": "ml.inf2.xlarge", "tensor_parallel_degree": 2}, True, None),
    ({"instance_type": "ml.inf2.8xlarge", "tensor_parallel_degree": 2, "dtype": "bf16"}, True, None),
    ({"tensor_parallel_degree": 3}, False, "tensor_parallel_degree"),  # 16 heads % 3
    ({"tensor_parallel_degree": 16, "instance_type": "ml.inf2.48xlarge"}, False, "tensor_parallel_degree"),
    ({"tensor_parallel_degree": 24, "instance_type": "ml.inf2.48xlarge"}, False, "tensor_parallel_degree"),
    ({"instance_type": "ml.inf2.xlarge", "tensor_parallel_degree": 4}, False, "tensor_parallel_degree"),
    ({"instance_type": "ml.inf2.24xlarge", "tensor_parallel_degree": 8, "dtype": "fp16"}, True, None),
    # fp32 weights alone are 22.5 GiB: one core cannot hold them.
    ({"instance_type": "ml.inf2.8xlarge", "tensor_parallel_degree": 1, "dtype": "fp32"},
     False, "tensor_parallel_degree"),
    ({"instance_type": "ml.inf2.8xlarge", "tensor_parallel_degree": 2, "dtype": "fp32"}, True, None),
    ({"n_positions": 4096}, False, "n_positions"),
    # A batch of 32 at 2048 positions needs 30 GiB of fp16 KV cache on one core.
    ({"instance_type": "ml.inf2.8xlarge", "tensor_parallel_degree": 1, "n_positions": 2048, "batch_size": 32},
     False, "tensor_parallel_degree"),
]


@pytest.mark.parametrize(("settings", "ok", "field"), TABLE)
def test_plan_table(settings, ok, field):
    result = gptj_plan(**settings)
    assert result.ok is ok, result.errors
    if ok:
        memory = result.memory_per_core
        assert memory.total <= memory.limit
        assert result.image_uri == FAKE_IMAGE.format(region="us-east-1", version="0.29.0")
    else:
        assert field in [name for name, _ in result.errors]
        with pytest.raises(PlanError) as info:
            result.raise_for_errors()
        assert info.value.field == field
        assert info.value.exit_code == 2


def test_error_messages_name_the_fix():
    heads = gptj_plan(tensor_parallel_degree=3).errors[0][1]
    assert "16 attention heads" in heads and "[1, 2, 4, 8]" in heads
    cores = gptj_plan(instance_type="ml.inf2.xlarge", tensor_parallel_degree=4).errors[0][1]
    assert "2 NeuronCores of ml.inf2.xlarge" in cores and "ml.inf2.24xlarge" in cores
    hbm = gptj_plan(instance_type="ml.inf2.8xlarge", tensor_parallel_degree=1, dtype="fp32").errors[0][1]
    assert "GiB per NeuronCore" in hbm and "raise tp" in hbm
    positions = gptj_plan(n_positions=4096).errors[0][1]
    assert "4096" in positions and "2048" in positions


def test_recommends_cheapest_safe_instance_and_the_tp_that_uses_its_cores():
    result = gptj_plan()
    assert result.ok
    cheapest_safe = [c for c in result.alternatives if not c.host_ram_tight][0]
    assert (result.instance.name, result.tensor_parallel_degree) == (
        cheapest_safe.instance_type, cheapest_safe.tensor_parallel_degree)
    # tp 1 and tp 2 cost the same on the 8xlarge; tp 2 puts both of its NeuronCores to work.
    assert (result.instance.name, result.tensor_parallel_degree) == ("ml.inf2.8xlarge", 2)
    assert not any("NeuronCores" in warning for warning in result.warnings)
    order = [(c.host_ram_tight, c.price_per_hour, -c.tensor_parallel_degree) for c in result.alternatives]
    assert order == sorted(order)
    # every alternative really fits and has a valid tp
    for candidate in result.alternatives:
        assert candidate.memory_per_core.fits
        assert 16 % candidate.tensor_parallel_degree == 0
        assert candidate.tensor_parallel_degree <= INSTANCES[candidate.instance_type].neuron_cores


@pytest.mark.parametrize(("instance_type", "dtype", "tp"), [
    ("ml.inf2.8xlarge", "fp16", 2),
    ("ml.inf2.8xlarge", "fp32", 2),  # fp32 does not fit on one core anyway
    ("ml.inf2.24xlarge", "fp16", 8),  # 12 cores, but 16 heads allow at most 8
    ("ml.inf2.48xlarge", "bf16", 8),
])
def test_on_a_given_instance_the_most_cores_the_heads_allow(instance_type, dtype, tp):
    result = gptj_plan(instance_type=instance_type, dtype=dtype)
    assert result.ok and result.tensor_parallel_degree == tp
    assert not any("NeuronCores" in warning for warning in result.warnings)
    assert {c.instance_type for c in result.alternatives} == {instance_type}


def test_a_lower_tp_given_is_kept_with_a_warning_naming_the_higher_one():
    result = gptj_plan(instance_type="ml.inf2.24xlarge", tensor_parallel_degree=2)
    assert result.ok and result.tensor_parallel_degree == 2
    assert any("tp 2 uses 2 of the 12 NeuronCores" in w and "tp 8 fits too" in w for w in result.warnings)


def _pairs(result):
    return [(c.instance_type, c.tensor_parallel_degree) for c in result.alternatives]


def test_an_invalid_plan_offers_only_the_configurations_that_fix_it():
    result = gptj_plan(instance_type="ml.inf2.xlarge", tensor_parallel_degree=4)
    assert not result.ok
    # Each keeps one of the two settings given: tp 4 on a bigger instance, or the xlarge with a smaller tp.
    assert _pairs(result) == [("ml.inf2.24xlarge", 4), ("ml.inf2.48xlarge", 4), ("ml.inf2.xlarge", 2),
                              ("ml.inf2.xlarge", 1)]
    for instance_type, tp in _pairs(result):
        assert gptj_plan(instance_type=instance_type, tensor_parallel_degree=tp).ok
    # fp32 on one core of the 8xlarge: only tp 2 there fixes it, so no other instance is offered.
    assert _pairs(gptj_plan(instance_type="ml.inf2.8xlarge", tensor_parallel_degree=1, dtype="fp32")) == [
        ("ml.inf2.8xlarge", 2)]
    # 16 heads and tp 3: any instance will do with a degree that divides them.
    fixes = gptj_plan(tensor_parallel_degree=3).alternatives
    assert fixes and all(16 % c.tensor_parallel_degree == 0 for c in fixes)


def test_no_configuration_is_offered_for_an_error_that_no_instance_or_tp_fixes():
    result = gptj_plan(instance_type="ml.inf2.8xlarge", n_positions=4096)
    assert [name for name, _ in result.errors] == ["n_positions"] and result.alternatives == []
    # Both kinds at once: fixing the tp alone would still leave n_positions wrong.
    both = gptj_plan(instance_type="ml.inf2.xlarge", tensor_parallel_degree=4, n_positions=4096)
    assert {name for name, _ in both.errors} == {"n_positions", "tensor_parallel_degree"}
    assert both.alternatives == []


def test_host_ram_warning_on_xlarge():
    result = gptj_plan(instance_type="ml.inf2.xlarge", tensor_parallel_degree=2)
    assert result.ok
    assert any("16 GiB host RAM" in warning for warning in result.warnings)
    assert not any("host RAM" in w for w in gptj_plan(instance_type="ml.inf2.8xlarge").warnings)


def test_buckets_are_powers_of_two_up_to_n_positions():
    assert gptj_plan(n_positions=1024).buckets == [128, 256, 512, 1024]
    assert gptj_plan(n_positions=600).buckets == [128, 256, 512, 600]


def test_tiny_gptj_fits_with_tp_1_2_4():
    for tp in (1, 2, 4):
        result = make_plan(load_spec(model="tiny-gptj", region="us-east-1", tensor_parallel_degree=tp,
                                     n_positions=1024), image_resolver=fake_resolver)
        assert result.ok, result.errors


def test_image_lookup_failure_is_a_field_error():
    def no_image(region: str, version: str) -> str:
        from inf2_deploy.errors import ImageNotFoundError

        raise ImageNotFoundError("no image", field="region", value=region)

    result = make_plan(load_spec(region="af-south-1"), image_resolver=no_image)
    assert ("region", "no image") in result.errors


def test_image_uri_override_skips_lookup():
    def must_not_call(region: str, version: str) -> str:
        raise AssertionError("looked up an image despite image_uri")

    result = make_plan(load_spec(region="us-east-1", image_uri="my/image:1"), image_resolver=must_not_call)
    assert result.image_uri == "my/image:1"


def test_unsupported_model_type_lists_supported(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    with pytest.raises(ConfigError) as info:
        plan(model=str(tmp_path), region="us-east-1")
    assert info.value.field == "model"
    assert "gptj" in str(info.value)


def test_local_folder_config_is_read(tmp_path):
    config = dict(GPTJ_6B_CONFIG, n_layer=2)
    import json

    (tmp_path / "config.json").write_text(json.dumps(config))
    result = make_plan(load_spec(model=str(tmp_path), region="us-east-1"), image_resolver=fake_resolver)
    assert result.model.n_layer == 2
    assert result.model.parameters < GPTJ.parameters
