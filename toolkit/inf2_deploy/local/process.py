"""What the operating system says about a local server's process: alive, ours, and how to signal it."""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["SERVER_MODULE", "pid_alive", "server_alive", "signal_group"]

SERVER_MODULE = "inf2_deploy.local.server"
"""The module a local deployment's process runs (``python -m``); its command line names it."""


def pid_alive(pid: int) -> bool:
    """True while process ``pid`` exists; an exited child of ours is reaped on the way."""
    try:
        waited, _status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass  # not our child: ask the kernel below
    else:
        # Our child: reaping it here keeps an exited server from lingering as a zombie,
        # which kill(pid, 0) would still report as alive.
        return waited == 0
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def server_alive(pid: int) -> bool:
    """True when ``pid`` is alive and, where /proc tells, still runs our server (pids get reused)."""
    if not pid_alive(pid):
        return False
    cmdline = Path(f"/proc/{pid}/cmdline")
    if not Path("/proc/self/cmdline").exists():
        return True
    try:
        return SERVER_MODULE.encode() in cmdline.read_bytes()
    except OSError:  # vanished in between
        return False


def signal_group(pid: int, signum: int) -> None:
    """Send ``signum`` to the process group that ``pid`` leads (to ``pid`` alone where that is refused)."""
    # The server leads its own session (start_new_session), so its group id is its pid;
    # signalling the group also reaches anything it spawned.
    try:
        os.killpg(pid, signum)
    except ProcessLookupError:
        return
    except PermissionError:
        os.kill(pid, signum)
