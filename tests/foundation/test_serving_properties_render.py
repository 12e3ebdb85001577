"""serving.properties: deterministic key=value lines that parse back."""
from __future__ import annotations

import pytest
from inf2_deploy.artifact.djl_properties import PropertiesError, handler_properties
from inf2_deploy.artifact.properties import parse_properties, render_properties
from inf2_deploy.errors import ConfigError
from inf2_deploy.spec.deployment_spec import load_spec
from inf2_deploy.spec.planner import make_plan


def planned(**settings):
    return make_plan(load_spec(region="us-east-1", **settings), image_resolver=lambda r, v: "img")


def test_render_for_plan_round_trips():
    plan = planned(instance_type="ml.inf2.48xlarge", tensor_parallel_degree=8, n_positions=1024, batch_size=4,
                   neuron_cc_flags="--model-type=transformer -O1")
    text = render_properties(plan.serving_properties)
    assert text == render_properties(plan.serving_properties)  # deterministic
    for line in text.splitlines():
        key, _, value = line.partition("=")
        assert key == key.strip() and value == value.strip()
    parsed = parse_properties(text)
    assert parsed == plan.serving_properties
    assert parsed["engine"] == "Python"
    assert parsed["option.entryPoint"] == "model.py"
    assert parsed["option.tensor_parallel_degree"] == "8"
    assert parsed["option.n_positions"] == "1024"
    assert parsed["option.batch_size"] == "4"
    assert parsed["option.dtype"] == "fp16"
    assert parsed["option.model_loading_timeout"] == "3600"
    assert parsed["option.neuron_cc_flags"] == "--model-type=transformer -O1"
    assert parsed["option.rolling_batch"] == "auto" and parsed["option.max_rolling_batch_size"] == "32"
    assert "batch_size" not in parsed and "max_batch_delay" not in parsed  # DJL's dynamic batching is off


def test_model_id_only_when_weights_are_remote():
    from inf2_deploy.artifact.properties import serving_properties

    plan = planned()
    assert "option.model_id" not in serving_properties(plan)
    assert serving_properties(plan, model_id="s3://b/p/")["option.model_id"] == "s3://b/p/"


@pytest.mark.parametrize(("mapping", "field"), [
    ({"option.x": "a\nb"}, "option.x"),
    ({"option x": "1"}, "option x"),
    ({"a=b": "1"}, "a=b"),
    ({"option.y": " padded"}, "option.y"),
])
def test_render_rejects_unsafe(mapping, field):
    with pytest.raises(ConfigError) as info:
        render_properties(mapping)
    assert info.value.field == field


def test_parse_refuses_spaced_keys_and_skips_comments():
    assert parse_properties("# comment\n\nengine=Python\noption.a=b=c\n") == {"engine": "Python", "option.a": "b=c"}
    with pytest.raises(PropertiesError, match="no spaces"):
        parse_properties("option.dtype = fp16\n")
    with pytest.raises(PropertiesError, match="key=value"):
        parse_properties("justtext\n")


def test_handler_sees_options_without_prefix():
    seen = handler_properties({"engine": "Python", "option.dtype": "fp16", "batch_size": "4"}, "/opt/ml/model")
    assert seen["dtype"] == "fp16" and seen["model_dir"] == "/opt/ml/model" and seen["batch_size"] == "4"
