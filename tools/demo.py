"""``make demo``: the whole job on the embedded local default, no AWS account needed.

Each step is the CLI command a user would type, run in-process and echoed first,
so the output doubles as a tutorial. The demo stops at the first failing step
with its exit code, and always tears the local endpoint down.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from inf2_deploy.cli import main as cli_main

__all__ = ["main", "demo_steps"]

ENDPOINT = "tiny-gptj-demo"
# Settings of the tiny model's local endpoint: tp 2 and batch 4 exercise sharding
# in the plan and the rolling batch's four slots in the server.
TINY_SETTINGS = ["--model", "tiny-gptj", "--tp-degree", "2", "--batch-size", "4", "--n-positions", "512",
                 "--region", "us-east-1"]
AWS_COMMAND = (
    "inf2-deploy deploy --model EleutherAI/gpt-j-6b --instance-type ml.inf2.8xlarge --tp-degree 2 \\\n"
    "    --role arn:aws:iam::<ACCOUNT>:role/<SageMakerExecutionRole> --endpoint-name gptj-inf2"
)


def demo_steps(workdir: Path) -> list[tuple[str, list[str], int]]:
    """The demo's (title, CLI argv, expected exit code) steps, in order."""
    artifact = workdir / "artifact"
    return [
        ("Plan GPT-J-6B on ml.inf2.8xlarge (offline, about a second)",
         ["plan", "--model", "gpt-j-6b", "--instance-type", "ml.inf2.8xlarge", "--tp-degree", "2",
          "--region", "us-east-1"], 0),
        ("A plan that cannot work is refused before any money is spent (exit 2 expected)",
         ["plan", "--model", "gpt-j-6b", "--instance-type", "ml.inf2.xlarge", "--tp-degree", "4",
          "--region", "us-east-1", "--json"], 2),
        ("Plan tiny-gptj (built locally: 2 layers, GPT-2 tokenizer)", ["plan", *TINY_SETTINGS], 0),
        ("Package the artifact: the folder that would go to S3",
         ["package", *TINY_SETTINGS, "--output", str(artifact)], 0),
        ("Deploy the same artifact to a local endpoint (the LMI container's HTTP contract, CPU backend)",
         ["deploy", "--local", *TINY_SETTINGS, "--endpoint-name", ENDPOINT], 0),
        ("List deployments", ["list"], 0),
        ("Invoke", ["invoke", ENDPOINT, "Inferentia2 is", "--max-new-tokens", "24", "--details"], 0),
        ("Invoke, streaming", ["invoke", ENDPOINT, "Once upon a time", "--max-new-tokens", "24", "--stream"], 0),
        ("Benchmark: TTFT, TPOT, throughput and cost at concurrency 1 and 4",
         ["bench", ENDPOINT, "--concurrency", "1,4", "--requests", "8", "--prompt-tokens", "32",
          "--max-new-tokens", "16", "--price-per-hour", "1.97", "--out", str(workdir / "bench.json"),
          "--plot", str(workdir / "bench.png")], 0),
    ]


def _run(title: str, argv: Sequence[str]) -> int:
    print(f"\n== {title}\n$ inf2-deploy {' '.join(argv)}", flush=True)
    return cli_main(list(argv))


def _tear_down() -> int:
    from inf2_deploy.local.records import default_store

    if default_store().get(ENDPOINT) is None:
        return 0
    return _run("Tear down the local endpoint", ["delete", ENDPOINT])


def _run_steps(workdir: Path) -> int:
    for title, step, expected in demo_steps(workdir):
        code = _run(title, step)
        if code != expected:
            print(f"\ndemo step failed (exit {code}, expected {expected}): inf2-deploy {' '.join(step)}",
                  file=sys.stderr)
            return code or 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo; return 0 when every step did what it should."""
    parser = argparse.ArgumentParser(prog="python tools/demo.py", description=__doc__)
    parser.add_argument("--workdir", default=".demo", help="where the artifact, state and results go")
    args = parser.parse_args(argv)
    workdir = Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    # Keep the demo's local-endpoint records and caches out of the user's own.
    os.environ.setdefault("INF2_DEPLOY_HOME", str(workdir / "home"))
    start = time.monotonic()
    _tear_down()  # an endpoint left by an interrupted run
    try:
        code = _run_steps(workdir)
    finally:
        torn_down = _tear_down() == 0
    if code or not torn_down:
        return code or 1
    print(f"\nDemo finished in {time.monotonic() - start:.0f} s. Benchmark results: {workdir / 'bench.json'}, "
          f"plot: {workdir / 'bench.png'}.")
    print(f"\nThe same on AWS Inferentia2 (needs credentials, a role and ml.inf2 quota):\n\n  {AWS_COMMAND}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
