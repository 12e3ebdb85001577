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
(3) Issue 16's targets, static batches (``option.rolling_batch=disable``, max_batch_delay
    100 ms) against the rolling batch, each configuration its own local server process:
    TTFT at concurrency 1 with batch_size 4 against 1 (target: rolling at most 1.2x); the
    head-of-line probe (``hol_probe.py``; target: rolling at most 2x); output tok/s at
    concurrency 8 with batch_size 4, uniform requests and a mix of 8 and 128 new tokens
    (targets: rolling at least static, and at least 1.5x it for the mix).

Run: ``.venv/bin/python benchmarks/serving_bench.py [--part scaling|rolling|all]``.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from report import append_section, code_version, loadavg  # noqa: E402

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
                      new_tokens: Sequence[int]) -> dict[str, Any]:
    """Output tokens/s and requests/s of ``requests`` non-streaming requests from ``concurrency`` threads.

    Request ``i`` asks for ``new_tokens[i % len(new_tokens)]`` tokens (one value: uniform requests).
    """
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
            body = predictor.generate(prompts[index % len(prompts)], max_new_tokens=new_tokens[index % len(new_tokens)],
                                      details=True)
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


def scaling(args: argparse.Namespace) -> None:
    """Parts (1) and (2): handler overhead and throughput against concurrency; appends their section."""
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
                                              max(8, args.requests_per_worker * concurrency), (args.new_tokens,))
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
        append_section("Serving on tiny-gptj (CPU)", body, "python benchmarks/serving_bench.py --part scaling")


# --- (3) issue 16: the rolling batch against static batches ---------------------------------------------

TARGET_TTFT_RATIO = 1.2  # rolling, concurrency 1: TTFT at batch_size 4 over TTFT at batch_size 1
TARGET_MIX_SPEEDUP = 1.5  # rolling over static output tok/s at concurrency 8, short and long requests mixed
STATIC_DELAY_MS = 100
WORKLOADS = {"uniform, 64 new tokens each": (64,), "mix, 8 and 128 new tokens alternating": (8, 128)}


def tiny_properties(weights: Path, *, batch_size: int, rolling: bool, n_positions: int = 512) -> str:
    """serving.properties for tiny-gptj on the CPU backend, with static batches (max_batch_delay
    100 ms) or the rolling batch, written with the packager's renderer and the contract's keys."""
    from inf2_deploy.artifact.properties import render_properties
    from inf2_serving.contract import ENGINE, PROPERTY_BY_FIELD, ROLLING_BATCH_OFF, ROLLING_BATCH_ON

    values: dict[str, Any] = {"engine": ENGINE, "model_id": str(weights), "backend": "cpu", "dtype": "fp32",
                              "n_positions": n_positions, "batch_size": batch_size}
    # As the packager writes them: DJL's rolling-batch loop keeps batch_size requests in flight; its
    # dynamic batching gathers batch_size requests, waiting up to max_batch_delay.
    if rolling:
        values.update(rolling_batch=ROLLING_BATCH_ON, max_rolling_batch_size=batch_size)
    else:
        values.update(rolling_batch=ROLLING_BATCH_OFF, dynamic_batch_size=batch_size,
                      max_batch_delay_ms=STATIC_DELAY_MS)
    return render_properties({PROPERTY_BY_FIELD[name].key: value for name, value in values.items()})


@contextlib.contextmanager
def tiny_servers(weights: Path, folder: Path, configs: Sequence[tuple[str, int]]
                 ) -> Iterator[dict[tuple[str, int], Any]]:
    """One local server process on 127.0.0.1 per ``(mode, batch_size)``, all up at once; yields their predictors.

    ``mode`` is ``static`` or ``rolling``. Idle servers cost nothing: each waits for requests. Each
    server runs torch on one thread (``OMP_NUM_THREADS=1``): on a shared 2-core machine more
    threads per process only contend (a tiny-gptj step is no faster with two).
    """
    from inf2_deploy.local.supervisor import LocalSupervisor

    os.environ["OMP_NUM_THREADS"] = "1"  # inherited by the server processes
    supervisor = LocalSupervisor()
    deployments, predictors = [], {}
    try:
        for mode, batch_size in configs:
            artifact = folder / f"{mode}-bs{batch_size}"
            artifact.mkdir(parents=True, exist_ok=True)
            (artifact / "serving.properties").write_text(
                tiny_properties(weights, batch_size=batch_size, rolling=mode == "rolling"), encoding="utf-8")
            deployments.append(supervisor.start(artifact, name=artifact.name, backend="cpu"))
            predictors[(mode, batch_size)] = deployments[-1].predictor
        yield predictors
    finally:
        for predictor in predictors.values():
            predictor.close()
        for deployment in deployments:
            deployment.delete()


