"""``inf2-deploy plan`` as a user runs it: exit codes, JSON keys, one-line errors, the image cache."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

CLI = [sys.executable, "-m", "inf2_deploy.cli"]
IMAGE_0290 = "763104351884.dkr.ecr.us-east-1.amazonaws.com/djl-inference:0.29.0-neuronx-sdk2.19.1"


@pytest.fixture(scope="module")
def cache_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """XDG_CACHE_HOME for this module's runs: the image cache they share is not the user's."""
    return tmp_path_factory.mktemp("xdg-cache")


@pytest.fixture(autouse=True)
def _isolated_cache(cache_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache_home))


def run_cli(*args: str, **env: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "AWS_DEFAULT_REGION": "us-east-1", **env}
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=environment, timeout=120)


def test_plan_json_for_gptj_on_8xlarge():
    result = run_cli("plan", "--model", "gpt-j-6b", "--instance-type", "ml.inf2.8xlarge", "--tp-degree", "2",
                     "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    for key in ("ok", "errors", "warnings", "instance_type", "tensor_parallel_degree", "neuron_cores",
                "memory_per_core", "image_uri", "serving_properties"):
        assert key in data
    assert data["ok"] is True and data["errors"] == []
    assert data["neuron_cores"] == 2 and data["tensor_parallel_degree"] == 2
    assert set(data["memory_per_core"]) == {"weights", "kv_cache", "reserve", "total", "limit"}
    assert data["image_uri"].endswith("djl-inference:0.29.0-neuronx-sdk2.19.1")
    assert data["serving_properties"]["option.tensor_parallel_degree"] == "2"


def test_invalid_tp_exits_2_with_field_in_json():
    result = run_cli("plan", "--tp-degree", "3", "--json")
    assert result.returncode == 2
    data = json.loads(result.stdout)
    assert data["ok"] is False
    assert data["errors"][0]["field"] == "tensor_parallel_degree"


def test_invalid_plan_shows_the_errors_then_only_the_configurations_that_fix_them():
    result = run_cli("plan", "--instance-type", "ml.inf2.xlarge", "--tp-degree", "4")
    assert result.returncode == 2
    out = " ".join(result.stdout.split())
    assert out.startswith("error: tensor_parallel_degree: tp 4 exceeds the 2 NeuronCores")
    assert "Configurations that fix this" in out
    rows = [line.split("│")[1:3] for line in result.stdout.splitlines() if line.startswith("│")]
    assert [(name.strip(), int(tp)) for name, tp in rows] == [
        ("ml.inf2.24xlarge", 4), ("ml.inf2.48xlarge", 4), ("ml.inf2.xlarge", 2), ("ml.inf2.xlarge", 1)]
    # Nothing of a plan that cannot run: no settings, memory or serving.properties.
    for text in ("Plan for", "HBM per NeuronCore", "serving.properties", "Configurations that fit"):
        assert text not in out


def test_an_error_no_configuration_fixes_shows_no_table():
    result = run_cli("plan", "--instance-type", "ml.inf2.8xlarge", "--n-positions", "4096")
    assert result.returncode == 2
    assert result.stdout.startswith("error: n_positions:") and "│" not in result.stdout


def test_config_error_is_one_line_without_traceback(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text("modle: gpt-j-6b\n")
    result = run_cli("plan", "--config", str(spec))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: modle: unknown setting")


def test_config_error_in_json_mode(tmp_path):
    result = run_cli("plan", "--region", "mars", "--json")
    assert result.returncode == 2
    assert json.loads(result.stdout)["errors"][0]["field"] == "region"


def test_unknown_region_names_region():
    result = run_cli("plan", "--region", "af-south-1", "--json")
    assert result.returncode == 2
    errors = json.loads(result.stdout)["errors"]
    assert errors[0]["field"] == "region" and "af-south-1" in errors[0]["message"]


def test_bad_usage_exits_2():
    result = run_cli("plan", "--tp-degree", "two")
    assert result.returncode == 2
    assert "invalid int value" in result.stderr


def test_config_file_with_flag_override(tmp_path):
    spec = tmp_path / "spec.toml"
    spec.write_text('model = "gpt-j-6b"\ninstance_type = "ml.inf2.8xlarge"\ntensor_parallel_degree = 1\n')
    result = run_cli("plan", "--config", str(spec), "--tp-degree", "2", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["tensor_parallel_degree"] == 2


def test_table_output_shows_breakdown_and_properties():
    result = run_cli("plan", "--model", "tiny-gptj", "--tp-degree", "2")
    assert result.returncode == 0, result.stderr
    for text in ("HBM per NeuronCore", "kv_cache", "serving.properties", "option.tensor_parallel_degree=2"):
        assert text in result.stdout


def test_the_price_row_says_whose_price_it_is():
    listed = run_cli("plan", "--instance-type", "ml.inf2.8xlarge", COLUMNS="200")  # one line per row
    assert "$1.97/hour (EC2 list price; SageMaker's differs; --price-per-hour)" in listed.stdout
    given = run_cli("plan", "--instance-type", "ml.inf2.8xlarge", "--price-per-hour", "2.5")
    assert "$2.50/hour (--price-per-hour)" in given.stdout


def _plan_in_process(*args: str) -> dict:
    """``plan --json`` run in a fresh interpreter, with whether it imported the SageMaker SDK."""
    code = ("import contextlib, io, json, sys\n"
            "from inf2_deploy.cli import main\n"
            "out = io.StringIO()\n"
            "with contextlib.redirect_stdout(out):\n"
            f"    main(['plan', '--json', *{list(args)!r}])\n"
            "print(json.dumps({'plan': json.loads(out.getvalue()), 'sdk': 'sagemaker' in sys.modules}))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "AWS_DEFAULT_REGION": "us-east-1"})
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_plan_reads_the_image_cache_package_writes_and_imports_the_sdk_only_on_a_miss(tmp_path, monkeypatch):
    from inf2_deploy.artifact.image_cache import IMAGE_CACHE_NAME

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    cache_file = tmp_path / "inf2-deploy" / IMAGE_CACHE_NAME
    cold = _plan_in_process("--instance-type", "ml.inf2.8xlarge")
    assert cold["sdk"] is True and cold["plan"]["image_uri"] == IMAGE_0290
    assert list(json.loads(cache_file.read_text()).values()) == [IMAGE_0290]
    # A cached answer is used as it is, without the SDK: planted here, it shows where it came from.
    cache_file.write_text(json.dumps({key: "planted/djl:cached" for key in json.loads(cache_file.read_text())}))
    warm = _plan_in_process("--instance-type", "ml.inf2.8xlarge")
    assert warm["sdk"] is False and warm["plan"]["image_uri"] == "planted/djl:cached"


@pytest.mark.parametrize("argv", [["--help"], ["plan", "--help"]])
def test_help_imports_nothing_heavy(argv):
    code = (
        "import sys\n"
        "from inf2_deploy.cli import main\n"
        "try:\n"
        f"    main({argv!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = [m for m in ('boto3', 'botocore', 'sagemaker', 'torch', 'transformers', 'numpy', 'rich')"
        " if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "HEAVY []" in result.stdout, result.stdout + result.stderr


def test_python_api_plan():
    import inf2_deploy

    result = inf2_deploy.plan(model="gpt-j-6b", instance_type="ml.inf2.8xlarge", tensor_parallel_degree=2,
                              region="us-east-1")
    assert isinstance(result, inf2_deploy.Plan) and result.ok
