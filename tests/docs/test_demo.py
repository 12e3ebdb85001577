"""``make demo`` runs the whole local pipeline; its Python entry runs here end to end."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_demo_runs_every_step_and_tears_down(tmp_path):
    env = {**os.environ, "INF2_DEPLOY_HOME": str(tmp_path / "home")}
    env.pop("AWS_REGION", None)
    result = subprocess.run([sys.executable, str(REPO / "tools" / "demo.py"), "--workdir", str(tmp_path)],
                            capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for step in ("inf2-deploy plan", "inf2-deploy package", "inf2-deploy deploy --local", "inf2-deploy invoke",
                 "--stream", "inf2-deploy bench", "inf2-deploy delete"):
        assert step in result.stdout
    assert "inf2-deploy deploy --model EleutherAI/gpt-j-6b" in result.stdout  # the real AWS command
    results = json.loads((tmp_path / "bench.json").read_text())
    assert results  # written by the bench step
    assert (tmp_path / "bench.png").read_bytes().startswith(b"\x89PNG")
    assert (tmp_path / "artifact" / "manifest.json").is_file()
    # torn down: no local deployment record is left
    assert not list((tmp_path / "home" / "local").glob("*.json"))
