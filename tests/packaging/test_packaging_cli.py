"""``inf2-deploy package`` as a user runs it: a real subprocess."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from inf2_deploy.artifact.manifest import Artifact


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "AWS_DEFAULT_REGION": "us-east-1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "inf2_deploy.cli", "package", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.slow
def test_package_builds_then_skips(tmp_path: Path, cache_dir: Path) -> None:
    args = ("--model", "tiny-gptj", "--output", str(tmp_path / "art"), "--cache-dir", str(cache_dir),
            "--instance-type", "ml.inf2.xlarge", "--dtype", "bf16", "--max-shard-mib", "4")
    first = run_cli(*args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    artifact = Artifact.load(tmp_path / "art")
    assert "(built)" in first.stdout and artifact.fingerprint in first.stdout
    assert f"{artifact.total_bytes:,}" in first.stdout
    assert artifact.conversion == {"dtype": "bf16", "max_shard_bytes": 4 * 1024**2}
    assert sum(f.path.endswith(".safetensors") for f in artifact.files) == 4
    second = run_cli(*args, cwd=tmp_path)
    assert second.returncode == 0 and "up to date, skipped" in second.stdout
    assert Artifact.load(tmp_path / "art") == artifact


@pytest.mark.slow
def test_invalid_plan_exits_2_with_one_line(tmp_path: Path, cache_dir: Path) -> None:
    result = run_cli("--model", "tiny-gptj", "--output", str(tmp_path / "art"), "--cache-dir", str(cache_dir),
                     "--instance-type", "ml.inf2.xlarge", "--tp-degree", "8", cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: tensor_parallel_degree:"), result.stderr
    assert not (tmp_path / "art").exists()


def test_missing_checkpoint_exits_2(tmp_path: Path) -> None:
    result = run_cli("--model", str(tmp_path / "nothing"), "--output", str(tmp_path / "art"), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("error: model:") and len(result.stderr.strip().splitlines()) == 1


def test_cli_shard_default_matches_the_converter():
    from inf2_deploy.artifact.convert import DEFAULT_MAX_SHARD_BYTES
    from inf2_deploy.cli.package_cmd import DEFAULT_MAX_SHARD_MIB

    assert DEFAULT_MAX_SHARD_MIB * 1024**2 == DEFAULT_MAX_SHARD_BYTES