def ttft_at_concurrency_1(predictors: dict[tuple[str, int], Any], tokenizer: Any, args: argparse.Namespace
                          ) -> dict[tuple[str, int], list[float]]:
    """Every streamed request's TTFT at concurrency 1 (``inf2-deploy bench``'s runner), per server, in rounds."""
    from inf2_deploy.benchmarking.config import BenchConfig
    from inf2_deploy.benchmarking.runner import bench

    config = BenchConfig(concurrency=(1,), requests=args.ttft_requests, prompt_tokens=args.prompt_tokens,
                         max_new_tokens=16)
    ttfts: dict[tuple[str, int], list[float]] = {key: [] for key in predictors}
    for number in range(args.rounds):
        for key, predictor in predictors.items():
            (level,) = bench(predictor, config=config, tokenizer=tokenizer).levels
            ttfts[key] += [timing.ttft for timing in level.timings if timing.ttft is not None]
            print(f"round {number + 1} TTFT {key}: p50 {level.stats.ttft.p(50) * 1000:.0f} ms", flush=True)
    return ttfts


def throughput_at_concurrency_8(predictors: dict[str, Any], prompts: list[str], args: argparse.Namespace
                                ) -> dict[tuple[str, str], list[float]]:
    """Output tok/s at concurrency 8 per (workload, mode), in rounds; which mode goes first alternates."""
    rates: dict[tuple[str, str], list[float]] = {}
    for number in range(args.c8_rounds):
        for workload, new_tokens in WORKLOADS.items():
            order = list(predictors.items())
            for mode, predictor in order if number % 2 == 0 else order[::-1]:
                result = server_throughput(predictor, prompts, 8, args.c8_requests, new_tokens)
                rates.setdefault((workload, mode), []).append(result["tokens_per_s"])
                print(f"round {number + 1} {workload} {mode}: {result['tokens_per_s']:.0f} tok/s", flush=True)
    return rates


def _verdict(met: bool) -> str:
    return "met" if met else "**missed**"


def rolling_report(ttfts: dict[tuple[str, int], list[float]], probe: dict[str, list[dict[str, float]]],
                   rates: dict[tuple[str, str], list[float]], args: argparse.Namespace) -> str:
    """Issue 16's section: the three tables and which targets are met."""
    from hol_probe import LONG_TOKENS, TARGET, probe_table

    median = {key: statistics.median(values) for key, values in ttfts.items()}
    rows = ["### TTFT at concurrency 1", "",
            f"`inf2-deploy bench`'s runner, streamed, 16 new tokens, {args.ttft_requests} requests per server and "
            f"round, {args.rounds} rounds; p50 over all of them.", "",
            "| batching | batch_size 1: TTFT p50 ms | batch_size 4: TTFT p50 ms | bs4 / bs1 |", "|---|---|---|---|"]
    for mode in ("static", "rolling"):
        rows.append(f"| {mode} | {median[(mode, 1)] * 1000:.1f} | {median[(mode, 4)] * 1000:.1f} | "
                    f"{median[(mode, 4)] / median[(mode, 1)]:.2f}x |")
    ttft_ratio = median[("rolling", 4)] / median[("rolling", 1)]
    rows += ["", f"Target rolling bs4 <= {TARGET_TTFT_RATIO:g}x bs1: {_verdict(ttft_ratio <= TARGET_TTFT_RATIO)} "
             f"({ttft_ratio:.2f}x).", "", f"### A short request during a {LONG_TOKENS}-token stream (hol_probe.py)",
             "", f"batch_size 4, 8 new tokens, medians of {args.hol_repeats} rounds.", ""]
    table, ratios = probe_table(probe)
    rows += [*table, "", f"Target rolling during / alone <= {TARGET:g}x: {_verdict(ratios['rolling'] <= TARGET)} "
             f"({ratios['rolling']:.2f}x; static {ratios['static']:.2f}x).", "",
             "### Output tokens/s at concurrency 8, batch_size 4", "",
             f"Non-streaming, {args.c8_requests} requests per run, {args.c8_rounds} rounds; static and rolling run "
             "back to back, which goes first alternates.",
             "", "| workload | static tok/s per round | rolling tok/s per round | rolling / static, median of rounds |",
             "|---|---|---|---|"]
    for workload in WORKLOADS:
        static, rolled = rates[(workload, "static")], rates[(workload, "rolling")]
        speedup = statistics.median(r / s for r, s in zip(rolled, static, strict=True))
        target = TARGET_MIX_SPEEDUP if workload.startswith("mix") else 1.0
        rows.append(f"| {workload} | {', '.join(f'{x:.0f}' for x in static)} | "
                    f"{', '.join(f'{x:.0f}' for x in rolled)} | {speedup:.2f}x (target >= {target:g}x: "
                    f"{_verdict(speedup >= target)}) |")
    return "\n".join(rows)


