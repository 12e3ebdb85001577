"""Spec loading and validation: files, overrides, and errors naming the field."""
from __future__ import annotations

import pytest
from inf2_deploy.errors import ConfigError
from inf2_deploy.spec.deployment_spec import DeploymentSpec, load_spec
from inf2_deploy.spec.scaling import ScalingSpec


def test_defaults():
    spec = load_spec()
    assert (spec.model, spec.dtype, spec.batch_size, spec.lmi_version) == ("gpt-j-6b", "fp16", 1, "0.29.0")
    assert spec.tensor_parallel_degree is None and spec.instance_type is None


@pytest.mark.parametrize("suffix", [".yaml", ".toml"])
def test_file_then_flags_override(tmp_path, suffix):
    path = tmp_path / f"spec{suffix}"
    if suffix == ".yaml":
        path.write_text("model: tiny-gptj\ntensor_parallel_degree: 2\nbatch_size: 4\ntags:\n  team: ml\n")
    else:
        path.write_text('model = "tiny-gptj"\ntensor_parallel_degree = 2\nbatch_size = 4\n[tags]\nteam = "ml"\n')
    spec = load_spec(path, tensor_parallel_degree=4, batch_size=None)
    assert spec.model == "tiny-gptj"
    assert spec.tensor_parallel_degree == 4  # the flag wins
    assert spec.batch_size == 4  # an unset flag leaves the file's value
    assert spec.tags == {"team": "ml"}


def test_env_and_tags_from_flags_add_to_the_files(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text("model: tiny-gptj\nenv:\n  A: '1'\n  B: file\ntags:\n  team: ml\n")
    spec = load_spec(path, env={"B": "flag", "C": "3"}, tags={"owner": "me"})
    assert spec.env == {"A": "1", "B": "flag", "C": "3"}  # the flag wins on a shared key
    assert spec.tags == {"team": "ml", "owner": "me"}


def test_spec_is_frozen():
    spec = load_spec()
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="frozen"):
        spec.model = "x"  # type: ignore[misc]
    assert spec.replace(batch_size=2).batch_size == 2


# (setting, bad value, fragment of the message)
INVALID = [
    ("endpoint_name", "under_score", "letters, digits or hyphens"),
    ("endpoint_name", "x" * 64, "1-63"),
    ("region", "mars", "us-east-1"),
    ("instance_type", "ml.g5.xlarge", "ml.inf2.xlarge"),
    ("instance_count", 0, "greater than or equal to 1"),
    ("tensor_parallel_degree", 0, "greater than or equal to 1"),
    ("batch_size", 0, "greater than or equal to 1"),
    ("dtype", "int8", "fp16"),
    ("role_arn", "arn:aws:iam::12:role/x", "IAM role ARN"),
    ("bucket", "Bad_Bucket", "S3 bucket name"),
    ("prefix", "a/../b", "'..'"),
    ("compile_cache_url", "/opt/ml/model/cache", "read-only"),
    ("compile_cache_url", "relative/path", "s3://"),
    ("env", {"HF_TOKEN": "hf_x"}, "secret"),
    ("env", {"1BAD": "x"}, "environment variable"),
    ("tags", {"aws:x": "y"}, "aws:"),
    ("kms_key_id", "not a key", "KMS"),
    ("startup_health_check_timeout", 7200, "less than or equal to 3600"),
]


@pytest.mark.parametrize(("field", "value", "fragment"), INVALID)
def test_invalid_settings_name_the_field(field, value, fragment):
    with pytest.raises(ConfigError) as info:
        load_spec(**{field: value})
    assert info.value.field == field
    assert fragment in str(info.value)
    assert info.value.exit_code == 2


