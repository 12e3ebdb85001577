"""``inf2-deploy verify``: a local deployment agrees with its CPU reference; doctored tokens do not."""
from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from inf2_deploy.cli import main
from inf2_deploy.client.verify import ReferenceModel, verify
from inf2_deploy.errors import ConfigError
from inf2_deploy.local.deploy import serve_local
from inf2_deploy.local.supervisor import LocalSupervisor


class GreedyPredictor:
    """Streams transformers' greedy tokens for the artifact, except where told to pick otherwise.

    ``pick(step, logits) -> token id or None`` overrides the greedy choice at a step;
    ``stop_at`` ends the stream with EOS at that step.
    """

    endpoint_name = "doctored"

    def __init__(self, reference: ReferenceModel, pick=None, stop_at: int | None = None) -> None:
        self.reference = reference
        self.pick = pick or (lambda step, logits: None)
        self.stop_at = stop_at

    def stream_events(self, prompt: str, **parameters: Any) -> Iterator[dict[str, Any]]:
        assert parameters == {"max_new_tokens": parameters["max_new_tokens"], "do_sample": False}
        prompt_ids, ids = self.reference.prompt_ids(prompt), []
        eos = self.reference.tokenizer.eos_token_id
        for step in range(parameters["max_new_tokens"]):
            logits = self.reference.next_token_logits(prompt_ids, ids)[-1]
            chosen = eos if step == self.stop_at else self.pick(step, logits)
            ids.append(int(logits.argmax()) if chosen is None else chosen)
            yield {"token": {"id": ids[-1], "text": ""}}
            if ids[-1] == eos or ids[-1] >= logits.shape[0]:  # EOS, or an id no model could continue from
                return


@pytest.fixture(scope="module")
def reference(tiny_artifact_dir: Path) -> ReferenceModel:
    return ReferenceModel(tiny_artifact_dir)


def second_choice(at: int):
    def pick(step: int, logits) -> int | None:
        return int(logits.topk(2).indices[1]) if step == at else None

    return pick


def _gap(reference: ReferenceModel, prompt: str, at: int) -> float:
    """How far the second choice at step ``at`` trails the first, relative to the row's largest |logit|."""
    ids = [e["token"]["id"] for e in GreedyPredictor(reference).stream_events(prompt, max_new_tokens=at,
                                                                              do_sample=False)]
    row = reference.next_token_logits(reference.prompt_ids(prompt), ids)[-1]
    top2 = row.topk(2).values
    return float(top2[0] - top2[1]) / max(1.0, float(row.abs().max()))


def test_the_reference_own_tokens_agree_exactly(reference: ReferenceModel, tiny_artifact_dir: Path) -> None:
    report = verify(GreedyPredictor(reference), artifact=tiny_artifact_dir)
    assert report.ok and report.agreement == 1.0
    assert [p.label.split()[0] for p in report.prompts] == ["short", "long", "non-ascii"]
    assert all(p.compared == 16 and p.exact == 16 and p.first_divergence is None for p in report.prompts)
    assert report.prompts[1].prompt_tokens > 100  # the long prompt is long


def test_a_swapped_token_is_a_near_tie_only_within_the_margin(reference: ReferenceModel,
                                                              tiny_artifact_dir: Path) -> None:
    gap = _gap(reference, "The capital of France is", 3)
    assert gap > 0  # the logits are not flat: the swap is a real difference
    swapped = GreedyPredictor(reference, pick=second_choice(3))
    within = verify(swapped, artifact=tiny_artifact_dir, margin=min(0.99, gap * 1.5))
    assert within.ok and within.prompts[0].near_ties == 1 and within.prompts[0].exact == 15
    strict = verify(swapped, artifact=tiny_artifact_dir, margin=gap / 2)
    assert not strict.ok
    first = strict.prompts[0]
    assert first.first_divergence == 3 and first.exact == 3 and first.near_ties == 0
    assert first.reference_choice  # the reference's token at the divergence, as text
    assert strict.agreement < 1.0


def test_stopping_early_is_scored_like_any_other_token(reference: ReferenceModel, tiny_artifact_dir: Path) -> None:
    report = verify(GreedyPredictor(reference, stop_at=5), artifact=tiny_artifact_dir, margin=0)
    assert not report.ok
    assert all(p.first_divergence == 5 and p.compared == 6 for p in report.prompts)


def test_a_token_outside_the_vocabulary_is_a_divergence(reference: ReferenceModel, tiny_artifact_dir: Path) -> None:
    vocab = reference.model.config.vocab_size
    report = verify(GreedyPredictor(reference, pick=lambda step, logits: vocab + 7 if step == 2 else None),
                    artifact=tiny_artifact_dir, margin=0.5)
    assert not report.ok and all(p.first_divergence == 2 for p in report.prompts)


def test_bad_arguments_name_their_field(reference: ReferenceModel, tiny_artifact_dir: Path) -> None:
    for kwargs, field in [({"tokens": 0}, "tokens"), ({"margin": 1.0}, "margin"),
                          ({"reference_dtype": "fp16"}, "reference_dtype")]:
        with pytest.raises(ConfigError) as info:
            verify(GreedyPredictor(reference), artifact=tiny_artifact_dir, **kwargs)
        assert info.value.field == field


def test_a_url_without_a_known_artifact_is_a_usage_error(server_url: str, local_home: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify", "--url", server_url]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "artifact" in err and "--artifact" in err


def test_verify_url_with_the_artifact_agrees(server_url: str, tiny_artifact_dir: Path, local_home: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify", "--url", server_url, "--artifact", str(tiny_artifact_dir), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is True and report["agreement"] == 1.0 and len(report["prompts"]) == 3
    assert all(len(p["endpoint_ids"]) == p["compared"] == 16 for p in report["prompts"])


@pytest.mark.slow
def test_verify_a_local_deployment_by_name(local_home: Path, tiny_artifact_dir: Path, tiny_spec: Any,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    serve_local(tiny_spec, name="tiny-verify", backend="cpu", timeout=120)
    try:
        assert main(["verify", "tiny-verify", "--reference-dtype", "bf16", "--tokens", "8"]) == 0
        out = capsys.readouterr().out
        assert "agrees" in out and "against bf16 on the CPU" in out
    finally:
        LocalSupervisor().delete("tiny-verify")


def test_the_artifact_is_read_back_from_s3(reference: ReferenceModel, tiny_artifact_dir: Path, local_home: Path,
                                           fake_aws_env: None) -> None:
    import boto3
    from inf2_deploy.aws.s3 import download_prefix
    from moto import mock_aws

    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="models")
        files = [p for p in tiny_artifact_dir.rglob("*") if p.is_file()]
        for path in files:
            s3.upload_file(str(path), "models", f"tiny/abc123/{path.relative_to(tiny_artifact_dir)}")
        report = verify(GreedyPredictor(reference), artifact="s3://models/tiny/abc123/")
        assert report.ok and report.artifact == "s3://models/tiny/abc123/"
        copy = local_home / "cache" / "artifacts" / "verify" / "models" / "tiny" / "abc123"
        assert sorted(p.relative_to(copy) for p in copy.rglob("*") if p.is_file()) == \
            sorted(p.relative_to(tiny_artifact_dir) for p in files)
        assert download_prefix(s3, "models", "tiny/abc123", copy) == 0  # everything already there
        (copy / "config.json").write_text("{}")  # a damaged file of another size is fetched again
        assert download_prefix(s3, "models", "tiny/abc123", copy) == (tiny_artifact_dir / "config.json").stat().st_size
