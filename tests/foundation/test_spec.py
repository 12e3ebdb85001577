"""Spec loading and validation: files, overrides, and errors naming the field."""
from __future__ import annotations

import pytest
from inf2_deploy.errors import ConfigError
from inf2_deploy.spec.deployment_spec import DeploymentSpec, load_spec


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
        assert field in DeploymentSpec.model_fields
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