def test_unknown_key_gets_the_closest_setting(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text("modle: gpt-j-6b\ninstance-typ: ml.inf2.xlarge\n")
    with pytest.raises(ConfigError) as info:
        load_spec(path)
    assert info.value.problems == [
        ("modle", "unknown setting; did you mean model? (got 'gpt-j-6b')"),
        ("instance-typ", "unknown setting; did you mean instance_type? (got 'ml.inf2.xlarge')"),
    ]


def test_unknown_key_with_nothing_close_lists_allowed(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text("colour: blue\n")
    with pytest.raises(ConfigError) as info:
        load_spec(path)
    assert info.value.field == "colour"
    assert "allowed settings are model, endpoint_name," in str(info.value)
    assert "tensor_parallel_degree" in str(info.value)


@pytest.mark.parametrize("suffix", [".yaml", ".toml"])
def test_a_file_may_use_the_cli_names(tmp_path, suffix):
    settings = {"instance-type": '"ml.inf2.24xlarge"', "tp": "4", "batch-size": "2", "role":
                '"arn:aws:iam::123456789012:role/R"', "kms-key": '"alias/k"', "startup-timeout": "600",
                "network-isolation": "true"}
    path = tmp_path / f"spec{suffix}"
    separator = ": " if suffix == ".yaml" else " = "
    path.write_text("".join(f"{key}{separator}{value}\n" for key, value in settings.items()))
    spec = load_spec(path)
    assert (spec.instance_type, spec.tensor_parallel_degree, spec.batch_size) == ("ml.inf2.24xlarge", 4, 2)
    assert (spec.role_arn, spec.kms_key_id) == ("arn:aws:iam::123456789012:role/R", "alias/k")
    assert (spec.startup_health_check_timeout, spec.enable_network_isolation) == (600, True)


def test_a_field_name_with_hyphens_is_the_field(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text("tensor-parallel-degree: 2\nenable-network-isolation: true\n")
    spec = load_spec(path)
    assert (spec.tensor_parallel_degree, spec.enable_network_isolation) == (2, True)


def test_two_spellings_of_one_setting_are_refused(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text("tp: 2\ntensor_parallel_degree: 4\ninstance_type: ml.inf2.xlarge\ninstance-type: ml.inf2.8xlarge\n")
    with pytest.raises(ConfigError) as info:
        load_spec(path)
    assert [field for field, _ in info.value.problems] == ["tensor_parallel_degree", "instance-type"]
    assert "sets tensor_parallel_degree again (tp set it already" in str(info.value)


def test_the_cli_names_cover_every_spec_flag():
    from inf2_deploy.cli.spec_flags import DEPLOY_FLAGS, PLAN_FLAGS, config_aliases

    aliases = config_aliases()
    for flag, field, _options in PLAN_FLAGS + DEPLOY_FLAGS:
        name = flag.removeprefix("--")
        assert aliases.get(name, name.replace("-", "_")) == field, flag
        block, _dot, inner = field.partition(".")
        assert block in DeploymentSpec.model_fields
        assert not inner or inner in ScalingSpec.model_fields
    assert aliases["tp"] == "tensor_parallel_degree"


def test_every_problem_is_collected_and_listed():
    with pytest.raises(ConfigError) as info:
        load_spec(batch_size=0, dtype="int8", region="mars")
    assert [field for field, _ in info.value.problems] == ["region", "batch_size", "dtype"]
    lines = str(info.value).splitlines()
    assert lines[0].startswith("region: must look like us-east-1")
    assert [line.split(":")[0] for line in lines[1:]] == ["  batch_size", "  dtype"]
    assert "more problem" not in str(info.value)


@pytest.mark.parametrize(("name", "text", "fragment"), [
    ("spec.yaml", "model: [unclosed", "not valid YAML"),
    ("spec.toml", "model = ", "not valid TOML"),
    ("spec.json", "{}", "must end in .yaml"),
    ("spec.yaml", "- a list\n", "mapping"),
])
def test_bad_files(tmp_path, name, text, fragment):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_spec(path)
    assert info.value.field == "config"
    assert fragment in str(info.value)


def test_missing_file():
    with pytest.raises(ConfigError, match="cannot read"):
        load_spec("/nonexistent/spec.yaml")


def test_every_field_has_a_description():
    for name, field in DeploymentSpec.model_fields.items():
        assert field.description, name


def test_scaling_defaults_follow_the_batch_size():
    spec = load_spec(batch_size=4, scaling={"max_instances": 3})
    assert spec.scaling is not None
    assert (spec.scaling.min_instances, spec.scaling.metric) == (1, "concurrency")
    assert (spec.scaling.scale_out_cooldown, spec.scaling.scale_in_cooldown) == (300, 900)
    assert spec.scaling.target_for(spec.batch_size) == 3.0  # 0.75 x batch_size
    assert spec.scaling.predefined_metric == "SageMakerVariantConcurrentRequestsPerModelHighResolution"
    assert load_spec().scaling is None


def test_scaling_starts_at_min_instances_unless_a_count_is_given():
    assert load_spec(scaling={"min_instances": 2, "max_instances": 4}).instance_count == 2
    assert load_spec(instance_count=3, scaling={"min_instances": 2, "max_instances": 4}).instance_count == 3


@pytest.mark.parametrize(("scaling", "field", "fragment"), [
    ({"min_instances": 0, "max_instances": 2}, "scaling.min_instances", "greater than or equal to 1"),
    ({"min_instances": 3, "max_instances": 2}, "scaling.max_instances", "at least min_instances (3)"),
    ({"max_instances": 2, "target": 0}, "scaling.target", "greater than 0"),
    ({"max_instances": 2, "metric": "invocations"}, "scaling.target", "--from-bench FILE"),
    ({"max_instances": 2, "metric": "gpu"}, "scaling.metric", "concurrency"),
    ({"max_instances": 2, "cooldown": 5}, "scaling.cooldown", "unknown setting"),
])
def test_invalid_scaling_names_the_field(scaling, field, fragment):
    with pytest.raises(ConfigError) as info:
        load_spec(scaling=scaling)
    assert info.value.problems[0][0] == field
    assert fragment in str(info.value)


def test_a_count_outside_the_scaling_range_is_refused():
    with pytest.raises(ConfigError, match="instance_count 5 must lie within min_instances..max_instances"):
        load_spec(instance_count=5, scaling={"max_instances": 4})


def _bench_file(tmp_path, levels, instance_count=1):
    import json

    path = tmp_path / "bench.json"
    path.write_text(json.dumps({"instance_count": instance_count, "levels": [
        {"concurrency": c, "ttft_s": {"p50": ttft}, "requests_per_second": rps} for c, ttft, rps in levels]}))
    return path


def test_an_invocations_target_comes_from_the_bench_knee(tmp_path):
    # p50 TTFT 0.2 s at concurrency 1; the knee is 4 (0.35 <= 2 x 0.2), 8 is past it (0.9).
    path = _bench_file(tmp_path, [(4, 0.35, 2.0), (1, 0.2, 0.6), (8, 0.9, 2.5)], instance_count=2)
    spec = load_spec(scaling={"max_instances": 4, "from_bench": str(path)})
    assert spec.scaling is not None and spec.scaling.metric == "invocations"
    assert spec.scaling.target == 30.0  # 2.0 req/s x 60 / 2 instances x 0.5
    assert spec.replace(batch_size=2).scaling == spec.scaling  # re-validates unchanged
    explicit = load_spec(scaling={"max_instances": 4, "from_bench": str(path), "target": 7})
    assert explicit.scaling is not None and explicit.scaling.target == 7.0


def test_a_bad_bench_file_names_the_scaling_block(tmp_path):
    with pytest.raises(ConfigError, match="no bench level"):
        load_spec(scaling={"max_instances": 2, "from_bench": str(_bench_file(tmp_path, []))})
    with pytest.raises(ConfigError, match="cannot read the bench result"):
        load_spec(scaling={"max_instances": 2, "from_bench": str(tmp_path / "missing.json")})


def test_scaling_flags_and_file_names_build_the_block(tmp_path):
    import argparse

    from inf2_deploy.cli.spec_flags import add_spec_flags, spec_from_args

    path = tmp_path / "spec.yaml"
    path.write_text("max-instances: 6\nscale-in-cooldown: 600\n")
    parser = argparse.ArgumentParser()
    add_spec_flags(parser, deploy=True)
    args = parser.parse_args(["--config", str(path), "--min-instances", "2", "--scale-metric", "invocations",
                              "--scale-target", "120"])
    scaling = spec_from_args(args).scaling
    assert scaling == ScalingSpec(min_instances=2, max_instances=6, metric="invocations", target=120,
                                  scale_in_cooldown=600)
