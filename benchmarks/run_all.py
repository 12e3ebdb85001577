"""Run every benchmark in turn; each appends its dated section to docs/performance.md (``make bench``).

Order: CLI start-up, serving on tiny-gptj (with the rolling batch's targets and the
head-of-line probe, ``hol_probe.py``), the correctness checks' costs, package-only
(when benchmarks/package_bench.py exists), package and upload to loopback S3 (several minutes and ~6 GB of temp files,
removed afterwards), then the static Inferentia2 section. Extra arguments are passed
to none of them; run a script directly for its options.
"""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = ("cli_startup.py", "serving_bench.py", "correctness_bench.py", "package_bench.py", "upload_bench.py",
           "inferentia2.py")


def main() -> int:
    failed = []
    for name in SCRIPTS:
        script = HERE / name
        if not script.exists():
            print(f"== {name}: not present, skipped")
            continue
        print(f"== {name}", flush=True)
        start = time.perf_counter()
        code = subprocess.call([sys.executable, str(script)], cwd=HERE.parent)
        print(f"== {name}: exit {code} after {time.perf_counter() - start:.0f} s", flush=True)
        if code != 0:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
