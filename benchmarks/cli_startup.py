"""CLI start-up time: ``inf2-deploy --help``, and ``plan`` for gpt-j-6b warm and cold.

``plan`` is warm when the image lookup is in the image cache (as after any earlier
``plan``, ``package`` or ``deploy``) and cold when the cache is empty, so that it
imports the SageMaker SDK's registry. Each run is a fresh process; the cache is
a temporary ``XDG_CACHE_HOME``, never the user's.

Targets: ``--help`` at most 0.4 s and a warm ``plan`` under 1 s (medians).
Run: ``.venv/bin/python benchmarks/cli_startup.py [--runs N] [--no-record]``.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from report import append_section  # noqa: E402

PLAN = ["plan", "--model", "gpt-j-6b", "--instance-type", "ml.inf2.8xlarge", "--region", "us-east-1"]
TARGETS = {"help": 0.4, "plan, warm": 1.0}


def run_once(argv: list[str], cache_home: str) -> float:
    """Wall time of one fresh CLI process with ``XDG_CACHE_HOME=cache_home``."""
    env = {**os.environ, "XDG_CACHE_HOME": cache_home}
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "inf2_deploy.cli", *argv], check=True, capture_output=True, env=env)
    return time.perf_counter() - start


def measure(runs: int) -> dict[str, list[float]]:
    """Wall times per case: ``help``, ``plan, warm`` (one shared cache, filled first) and
    ``plan, cold`` (an empty cache each run)."""
    times: dict[str, list[float]] = {"help": [], "plan, warm": [], "plan, cold": []}
    with tempfile.TemporaryDirectory(prefix="cli-startup-") as folder:
        warm = str(Path(folder) / "warm")
        run_once(PLAN, warm)  # fills the image cache (not timed)
        for index in range(runs):
            # Interleaved, so that a burst of load from elsewhere hits every case alike.
            times["help"].append(run_once(["--help"], warm))
            times["plan, warm"].append(run_once(PLAN, warm))
            times["plan, cold"].append(run_once(PLAN, str(Path(folder) / f"cold-{index}")))
    return times


def commit() -> str:
    """The commit measured, with ``+changes`` when the tree differs from it."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], capture_output=True, text=True, cwd=Path(__file__).parent).stdout

    head = git("rev-parse", "--short", "HEAD").strip() or "unknown"
    return head + ("+changes" if git("status", "--porcelain", "--untracked-files=no").strip() else "")


def report(times: dict[str, list[float]], runs: int, loads: tuple[float, float], code: str) -> str:
    """The markdown table and verdicts."""
    command = "inf2-deploy " + " ".join(PLAN)
    lines = [f"Code at {code}. Load average (1 min) {loads[0]:.2f} before and {loads[1]:.2f} after. "
             f"{runs} runs per case, interleaved. `plan` is `{command}`.", "",
             "| case | median s | min s | max s |", "|---|---:|---:|---:|"]
    lines += [f"| {case} | {statistics.median(values):.3f} | {min(values):.3f} | {max(values):.3f} |"
              for case, values in times.items()]
    lines.append("")
    for case, target in TARGETS.items():
        median = statistics.median(times[case])
        verdict = "met" if median <= target else "missed"
        lines.append(f"- Target {case} <= {target} s median: **{verdict}** ({median:.3f} s).")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=9, help="runs per case (default 9)")
    parser.add_argument("--no-record", action="store_true", help="print only; do not append to docs")
    args = parser.parse_args()
    before = os.getloadavg()[0]
    times = measure(args.runs)
    body = report(times, args.runs, (before, os.getloadavg()[0]), commit())
    print(body)
    if not args.no_record:
        append_section("CLI start-up: plan warm and cold", body, "python benchmarks/cli_startup.py")
    return 0


if __name__ == "__main__":
    sys.exit(main())