def rolling(args: argparse.Namespace) -> None:
    """Part (3): issue 16's targets for the rolling batch against static batches; appends their section."""
    from hol_probe import run_probe

    load_before = loadavg()
    with tempfile.TemporaryDirectory(prefix="inf2-rolling-bench-") as tmp:
        os.environ["INF2_DEPLOY_HOME"] = tmp  # local deployment records stay in the temp folder
        from inf2_deploy.artifact.tiny import build_tiny_gptj
        from inf2_deploy.benchmarking.prompts import make_prompts
        from transformers import AutoTokenizer

        weights = build_tiny_gptj(Path(tmp) / "tiny-gptj")
        tokenizer = AutoTokenizer.from_pretrained(weights)
        prompts = make_prompts(tokenizer, args.prompt_tokens, count=32)
        configs = [(mode, size) for mode in ("static", "rolling") for size in (1, 4)]
        with tiny_servers(weights, Path(tmp), configs) as predictors:
            at_bs4 = {mode: predictors[(mode, 4)] for mode in ("static", "rolling")}
            ttfts = ttft_at_concurrency_1(predictors, tokenizer, args)
            probe = run_probe(at_bs4, prompts, args.hol_repeats)
            rates = throughput_at_concurrency_8(at_bs4, prompts, args)
    body = "\n".join([
        f"tiny-gptj (2 layers, width 64, GPT-J vocabulary), CPU backend, {args.prompt_tokens}-token prompts, greedy. "
        f"Each configuration is its own local server process on 127.0.0.1, all up during the run: static batches "
        f"(`option.rolling_batch=disable`, max_batch_delay {STATIC_DELAY_MS} ms) and the rolling batch (`auto`), "
        "torch on one thread each. "
        f"Code at {code_version()}. `/proc/loadavg` before: `{load_before}`, after: `{loadavg()}`.", "",
        rolling_report(ttfts, probe, rates, args)])
    print(body)
    if not args.no_record:
        append_section("Rolling batch on tiny-gptj (CPU): issue 16's targets", body,
                       "python benchmarks/serving_bench.py --part rolling")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("scaling", "rolling", "all"), default="all",
                        help="scaling: parts (1) and (2); rolling: part (3), issue 16's targets")
    parser.add_argument("--repeats", type=int, default=15, help="alternating handler/raw pairs")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument("--requests-per-worker", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every measurement; ratios per round, "
                        "then median")
    parser.add_argument("--ttft-requests", type=int, default=8, help="rolling part: requests per server and round")
    parser.add_argument("--c8-requests", type=int, default=64, help="rolling part: requests per throughput run")
    parser.add_argument("--c8-rounds", type=int, default=5, help="rolling part: throughput rounds")
    parser.add_argument("--hol-repeats", type=int, default=7, help="rolling part: head-of-line probe rounds")
    parser.add_argument("--no-record", action="store_true", help="print only; do not append to docs")
    args = parser.parse_args()
    if args.part in ("scaling", "all"):
        scaling(args)
    if args.part in ("rolling", "all"):
        rolling(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
