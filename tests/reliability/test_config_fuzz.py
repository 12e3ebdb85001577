"""Invalid deployment settings are rejected before any AWS call, and every error names its field.

Every boto3 client created during these tests records its calls, and
AWS_ENDPOINT_URL points at a closed local port, so a call that slipped through
would be both recorded and unable to reach AWS.
"""
from __future__ import annotations

import inspect
import math
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from fuzz_budget import examples
from hypothesis import HealthCheck, assume, event, example, given, settings
from hypothesis import strategies as st
from inf2_deploy.api import deploy_gptj
from inf2_deploy.cli import main
from inf2_deploy.errors import ConfigError, ModelSourceError
from inf2_deploy.spec.deployment_spec import DeploymentSpec, load_spec
from inf2_deploy.spec.planner import make_plan
from support.aws import ROLE

API_EXAMPLES = examples(200)
CONFIG_FILE_EXAMPLES = examples(100)
BASE = {"model": "tiny-gptj", "instance_type": "ml.inf2.xlarge", "region": "us-east-1", "role_arn": ROLE}
# deploy_gptj's own keyword for a spec field, where it differs
API_NAMES = {"role_arn": "role"}
API_PARAMETERS = set(inspect.signature(deploy_gptj).parameters) - {"spec"}
FIELDS = tuple(DeploymentSpec.model_fields)

junk = st.one_of(
    st.text(max_size=80),
    st.sampled_from(["", " ", "-", "a" * 64, "a" * 300, "x\ny", "../..", "s3://", "/opt/ml/model/cache", "aws:x",
                     "ml.inf2.2xlarge", "fp8", "arn:aws:iam::1:role/x", "UPPER_case", "us-east-99x"]),
    st.integers(min_value=-(10**12), max_value=10**12),
    st.sampled_from([0, -1, 3, 5, 7, 24, 4096, 10**6, 2**63]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.lists(st.text(max_size=6), max_size=3),
    st.dictionaries(st.text(max_size=12), st.one_of(st.text(max_size=12), st.integers()), min_size=1, max_size=3),
)
unknown_names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=14).filter(
    lambda name: name not in FIELDS and name not in API_PARAMETERS and name != "config_file")


