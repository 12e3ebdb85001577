"""``inf2-deploy plan`` as a user runs it: exit codes, JSON keys, one-line errors."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

CLI = [sys.executable, "-m", "inf2_deploy.cli"]


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


def test_invalid_plan_table_output_exits_2():
    result = run_cli("plan", "--instance-type", "ml.inf2.xlarge", "--tp-degree", "4")
    assert result.returncode == 2
    assert "tensor_parallel_degree: tp 4 exceeds the 2 NeuronCores" in " ".join(result.stdout.split())


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
