"""Benchmark an endpoint with ``inf2_deploy.bench``: TTFT, TPOT, E2E, throughput and cost.

    python examples/bench_endpoint.py NAME_OR_URL [--price-per-hour 1.97] [--out results.json]

NAME_OR_URL is a SageMaker endpoint, a local deployment name or an http(s) URL of an
LMI-compatible server.
"""
from __future__ import annotations

import argparse
import json

from inf2_deploy import BenchConfig, bench


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target")
    parser.add_argument("--concurrency", default="1,4")
    parser.add_argument("--requests", type=int, default=8)
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--price-per-hour", type=float)
    parser.add_argument("--tokenizer", help="tokenizer or artifact folder; default the deployment's artifact")
    parser.add_argument("--out")
    args = parser.parse_args()
    config = BenchConfig(concurrency=[int(c) for c in args.concurrency.split(",")], requests=args.requests,
                         prompt_tokens=args.prompt_tokens, max_new_tokens=args.max_new_tokens,
                         price_per_hour=args.price_per_hour)
    result = bench(args.target, config=config, tokenizer=args.tokenizer)
    data = result.to_dict()
    if args.out:
        with open(args.out, "w", encoding="utf-8") as out:
            json.dump(data, out, indent=2)
    print(json.dumps(data, indent=2)[:4000])


if __name__ == "__main__":
    main()