@pytest.fixture
def no_aws(fake_aws_env: dict[str, str], record_aws_calls, monkeypatch: pytest.MonkeyPatch):  # noqa: ANN001, ANN201
    """Fake credentials, every call recorded, and nowhere for a call to go."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return record_aws_calls


# What "refused before any AWS call" raises: a bad setting, or a model reference that names nothing.
REFUSED = (ConfigError, ModelSourceError)


def _fields(error: ConfigError | ModelSourceError) -> set[str]:
    problems = getattr(error, "problems", [(error.field or "", "")])
    return {field.split(".")[0] for field, _ in problems}


def _invalid(values: dict[str, Any]) -> bool:
    """True when the spec cannot be built or its plan cannot work (what deploy must refuse)."""
    try:
        return not make_plan(load_spec(**values)).ok
    except REFUSED:
        return True


@settings(max_examples=API_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                        HealthCheck.filter_too_much])
@given(field=st.sampled_from(FIELDS) | st.sampled_from(FIELDS) | st.sampled_from(FIELDS) | unknown_names, value=junk)
@example(field="model", value="a" * 300)  # once a raw OSError [Errno 36] from the folder lookup
def test_invalid_setting_is_refused_by_the_api_before_any_aws_call(no_aws, field: str, value: Any) -> None:  # noqa: ANN001
    # A model string with "/" may be a Hugging Face id, which planning would look up on the Hub.
    assume(not (field == "model" and isinstance(value, str) and "/" in value))
    assume(_invalid({**BASE, field: value}))
    arguments = {API_NAMES.get(name, name): setting for name, setting in {**BASE, field: value}.items()}
    with pytest.raises(REFUSED) as refused:
        deploy_gptj(**arguments)
    event(f"refused: {field if field in FIELDS else 'unknown setting'}")
    assert field in _fields(refused.value) or field in str(refused.value), (field, value, str(refused.value))
    assert no_aws.calls == []


@settings(max_examples=CONFIG_FILE_EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.filter_too_much])
@given(overrides=st.dictionaries(st.sampled_from(FIELDS) | unknown_names, junk, min_size=1, max_size=3).filter(
    lambda o: not (isinstance(o.get("model"), str) and "/" in o["model"])))
@example(overrides={"model": "a" * 300})  # once a raw OSError [Errno 36] from the folder lookup
def test_invalid_config_file_exits_2_naming_a_field_before_any_aws_call(
        no_aws, capsys: pytest.CaptureFixture[str], overrides: dict[str, Any]) -> None:  # noqa: ANN001
    values = {**BASE, **overrides}
    values = {k: v for k, v in values.items() if not (isinstance(v, float) and math.isnan(v))}  # YAML .nan != .nan
    assume(all(v is not None for v in values.values()))
    assume(_invalid(values))
    with tempfile.TemporaryDirectory() as folder:
        config = Path(folder) / "deploy.yaml"
        config.write_text(yaml.safe_dump(values), encoding="utf-8")
        code = main(["deploy", "--config", str(config)])
    # strip(): the progress display may leave an empty line before the error
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    first, *others = err.splitlines()  # one line per further problem, indented
    assert first.startswith("error: ") and all(line.startswith("  ") for line in others), err
    named = first.removeprefix("error: ").split(":", 1)[0].split(".")[0]
    assert named in {*overrides, "role_arn", "config"}, (overrides, err)
    assert no_aws.calls == []


BAD_SETTINGS = [
    ("endpoint_name", "-starts-with-hyphen"),
    ("endpoint_name", "a" * 64),
    ("endpoint_name", "under_score"),
    ("endpoint_name", "with space"),
    ("endpoint_name", ""),
    ("tags", {"aws:reserved": "x"}),
    ("tags", {"": "empty key"}),
    ("tags", {"k" * 129: "long key"}),
    ("tags", {"key": "v" * 257}),
    ("tags", {"key": "new\nline"}),
    ("tags", {"key": "semi;colon"}),
    ("env", {"HF_TOKEN": "hf_x"}),
    ("env", {"AWS_SECRET_ACCESS_KEY": "x"}),
    ("env", {"1BAD": "x"}),
    ("env", {"OK": "new\nline"}),
    ("role_arn", "arn:aws:iam::123:role/short-account"),
    ("role_arn", "arn:aws:iam::123456789012:user/not-a-role"),
    ("bucket", "Upper-Case"),
    ("bucket", "xn--punycode"),
    ("bucket", "a..b"),
    ("prefix", "a/../b"),
    ("kms_key_id", "not a key"),
    ("region", "mars-1"),
    ("instance_type", "ml.g5.xlarge"),
    ("instance_count", 0),
    ("tensor_parallel_degree", 3),
    ("n_positions", 4096),
    ("batch_size", 0),
    ("dtype", "fp8"),
    ("compile_cache_url", "/opt/ml/model/cache"),
    ("compile_cache_url", "relative/path"),
    ("volume_size_gb", 0),
    ("startup_health_check_timeout", 10),
    ("price_per_hour", -1.0),
    ("model", " "),
    ("no_such_setting", 1),
]


@pytest.mark.parametrize(("field", "value"), BAD_SETTINGS)
def test_table_of_invalid_settings(no_aws, field: str, value: Any, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: ANN001
    arguments = {API_NAMES.get(name, name): setting for name, setting in {**BASE, field: value}.items()}
    with pytest.raises(ConfigError) as refused:
        deploy_gptj(**arguments)
    assert field in _fields(refused.value), str(refused.value)
    assert no_aws.calls == []


@pytest.mark.parametrize("argv", [
    ["--endpoint-name", "bad_name"],
    ["--tag", "aws:x=1"],
    ["--tag", "novalue"],
    ["--env", "HF_TOKEN=hf_x"],
    ["--bucket", "UPPER"],
    ["--tp-degree", "3"],
    ["--n-positions", "100000"],
    ["--kms-key", "nope"],
    ["--region", "nowhere"],
])
def test_cli_flags_exit_2_naming_the_field_before_any_aws_call(
        no_aws, argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:  # noqa: ANN001
    assert main(["deploy", "--model", "tiny-gptj", "--instance-type", "ml.inf2.xlarge", "--role", ROLE,
                 "--region", "us-east-1", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    assert no_aws.calls == []


def test_missing_role_is_refused_before_any_aws_call(no_aws) -> None:  # noqa: ANN001
    with pytest.raises(ConfigError) as refused:
        deploy_gptj("tiny-gptj", instance_type="ml.inf2.xlarge", region="us-east-1")
    assert refused.value.field == "role_arn"
    assert no_aws.calls == []
