"""The plan's latency floors (spec/floors.py) on GPT-J-6B, from the arithmetic, static and rolling."""
from __future__ import annotations

import io

import pytest
from inf2_deploy.spec.catalog import HBM_BANDWIDTH_PER_CHIP
from inf2_deploy.spec.deployment_spec import load_spec
from inf2_deploy.spec.floors import prompt_cost
from inf2_deploy.spec.planner import make_plan

WEIGHTS_FP16 = 6_050_882_784 * 2


def _cost(**settings):
    spec = load_spec(model="gpt-j-6b", region="us-east-1", instance_type="ml.inf2.8xlarge",
                     tensor_parallel_degree=2, n_positions=1024, **settings)
    return prompt_cost(make_plan(spec, image_resolver=lambda region, version: "img"), prompt_tokens=128)


def test_decode_and_prompt_floors_come_from_weights_over_bandwidth() -> None:
    cost = _cost()
    assert cost.chips == 1
    assert cost.decode_floor_s == pytest.approx(WEIGHTS_FP16 / HBM_BANDWIDTH_PER_CHIP)
    assert cost.decode_floor_s == pytest.approx(0.01476, abs=1e-5)
    assert cost.ttft_floor_s == pytest.approx(128 * cost.decode_floor_s)


def test_the_rolling_batch_replays_instead_of_resetting() -> None:
    rolling = _cost(batch_size=4)
    assert rolling.rolling_batch is True
    assert rolling.longest_replay_s == pytest.approx(1023 * rolling.decode_floor_s)  # about 15 s
    data = rolling.to_dict()
    assert data["reset_bytes_per_request"] == 0 and data["longest_replay_ms"] == pytest.approx(15_098, abs=1)


def test_static_batches_reset_the_whole_kv_cache() -> None:
    static = _cost(batch_size=4, rolling_batch="disable")
    assert static.rolling_batch is False
    assert static.reset_bytes == 2 * 28 * 4 * 1024 * 4096 * 2  # 1.88 GB
    data = static.to_dict()
    assert data["reset_bytes_per_request"] == static.reset_bytes and data["longest_replay_ms"] is None


@pytest.mark.parametrize(("rolling_batch", "shown", "hidden"), [
    ("auto", "admission while rows run (rolling batch)", "KV cache reset"),
    ("disable", "KV cache reset per batch", "admission while rows run"),
])
def test_the_plan_table_names_the_cost_that_applies(rolling_batch: str, shown: str, hidden: str) -> None:
    from inf2_deploy.cli.plan_cmd import render_prompt_cost
    from rich.console import Console

    out = io.StringIO()
    render_prompt_cost(Console(file=out, width=200), _cost(rolling_batch=rolling_batch))
    assert shown in out.getvalue() and hidden not in out.getvalue()
