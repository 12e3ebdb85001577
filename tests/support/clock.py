"""One fake clock for every test: time moves only when slept or advanced, never on the wall."""
from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

#: where a FakeClock's wall time starts unless told otherwise
START = datetime(2025, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


class FakeClock:
    """Monotonic and wall time that advance only by ``sleep`` or ``advance``; thread-safe.

    It is an ``inf2_deploy.clock.Clock`` (``monotonic()``, ``sleep()``, ``now()``), and calling it
    reads the monotonic time, as the benchmark runner's ``clock`` does. ``elapsed`` is the time
    passed since it was made and ``sleeps`` every sleep asked for, in order.

    Args:
        start: the wall time at first; default :data:`START`.
        monotonic_start: the monotonic time at first; not 0, so that absolute readings stand out.
        interrupt_after: raise KeyboardInterrupt on this sleep call (1-based), like Ctrl-C.
    """

    def __init__(self, start: datetime | None = None, *, monotonic_start: float = 100.0,
                 interrupt_after: int | None = None) -> None:
        self.start = start or START
        self.monotonic_start = monotonic_start
        self.interrupt_after = interrupt_after
        self.elapsed = 0.0
        self.sleeps: list[float] = []
        self._lock = threading.Lock()

    def monotonic(self) -> float:
        with self._lock:
            return self.monotonic_start + self.elapsed

    def __call__(self) -> float:
        return self.monotonic()

    def now(self) -> datetime:
        with self._lock:
            return self.start + timedelta(seconds=self.elapsed)

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.elapsed += seconds

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)
            if self.interrupt_after is not None and len(self.sleeps) >= self.interrupt_after:
                raise KeyboardInterrupt
            self.elapsed += seconds
