"""``make demo``: the whole job on the embedded local default, no AWS account needed."""
from __future__ import annotations

import sys

from .cli import main as cli_main


def main() -> int:
    """Run each demo step through the CLI; stop at the first failure."""
    steps = [
        ["plan", "--model", "gpt-j-6b", "--instance-type", "ml.inf2.8xlarge", "--tp-degree", "2",
         "--region", "us-east-1"],
    ]
    for argv in steps:
        print(f"\n$ inf2-deploy {' '.join(argv)}", flush=True)
        code = cli_main(argv)
        if code:
            print(f"demo step failed with exit code {code}", file=sys.stderr)
            return code
    return 0


if __name__ == "__main__":
    sys.exit(main())
