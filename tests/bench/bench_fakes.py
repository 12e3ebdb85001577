"""Stand-ins for the bench runner: a streaming target with scripted token timings on a FakeClock."""
from __future__ import annotations

import threading
from typing import Any

from inf2_deploy.errors import InvocationError
from support.clock import FakeClock


class FakeStreamingTarget:
    """Streams like the LMI container: ``{"token": {...}}`` lines, the last with ``generated_text``.

    Time passes on the injected clock: ``ttft`` before the first token, ``tpot`` before each later one.
    Every ``fail_every``-th request (1-based) fails: with ``fail_after`` tokens streamed first, it raises
    InvocationError(503), as the predictor does for an error status or an in-band error line.
    """

    endpoint_name = "fake-endpoint"

    def __init__(self, clock: FakeClock, *, ttft: float = 0.2, tpot: float = 0.05, fail_every: int = 0,
                 fail_after: int = 0) -> None:
        self.clock = clock
        self.ttft = ttft
        self.tpot = tpot
        self.fail_every = fail_every
        self.fail_after = fail_after
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()

    def stream_events(self, prompt: str, **parameters: Any):
        with self._lock:
            self.calls.append((prompt, parameters))
            number = len(self.calls)
        return self._events(number, parameters["max_new_tokens"])

    def _events(self, number: int, max_new_tokens: int):
        failing = self.fail_every and number % self.fail_every == 0
        for i in range(max_new_tokens):
            if failing and i == self.fail_after:
                raise InvocationError("fake-endpoint: model is overloaded", status=503)
            self.clock.advance(self.ttft if i == 0 else self.tpot)
            line: dict[str, Any] = {"token": {"id": 100 + i, "text": f" t{i}"}}
            if i == max_new_tokens - 1:
                line["generated_text"] = "".join(f" t{j}" for j in range(max_new_tokens))
            yield line
