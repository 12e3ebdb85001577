"""bench end to end against a real local tiny-gptj server (CPU backend)."""
from __future__ import annotations

import json
import struct

import pytest
from inf2_deploy.cli import main

pytestmark = pytest.mark.slow

METRICS = ("ttft_s", "tpot_s", "e2e_s")


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory):
    return tmp_path_factory.mktemp("inf2-home")


@pytest.fixture(scope="module")
def deployment(home):
    from inf2_deploy.local.deploy import serve_local
    from inf2_deploy.spec.deployment_spec import DeploymentSpec

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("INF2_DEPLOY_HOME", str(home))
        spec = DeploymentSpec(model="tiny-gptj", batch_size=4, n_positions=256)
        local = serve_local(spec, name="bench-tiny", backend="cpu")
        try:
            yield local
        finally:
            local.delete()


def test_cli_bench_writes_json_with_every_metric_and_a_png(deployment, home, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("INF2_DEPLOY_HOME", str(home))
    out, plot = tmp_path / "results.json", tmp_path / "bench.png"
    code = main(["bench", deployment.name, "--concurrency", "1,2", "--requests", "4", "--prompt-tokens", "16",
                 "--max-new-tokens", "8", "--price-per-hour", "1.5", "--out", str(out), "--plot", str(plot)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "concurrency 2" in printed and "TTFT" in printed and "from --price-per-hour" in printed

    data = json.loads(out.read_text())
    assert data["target_kind"] == "local" and data["tokenizer"] == deployment.artifact_dir
    assert [level["concurrency"] for level in data["levels"]] == [1, 2]
    for level in data["levels"]:
        assert level["requests"] == 4 and level["errors"] == 0
        for metric in METRICS:
            assert level[metric]["count"] == 4
            assert 0 < level[metric]["p50"] <= level[metric]["p90"] <= level[metric]["p99"]
        assert level["e2e_s"]["p50"] > level["ttft_s"]["p50"]
        # greedy decoding of the random tiny model may stop at EOS, but never past max_new_tokens
        assert 4 <= level["output_tokens"] <= 4 * 8
        assert level["output_tokens_per_second"] > 0 and level["requests_per_second"] > 0
        assert level["cost_per_million_output_tokens"] == pytest.approx(
            1.5 / (level["output_tokens_per_second"] * 3600) * 1e6)

    header = plot.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", header[16:24])
    assert width >= 800 and height >= 600


def test_rejected_requests_are_counted_as_errors(deployment, home, monkeypatch, tmp_path):
    from inf2_deploy import BenchConfig, bench

    monkeypatch.setenv("INF2_DEPLOY_HOME", str(home))
    # 250 prompt tokens + 20 new tokens exceed n_positions 256: the server answers 400 to every request
    result = bench(deployment.url, config=BenchConfig(concurrency=(2,), requests=4, prompt_tokens=250,
                                                     max_new_tokens=20, warmup=0))
    stats = result.level(2).stats
    assert (stats.requests, stats.errors) == (4, 4)
    assert stats.error_kinds == {"InvocationError 400": 4}
    assert stats.output_tokens_per_second == 0.0
    assert result.save_json(tmp_path / "r.json").exists()
