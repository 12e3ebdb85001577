"""Head-of-line probe: a short request's time to first token alone, and while one long stream runs.

With static batches a request that arrives while a batch runs waits for that batch to end
(issue 16 measured 7.3x to 39x its TTFT alone). With the rolling batch it takes a free slot at
the next step. Each round, on each server: the short request (8 new tokens, streamed) alone;
then a 300-token stream starts, and once its first token has arrived the same short request
is sent again. TTFT comes from the wire (``inf2_deploy.benchmarking.stats.RequestTiming``).
Target for the rolling batch: TTFT during the long stream at most 2x TTFT alone.

Servers: tiny-gptj (built offline), CPU backend, batch_size 4, each its own local server
process on 127.0.0.1: static batches (``option.rolling_batch=disable``, max_batch_delay
100 ms) and the rolling batch (``auto``). ``serving_bench.py --part rolling`` runs this probe
as part of issue 16's section.

Run: ``.venv/bin/python benchmarks/hol_probe.py [--repeats 7] [--no-record]``.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from report import append_section, code_version, loadavg  # noqa: E402

SHORT_TOKENS = 8
LONG_TOKENS = 300
TARGET = 2.0
START_TIMEOUT_S = 120.0


def stream_timing(predictor: Any, prompt: str, new_tokens: int, started: threading.Event | None = None) -> Any:
    """One streamed request timed from the wire, as a ``RequestTiming``; ``started`` is set at its first token."""
    from inf2_deploy.benchmarking.stats import RequestTiming

    token_times: list[float] = []
    start = time.perf_counter()
    for event in predictor.stream_events(prompt, max_new_tokens=new_tokens):
        if isinstance(event, dict) and isinstance(event.get("token"), dict):
            token_times.append(time.perf_counter())
            if started is not None:
                started.set()
    return RequestTiming(start, tuple(token_times), time.perf_counter())


def probe_once(predictor: Any, short_prompt: str, long_prompt: str) -> dict[str, float]:
    """The short request's TTFT alone and during the long stream, and how much of the long stream overlapped it."""
    alone = stream_timing(predictor, short_prompt, SHORT_TOKENS)
    started = threading.Event()
    long: dict[str, Any] = {}

    def run_long() -> None:
        long["timing"] = stream_timing(predictor, long_prompt, LONG_TOKENS, started)

    thread = threading.Thread(target=run_long, name="hol-long")
    thread.start()
    if not started.wait(START_TIMEOUT_S):
        raise SystemExit("the long stream sent no token; is the server up?")
    during = stream_timing(predictor, short_prompt, SHORT_TOKENS)
    thread.join()
    timing = long["timing"]
    first = during.token_times[0]
    return {"alone_s": alone.ttft, "during_s": during.ttft, "long_s": timing.end - timing.start,
            "long_tokens": timing.output_tokens,
            # Long-stream tokens that arrived after the short request's first token: 0 means it waited for the end.
            "long_tokens_after": sum(1 for arrived in timing.token_times if arrived > first)}


def run_probe(predictors: Mapping[str, Any], prompts: Sequence[str], repeats: int) -> dict[str, list[dict[str, float]]]:
    """``repeats`` rounds of :func:`probe_once` on each predictor in turn (so each sees the same machine load)."""
    results: dict[str, list[dict[str, float]]] = {mode: [] for mode in predictors}
    for number in range(repeats):
        for mode, predictor in predictors.items():
            result = probe_once(predictor, prompts[0], prompts[1])
            results[mode].append(result)
            print(f"round {number + 1} {mode}: alone {result['alone_s'] * 1000:.0f} ms, during "
                  f"{result['during_s'] * 1000:.0f} ms, long stream {result['long_s']:.2f} s "
                  f"({result['long_tokens_after']:.0f} of its tokens after)", flush=True)
    return results


def probe_table(results: Mapping[str, list[dict[str, float]]]) -> tuple[list[str], dict[str, float]]:
    """Markdown rows of the probe's medians, and the during/alone ratio per mode."""
    rows = [f"| batch_size 4 | short alone: TTFT p50 ms | during a {LONG_TOKENS}-token stream: TTFT p50 ms | ratio "
            f"| long-stream tokens after the short one's first, median | {LONG_TOKENS}-token stream s, median |",
            "|---|---|---|---|---|---|"]
    ratios = {}
    for mode, runs in results.items():
        alone = statistics.median(r["alone_s"] for r in runs)
        during = statistics.median(r["during_s"] for r in runs)
        ratios[mode] = during / alone
        rows.append(f"| {mode} | {alone * 1000:.0f} | {during * 1000:.0f} | {ratios[mode]:.2f}x | "
                    f"{statistics.median(r['long_tokens_after'] for r in runs):.0f} | "
                    f"{statistics.median(r['long_s'] for r in runs):.2f} |")
    return rows, ratios


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument("--no-record", action="store_true", help="print only; do not append to docs")
    args = parser.parse_args()
    from serving_bench import tiny_servers

    load_before = loadavg()
    with tempfile.TemporaryDirectory(prefix="inf2-hol-probe-") as tmp:
        os.environ["INF2_DEPLOY_HOME"] = tmp  # local deployment records stay in the temp folder
        from inf2_deploy.artifact.tiny import build_tiny_gptj
        from inf2_deploy.benchmarking.prompts import make_prompts
        from transformers import AutoTokenizer

        weights = build_tiny_gptj(Path(tmp) / "tiny-gptj")
        prompts = make_prompts(AutoTokenizer.from_pretrained(weights), args.prompt_tokens, count=2)
        with tiny_servers(weights, Path(tmp), [("static", 4), ("rolling", 4)]) as predictors:
            results = run_probe({mode: predictors[(mode, 4)] for mode in ("static", "rolling")}, prompts,
                                args.repeats)
    rows, ratios = probe_table(results)
    verdict = "met" if ratios["rolling"] <= TARGET else "**missed**"
    body = "\n".join([
        f"tiny-gptj, CPU backend, {args.prompt_tokens}-token prompts, greedy, streamed; medians of {args.repeats} "
        f"rounds. Code at {code_version()}. `/proc/loadavg` before: `{load_before}`, after: `{loadavg()}`.", "",
        *rows, "", f"Rolling: during / alone **{ratios['rolling']:.2f}x**, target <= {TARGET:g}x: {verdict} "
        f"(static: {ratios['static']:.2f}x)."])
    print(body)
    if not args.no_record:
        append_section("Head-of-line probe on tiny-gptj (CPU)", body, "python benchmarks/hol_probe.py")
    return 0


if __name__ == "__main__":
    sys.exit(main())
