"""The client refuses text the server would refuse, before sending anything."""
from __future__ import annotations

import pytest
from inf2_deploy.client.predictor import LocalPredictor
from inf2_deploy.errors import ConfigError


@pytest.mark.parametrize(("call", "field"), [
    (lambda p: p.generate("a\ud800b"), "prompt"),
    (lambda p: p.generate_batch(["fine", "\udc00"]), "prompt"),
    (lambda p: list(p.stream("fine", stop=["ok", "\ud83d"])), "stop[1]"),
    (lambda p: p.generate("fine", stop="\udfff"), "stop[0]"),
])
def test_lone_surrogates_are_refused_before_sending(unused_port: int, call, field: str) -> None:  # noqa: ANN001
    # Nothing listens on the port: reaching the network would be an InvocationError instead.
    with LocalPredictor(f"http://127.0.0.1:{unused_port}") as predictor, pytest.raises(ConfigError) as info:
        call(predictor)
    assert info.value.field == field and "surrogate" in str(info.value)
