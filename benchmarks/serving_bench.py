"""Serving on tiny-gptj (CPU backend): handler overhead at batch 1 and throughput against concurrency.

(1) Handler overhead: ``ModelHandler.generate`` (schema, tokenization, batching, stop
    rules, incremental decoding) against ``model.generate`` on the handler's own model for
    the same prompt and the same greedy tokens, alternating, median of ``--repeats``.
    Target: at most 10% slower.
(2) Throughput through the local HTTP server (``inf2_deploy.local.server``, batch_size 4,
    dynamic batching) at concurrency 1, 4 and 8 with non-streaming requests, in rounds
    so that every level sees the same machine load. Target: concurrency 8 at least 3x
    concurrency 1 in output tokens/s. ``inf2-deploy bench`` (streaming, also batched by
    the server) is run against the same server for TTFT and TPOT.

Run: ``.venv/bin/python benchmarks/serving_bench.py``.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from report import append_section  # noqa: E402

TARGET_OVERHEAD = 0.10
TARGET_SCALING = 3.0
LEVELS = (1, 4, 8)


def handler_overhead(model_dir: Path, prompt: str, new_tokens: int, repeats: int) -> dict[str, Any]:
    """Median seconds of handler.generate and of raw model.generate for the same greedy tokens."""
    import torch
    from inf2_deploy.local.server import load_artifact_properties
    from inf2_serving.handler import ModelHandler
    from inf2_serving.schema import parse_request

    handler = ModelHandler()
    handler.initialize(load_artifact_properties(model_dir, backend="cpu"))  # what the server would load
    engine = handler.engine
    model, tokenizer = engine.backend.model, engine.tokenizer
    request = parse_request({"inputs": prompt, "parameters": {"max_new_tokens": new_tokens, "details": True}})
    encoded = tokenizer(prompt, return_tensors="pt")
    eos = engine.eos_token_id

    def raw() -> Any:
        with torch.no_grad():
            return model.generate(**encoded, max_new_tokens=new_tokens, do_sample=False, eos_token_id=eos,
                                  pad_token_id=eos)

    answer = handler.generate(request)
    reference = raw()[0, encoded["input_ids"].shape[1]:]
    if answer["details"]["generated_tokens"] != len(reference) or answer["generated_text"] != tokenizer.decode(
            reference, skip_special_tokens=True):
        raise SystemExit("the handler and model.generate produced different tokens; the comparison is void")
    handler_times, raw_times = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        handler.generate(request)
        handler_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        raw()
        raw_times.append(time.perf_counter() - start)
    # Pairs run back to back share the machine's momentary load; the median of their ratios is the
    # robust figure on a shared machine, and the minima show the uncontended times.
    ratios = [h / r for h, r in zip(handler_times, raw_times, strict=True)]
    return {"tokens": len(reference), "handler_s": statistics.median(handler_times),
            "raw_s": statistics.median(raw_times), "handler_min_s": min(handler_times),
            "raw_min_s": min(raw_times), "overhead": statistics.median(ratios) - 1.0,
            "overhead_min": min(handler_times) / min(raw_times) - 1.0}


def server_throughput(predictor: Any, prompts: list[str], concurrency: int, requests: int,
                      new_tokens: int) -> dict[str, Any]:
    """Output tokens/s and requests/s of ``requests`` non-streaming requests from ``concurrency`` threads."""
    lock = threading.Lock()
    issued, tokens, latencies = [0], [0], []

    def worker() -> None:
        while True:
            with lock:
                if issued[0] >= requests:
                    return
                index = issued[0]
                issued[0] += 1
            start = time.perf_counter()
            body = predictor.generate(prompts[index % len(prompts)], max_new_tokens=new_tokens, details=True)
            elapsed = time.perf_counter() - start
            with lock:
                tokens[0] += body["details"]["generated_tokens"]
                latencies.append(elapsed)

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    return {"concurrency": concurrency, "requests": requests, "tokens": tokens[0], "wall_s": wall,
            "tokens_per_s": tokens[0] / wall, "requests_per_s": requests / wall,
            "p50_latency_s": statistics.median(latencies)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15, help="alternating handler/raw pairs")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument("--requests-per-worker", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of c1, c4, c8; ratios per round, then median")
    parser.add_argument("--no-record", action="store_true", help="print only; do not append to docs")
    args = parser.parse_args()

    from inf2_deploy.benchmarking.config import BenchConfig
    from inf2_deploy.benchmarking.prompts import make_prompts
    from inf2_deploy.benchmarking.runner import bench

    with tempfile.TemporaryDirectory(prefix="inf2-serving-bench-") as tmp:
        os.environ["INF2_DEPLOY_HOME"] = tmp  # local deployment records and caches stay in the temp folder
        from inf2_deploy.local.deploy import serve_local
        from inf2_deploy.spec.deployment_spec import DeploymentSpec
        from transformers import AutoTokenizer

        deployment = serve_local(DeploymentSpec(model="tiny-gptj", batch_size=4, n_positions=256),
                                 name="serving-bench", backend="cpu")
        try:
            tokenizer = AutoTokenizer.from_pretrained(deployment.artifact_dir)
            prompts = make_prompts(tokenizer, args.prompt_tokens, count=32)
            overhead = handler_overhead(Path(deployment.artifact_dir), prompts[0], args.new_tokens, args.repeats)
            print(f"handler {overhead['handler_s'] * 1000:.1f} ms vs model.generate {overhead['raw_s'] * 1000:.1f} ms"
                  f" for {overhead['tokens']} tokens: overhead {overhead['overhead']:+.1%}")
            predictor = deployment.predictor
            predictor.generate(prompts[0], max_new_tokens=2)  # warm the server
            rounds = []
            for number in range(args.rounds):
                levels = []
                for concurrency in LEVELS:
                    level = server_throughput(predictor, prompts, concurrency,
                                              max(8, args.requests_per_worker * concurrency), args.new_tokens)
                    levels.append(level)
                    print(f"round {number + 1} c{concurrency}: {level['tokens_per_s']:.1f} tok/s, "
                          f"{level['requests_per_s']:.2f} req/s, p50 {level['p50_latency_s'] * 1000:.0f} ms")
                rounds.append(levels)
            config = BenchConfig(concurrency=LEVELS, requests=8, prompt_tokens=args.prompt_tokens,
                                 max_new_tokens=args.new_tokens)
            streamed = bench(predictor, config=config, tokenizer=tokenizer)
        finally:
            deployment.delete()

    scalings = [levels[-1]["tokens_per_s"] / levels[0]["tokens_per_s"] for levels in rounds]
    scaling = statistics.median(scalings)
    # Other load only ever slows a level down, so each level's best round is its least disturbed one
    # (the reasoning behind timeit's min); both views are reported.
    best = [max(levels[i]["tokens_per_s"] for levels in rounds) for i in range(len(LEVELS))]
    best_scaling = best[-1] / best[0]
    rows = [f"Model: tiny-gptj (2 layers, width 64, GPT-J vocabulary), CPU backend, {args.prompt_tokens}-token "
            f"prompts, {args.new_tokens} new tokens, greedy.", "",
            "| batch 1, in process | median ms | min ms |", "|---|---|---|",
            f"| `ModelHandler.generate` | {overhead['handler_s'] * 1000:.1f} | "
            f"{overhead['handler_min_s'] * 1000:.1f} |",
            f"| `model.generate`, same {overhead['tokens']} tokens | {overhead['raw_s'] * 1000:.1f} | "
            f"{overhead['raw_min_s'] * 1000:.1f} |", "",
            f"Handler overhead **{overhead['overhead']:+.1%}** (median of the ratios of {args.repeats} back-to-back "
            f"pairs; {overhead['overhead_min']:+.1%} between the minima); "
            f"target <= {TARGET_OVERHEAD:.0%}: {'met' if overhead['overhead'] <= TARGET_OVERHEAD else '**missed**'}",
            "", "| local server, batch_size 4, non-streaming | output tok/s per round | median tok/s | "
            "median req/s | median p50 latency ms |", "|---|---|---|---|---|"]
    for index, concurrency in enumerate(LEVELS):
        runs = [levels[index] for levels in rounds]
        per_round = ", ".join(f"{r['tokens_per_s']:.0f}" for r in runs)
        rows.append(f"| concurrency {concurrency} ({runs[0]['requests']} requests) | {per_round} | "
                    f"{statistics.median(r['tokens_per_s'] for r in runs):.1f} | "
                    f"{statistics.median(r['requests_per_s'] for r in runs):.2f} | "
                    f"{statistics.median(r['p50_latency_s'] for r in runs) * 1000:.0f} |")
    rows += ["", f"Concurrency 8 / concurrency 1: **{scaling:.2f}x** as the median of per-round ratios "
                 f"({', '.join(f'{x:.2f}' for x in scalings)}), **{best_scaling:.2f}x** between each level's best "
                 f"round; target >= {TARGET_SCALING:g}x: {'met' if scaling >= TARGET_SCALING else '**missed**'} "
                 f"by the median, {'met' if best_scaling >= TARGET_SCALING else '**missed**'} by the best rounds. "
                 f"Load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (shared "
                 "machine); the server, the client threads and the rest of the machine share those cores.", "",
             "`inf2-deploy bench` (streaming, 8 requests per level) against the same server, which batches "
             "streamed requests like the others:", "",
             "| concurrency | TTFT p50 ms | TPOT p50 ms | E2E p50 ms | output tok/s |", "|---|---|---|---|---|"]
    for level in streamed.levels:
        stats = level.stats
        rows.append(f"| {stats.concurrency} | {stats.ttft.p(50) * 1000:.0f} | {stats.tpot.p(50) * 1000:.1f} | "
                    f"{stats.e2e.p(50) * 1000:.0f} | {stats.output_tokens_per_second:.1f} |")
    body = "\n".join(rows)
    print(body)
    if not args.no_record:
        append_section("Serving on tiny-gptj (CPU)", body, "python benchmarks/serving_bench.py")
    return 0


if __name__ == "__main__":
    sys.exit(main())
