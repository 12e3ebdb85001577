"""Ctrl-C while a local server starts (``deploy --local``, ``serve_local``): the server is stopped and
nothing of it is left in the store.

Ctrl-C arrives as KeyboardInterrupt from the clock's sleep during the readiness wait, where a real
one most often lands; the server is the real one, on the session's packaged tiny-gptj.
"""
from __future__ import annotations

from pathlib import Path

import pytest
from inf2_deploy.local.deploy import serve_local
from inf2_deploy.local.process import pid_alive
from inf2_deploy.local.records import LocalDeployment, LocalStore
from inf2_deploy.local.supervisor import LocalSupervisor
from support.artifacts import tiny_spec
from support.clock import FakeClock


class CtrlC(FakeClock):
    """Ctrl-C on the first sleep of the readiness wait (and, with ``repeat``, on every later sleep:
    a user pressing it again while the server is being stopped).

    Before raising, it notes what the store lists then, as ``inf2-deploy list`` would show it.
    """

    def __init__(self, store: LocalStore, *, repeat: bool) -> None:
        super().__init__(interrupt_after=1 if repeat else None)
        self.store = store
        self.listed_while_starting: list[LocalDeployment] = []

    def sleep(self, seconds: float) -> None:
        if not self.sleeps:
            self.listed_while_starting = self.store.list()
            if self.interrupt_after is None:
                self.sleeps.append(seconds)
                raise KeyboardInterrupt
        super().sleep(seconds)


def _assert_nothing_left(clock: CtrlC, store: LocalStore) -> None:
    [started] = clock.listed_while_starting  # recorded while it started ...
    assert not pid_alive(started.pid)  # ... stopped ...
    assert store.list() == [] and list(store.root.iterdir()) == []  # ... and forgotten: no record, no log


@pytest.mark.slow
@pytest.mark.parametrize("repeat", [False, True], ids=["once: SIGTERM", "again while stopping: SIGKILL"])
def test_ctrl_c_while_the_server_starts_stops_it_and_leaves_no_record(root: Path, tiny_artifact_dir: Path,
                                                                      repeat: bool) -> None:
    store = LocalStore(root)
    clock = CtrlC(store, repeat=repeat)
    with pytest.raises(KeyboardInterrupt):
        LocalSupervisor(store, clock).start(tiny_artifact_dir, name="tiny-ctrl-c", backend="cpu")
    _assert_nothing_left(clock, store)
    if not repeat:
        # After the interrupted readiness poll, the stop waited for SIGTERM on the clock.
        assert clock.sleeps[0] == 0.2 and set(clock.sleeps[1:]) <= {0.05}


@pytest.fixture
def home_with_tiny(root: Path, tiny_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """INF2_DEPLOY_HOME whose cache is the session's, where tiny-gptj is already packaged."""
    home = root.parent / "home-with-tiny"
    home.mkdir()
    (home / "cache").symlink_to(tiny_cache, target_is_directory=True)
    monkeypatch.setenv("INF2_DEPLOY_HOME", str(home))
    return home


@pytest.mark.slow
def test_ctrl_c_during_serve_local_stops_the_server_it_started(root: Path, home_with_tiny: Path,
                                                               tiny_artifact_dir: Path) -> None:
    store = LocalStore(root)
    clock = CtrlC(store, repeat=True)
    with pytest.raises(KeyboardInterrupt):
        serve_local(tiny_spec(), name="tiny-ctrl-c", backend="cpu", store=store, clock=clock)
    _assert_nothing_left(clock, store)
    assert clock.listed_while_starting[0].artifact_dir == str(tiny_artifact_dir.resolve())  # packaged, then served
