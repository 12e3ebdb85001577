"""CLI start-up time: ``inf2-deploy --help`` and ``plan`` for gpt-j-6b.

Target: ``--help`` at most 0.4 s median. Run: ``.venv/bin/python benchmarks/cli_startup.py``.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from report import append_section  # noqa: E402

CASES = {
    "inf2-deploy --help": ["--help"],
    "inf2-deploy plan --model gpt-j-6b --json": ["plan", "--model", "gpt-j-6b", "--region", "us-east-1", "--json"],
}
TARGET_HELP_SECONDS = 0.4


def time_command(argv: list[str], runs: int) -> list[float]:
    """Wall times of ``runs`` fresh CLI processes."""
    command = [sys.executable, "-m", "inf2_deploy.cli", *argv]
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--no-record", action="store_true", help="print only; do not append to docs")
    args = parser.parse_args()
    rows = []
    for label, argv in CASES.items():
        times = time_command(argv, args.runs)
        rows.append((label, statistics.median(times), min(times), max(times)))
        print(f"{label}: median {statistics.median(times):.3f} s (min {min(times):.3f}, max {max(times):.3f})")
    help_median = rows[0][1]
    verdict = "met" if help_median <= TARGET_HELP_SECONDS else "missed"
    table = ["| command | median s | min s | max s |", "|---|---|---|---|"]
    table += [f"| `{label}` | {median:.3f} | {low:.3f} | {high:.3f} |" for label, median, low, high in rows]
    table.append("")
    table.append(f"Target `--help` <= {TARGET_HELP_SECONDS} s median: **{verdict}** ({help_median:.3f} s). "
                 f"{args.runs} runs each.")
    if not args.no_record:
        append_section("CLI start-up", "\n".join(table), "python benchmarks/cli_startup.py")
    return 0


if __name__ == "__main__":
    sys.exit(main())
