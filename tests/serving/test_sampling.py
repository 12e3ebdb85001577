"""Per-row token selection (inf2_serving.sampling): seeds, greedy, filters and penalties on fixed logits."""
from __future__ import annotations

import pytest
from inf2_serving.sampling import TokenSelector, row_seed
from inf2_serving.schema import GenerationParams

torch = pytest.importorskip("torch")


@pytest.fixture
def logits():
    generator = torch.Generator().manual_seed(0)
    return torch.randn(50, generator=generator) * 3


def test_row_seed_prefers_the_request_then_the_fallback() -> None:
    assert row_seed(GenerationParams()) is None  # greedy draws nothing
    sampled = GenerationParams(do_sample=True)
    assert row_seed(GenerationParams(do_sample=True, seed=5), fallback=9) == 5
    assert row_seed(sampled, fallback=9) == 9
    assert isinstance(row_seed(sampled), int)


def test_greedy_takes_the_largest_logit(logits) -> None:
    assert TokenSelector(GenerationParams(), None).select(logits, [1, 2]) == int(logits.argmax())


@pytest.mark.parametrize("params", [dict(top_k=1), dict(top_p=1e-6)])
def test_filters_that_keep_one_token_sample_the_largest(logits, params) -> None:
    selector = TokenSelector(GenerationParams(do_sample=True, temperature=2.0, **params), seed=3)
    assert {selector.select(logits, [0]) for _ in range(20)} == {int(logits.argmax())}


def test_the_same_seed_draws_the_same_tokens(logits) -> None:
    params = GenerationParams(do_sample=True, temperature=5.0)
    first, second = TokenSelector(params, 11), TokenSelector(params, 11)
    assert [first.select(logits, [0]) for _ in range(30)] == [second.select(logits, [0]) for _ in range(30)]
    other = TokenSelector(params, 12)
    assert len({other.select(logits, [0]) for _ in range(30)}) > 1  # it does sample


def test_repetition_penalty_steers_away_from_the_context(logits) -> None:
    top = int(logits.argmax())
    penalized = TokenSelector(GenerationParams(repetition_penalty=100.0), None)
    assert penalized.select(logits, [top]) != top
    assert penalized.select(logits, [(top + 1) % 50]) == top
