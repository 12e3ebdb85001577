"""Append a dated, reproducible results section to docs/performance.md."""
from __future__ import annotations

import datetime
import os
import platform
import subprocess
from pathlib import Path

PERFORMANCE_DOC = Path(__file__).resolve().parent.parent / "docs" / "performance.md"


def machine() -> str:
    """One line describing the machine the numbers came from."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            kib = int(meminfo.readline().split()[1])
        memory = f"{kib / 1024**2:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        memory = "unknown RAM"
    system = f"{platform.system()} {platform.machine()}"
    load = f"load average {os.getloadavg()[0]:.1f}"  # the machine is shared: say how busy it was
    return f"{os.cpu_count()} cores, {memory}, {system}, Python {platform.python_version()}, {load}"


def loadavg() -> str:
    """``/proc/loadavg`` as it reads (1, 5 and 15-minute load, runnable/total tasks, last pid)."""
    try:
        with open("/proc/loadavg", encoding="ascii") as source:
            return source.read().strip()
    except OSError:
        return " ".join(f"{load:.2f}" for load in os.getloadavg())


def code_version() -> str:
    """The commit the numbers came from, noting uncommitted changes to tracked files (docs aside)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=PERFORMANCE_DOC.parent.parent, capture_output=True, text=True,
                              check=False).stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    changed = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!docs")
    return f"{commit} plus uncommitted changes" if changed else commit


def append_section(title: str, body: str, command: str) -> None:
    """Append ``body`` under a dated heading with the machine and the command to reproduce it."""
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    if not PERFORMANCE_DOC.exists():
        PERFORMANCE_DOC.parent.mkdir(parents=True, exist_ok=True)
        PERFORMANCE_DOC.write_text("# Performance\n\nMeasured results, newest last. Medians of several runs on a "
                                   "shared, noisy machine; compare ratios from one run.\n", encoding="utf-8")
    with PERFORMANCE_DOC.open("a", encoding="utf-8") as doc:
        doc.write(f"\n## {title} ({stamp})\n\nMachine: {machine()}. Reproduce: `{command}`\n\n{body}\n")
