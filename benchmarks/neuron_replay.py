"""What admissions cost the Neuron rolling batch: replayed tokens and replay steps per ``replay_interval_ms``.

On the transformers-neuronx stand-in (GPT-J's graph computed in torch, tests/support/standins)
with tiny-gptj built offline with weight std 0.16, batch_size 4, n_positions 256. A fixed
arrival trace (seeded: prompt lengths 8-64 tokens, max_new_tokens 16-128, gaps 0-2000 ms) goes
through the real :class:`~inf2_serving.scheduler.SlotScheduler` and
:class:`~inf2_serving.neuron_rolling.NeuronDecodeBatch`, once per interval setting.

Time is nominal, not measured: every graph run (one token for the whole batch) counts as
``--step-ms`` (30 ms by default, about two GPT-J-6B decode floors on one inf2 chip), and the
idle time before the next arrival is skipped. The admission policy reads that clock, so every
number printed is deterministic. Run: ``.venv/bin/python benchmarks/neuron_replay.py``.
"""
from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "support" / "standins"))  # transformers_neuronx stand-in

BATCH_SIZE = 4
N_POSITIONS = 256


@dataclass(frozen=True)
class Arrival:
    """One request of the trace."""

    at_ms: float
    input_ids: tuple[int, ...]
    max_new_tokens: int


@dataclass(frozen=True)
class Trace:
    """Arrivals ``gap_ms`` apart on average."""

    gap_ms: float
    arrivals: tuple[Arrival, ...]

    def describe(self) -> str:
        prompts = [len(a.input_ids) for a in self.arrivals]
        new = [a.max_new_tokens for a in self.arrivals]
        longest = max(p + n for p, n in zip(prompts, new, strict=True))
        return (f"{len(self.arrivals)} requests over {self.arrivals[-1].at_ms:.0f} ms (mean gap {self.gap_ms:g} ms, "
                f"prompts {min(prompts)}-{max(prompts)} tokens, max_new_tokens {min(new)}-{max(new)}, "
                f"longest context {longest})")


def arrival_trace(requests: int, seed: int, gap_ms: float) -> Trace:
    """``requests`` arrivals with mixed prompt lengths, lengths of output and gaps (0 to 2 x ``gap_ms``);
    prompts and lengths depend on ``seed`` only, so traces with other gaps hold the same requests."""
    rng = random.Random(seed)
    at_ms, arrivals = 0.0, []
    for _ in range(requests):
        at_ms += gap_ms * rng.choice([0, 0.5, 1, 1.5, 2])
        prompt = tuple(rng.randrange(1000, 50000) for _ in range(rng.choice([8, 16, 32, 64])))
        arrivals.append(Arrival(at_ms, prompt, rng.choice([16, 32, 64, 128])))
    return Trace(gap_ms, tuple(arrivals))


class NominalClock:
    """Seconds: ``step`` per graph run of ``model`` (the stand-in counts them), plus skipped idle time."""

    def __init__(self, model: object, step: float) -> None:
        self.model = model
        self.step = step
        self.idle = 0.0
        self._start = model.graph_runs

    def __call__(self) -> float:
        return self.idle + (self.model.graph_runs - self._start) * self.step


@dataclass
class Run:
    """One interval setting's outcome."""

    gap_ms: float
    interval_ms: int
    stats: object
    ttft_ms: list[float] = field(default_factory=list)
    output_tokens: int = 0
    seconds: float = 0.0


