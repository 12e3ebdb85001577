"""The spec's rolling_batch: what serving.properties says to DJL and to our handler, and how a user sets it."""
from __future__ import annotations

from pathlib import Path

import pytest
from inf2_deploy.artifact.djl_properties import handler_properties
from inf2_deploy.artifact.properties import parse_properties, render_properties, serving_properties
from inf2_deploy.cli import build_parser
from inf2_deploy.cli.spec_flags import spec_from_args
from inf2_deploy.errors import ConfigError
from inf2_deploy.spec.deployment_spec import load_spec
from inf2_deploy.spec.planner import check_plan, make_plan
from inf2_serving.config import ServingConfig

DYNAMIC_KEYS = {"batch_size", "max_batch_delay"}


def _properties(**settings) -> dict[str, str]:
    spec = load_spec(region="us-east-1", instance_type="ml.inf2.48xlarge", tensor_parallel_degree=8, **settings)
    return serving_properties(make_plan(spec, image_resolver=lambda region, version: "img"))


def _handler_config(properties: dict[str, str]) -> ServingConfig:
    """What our handler makes of the file in the container (DJL strips option. and adds model_dir)."""
    return ServingConfig.from_properties(handler_properties(parse_properties(render_properties(properties)),
                                                            "/opt/ml/model"))


@pytest.mark.parametrize("batch_size", [1, 4])
def test_the_rolling_batch_is_the_default_and_writes_no_dynamic_batching(batch_size: int) -> None:
    properties = _properties(batch_size=batch_size)
    assert properties["option.rolling_batch"] == "auto"
    assert properties["option.max_rolling_batch_size"] == "32"  # DJL's default; extra requests queue in ours
    assert properties["option.batch_size"] == str(batch_size)
    # DJL's LmiConfigRecommender turns the rolling batch off when the model-level batch_size is above 1.
    assert not DYNAMIC_KEYS & set(properties)
    config = _handler_config(properties)
    assert config.rolling and config.batch_size == batch_size


def test_disable_keeps_djl_dynamic_batching() -> None:
    properties = _properties(batch_size=4, rolling_batch="disable")
    assert properties["option.rolling_batch"] == "disable"
    assert (properties["batch_size"], properties["max_batch_delay"]) == ("4", "100")
    assert "option.max_rolling_batch_size" not in properties
    assert not _handler_config(properties).rolling
    assert not DYNAMIC_KEYS & set(_properties(batch_size=1, rolling_batch="disable"))


@pytest.mark.parametrize("rolling_batch", ["auto", "disable"])
def test_the_plan_refuses_neither(rolling_batch: str) -> None:
    plan = check_plan(load_spec(model="tiny-gptj", region="us-east-1", batch_size=8, rolling_batch=rolling_batch))
    assert plan.spec.rolling_batch == rolling_batch


def test_the_flag_and_the_config_key(tmp_path: Path) -> None:
    args = build_parser().parse_args(["plan", "--model", "tiny-gptj", "--rolling-batch", "disable"])
    assert spec_from_args(args).rolling_batch == "disable"
    for key in ("rolling_batch", "rolling-batch"):
        config = tmp_path / f"{key}.yaml"
        config.write_text(f"model: tiny-gptj\n{key}: disable\n")
        assert load_spec(config).rolling_batch == "disable"
    assert load_spec(config, rolling_batch="auto").rolling_batch == "auto"  # a flag wins over the file


def test_other_values_are_refused_with_the_field() -> None:
    with pytest.raises(ConfigError) as info:
        load_spec(model="tiny-gptj", rolling_batch="tnx")
    assert info.value.field == "rolling_batch" and "'auto' or 'disable'" in str(info.value)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["plan", "--rolling-batch", "lmi-dist"])