def run_trace(backend: object, tokenizer: object, trace: Trace, interval_ms: int, step: float) -> Run:
    """Serve ``trace`` through a fresh scheduler and decode batch on ``backend``'s model."""
    from inf2_serving.engine import PreparedPrompt
    from inf2_serving.neuron_rolling import NeuronDecodeBatch
    from inf2_serving.scheduler import SlotScheduler
    from inf2_serving.schema import GenerationParams

    clock = NominalClock(backend.model, step)
    batch = NeuronDecodeBatch(backend.model, BATCH_SIZE, tokenizer.eos_token_id, interval_ms / 1000, clock)
    scheduler = SlotScheduler(batch, tokenizer, tokenizer.eos_token_id)
    result = Run(trace.gap_ms, interval_ms, batch.stats)
    pending = deque(trace.arrivals)

    def first_token_timer(arrival: Arrival):
        tokens = []

        def on_token(token_id: int, text: str, final: object) -> None:
            if not tokens:
                result.ttft_ms.append(clock() * 1000 - arrival.at_ms)
            tokens.append(token_id)
            result.output_tokens += 1
        return on_token

    while pending or scheduler.active or scheduler.waiting:
        if not (scheduler.active or scheduler.waiting):
            clock.idle += max(0.0, pending[0].at_ms / 1000 - clock())  # nothing to run until it arrives
        while pending and pending[0].at_ms <= clock() * 1000:
            arrival = pending.popleft()
            prepared = PreparedPrompt("", arrival.input_ids, GenerationParams(max_new_tokens=arrival.max_new_tokens))
            scheduler.submit(prepared, first_token_timer(arrival))
        scheduler.step()
    result.seconds = clock()
    return result


def table(runs: Sequence[Run], step: float) -> str:
    """The runs as a markdown table; the bound is R / (R + I), R the longest replay's time, I the interval."""
    lines = ["| mean gap ms | replay_interval_ms | admissions | replays | replayed tokens "
             "| replayed tokens per admitted request | steps | replay steps | share replaying "
             "| bound R/(R+I) | TTFT p50 ms | TTFT p90 ms | output tok/s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for run in runs:
        stats = run.stats
        ttft = sorted(run.ttft_ms)
        p90 = ttft[min(len(ttft) - 1, int(0.9 * len(ttft)))]
        longest = stats.longest_replay * step
        lines.append(
            f"| {run.gap_ms:g} | {run.interval_ms} | {stats.admissions} | {stats.replays} | {stats.replayed_tokens} "
            f"| {stats.replayed_per_admitted:.1f} | {stats.steps} | {stats.replay_steps} "
            f"| {stats.replay_share:.0%} | {longest / (longest + run.interval_ms / 1000):.0%} "
            f"| {statistics.median(ttft):.0f} | {p90:.0f} | {run.output_tokens / run.seconds:.1f} |")
    return "\n".join(lines)


def load_backend(folder: Path) -> tuple[object, object]:
    """The Neuron backend on the stand-in for the tiny model in ``folder``, and its tokenizer."""
    from inf2_serving.config import ServingConfig
    from inf2_serving.neuron_backend import NeuronBackend
    from transformers import AutoConfig, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    config = ServingConfig.from_properties({
        "model_dir": str(folder), "model_id": str(folder), "backend": "neuron", "dtype": "fp32",
        "n_positions": str(N_POSITIONS), "batch_size": str(BATCH_SIZE), "tensor_parallel_degree": "2"})
    return NeuronBackend(config, AutoConfig.from_pretrained(folder), tokenizer.eos_token_id), tokenizer


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--intervals", default="1,1000,4000,1000000",
                        help="replay_interval_ms settings, comma-separated (1000000: no replay in these traces)")
    parser.add_argument("--gaps", default="750,2500", help="mean ms between arrivals, one trace each")
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--seed", type=int, default=16)
    parser.add_argument("--step-ms", type=float, default=30.0, help="nominal time of one graph run")
    args = parser.parse_args()
    from inf2_deploy.artifact.tiny import build_tiny_gptj

    traces = [arrival_trace(args.requests, args.seed, float(gap)) for gap in args.gaps.split(",")]
    step = args.step_ms / 1000
    with tempfile.TemporaryDirectory() as scratch:
        backend, tokenizer = load_backend(build_tiny_gptj(Path(scratch) / "sharp-gptj", init_std=0.16))
        runs = [run_trace(backend, tokenizer, trace, int(interval), step)
                for trace in traces for interval in args.intervals.split(",")]
    for trace in traces:
        print(f"- {trace.describe()}")
    print(f"- batch_size {BATCH_SIZE}, n_positions {N_POSITIONS}; one graph run = {args.step_ms:g} ms nominal\n")
    print(table(runs, step))
    return 0


if __name__ == "__main__":
    sys.exit(main())
