"""``inf2-deploy bench``: TTFT, TPOT, E2E percentiles, throughput and cost per 1M tokens at several concurrencies."""
from __future__ import annotations

import argparse
import sys

from ..benchmarking.config import DEFAULT_CONCURRENCY, DEFAULT_MAX_NEW_TOKENS, DEFAULT_PROMPT_TOKENS
from .arg_types import add_target_arguments

__all__ = ["add_parser", "parse_concurrency", "render_result", "run"]


def parse_concurrency(text: str) -> tuple[int, ...]:
    """``"1,4,8"`` -> ``(1, 4, 8)``; argparse reports a ValueError as a usage error."""
    levels = tuple(int(part) for part in text.split(",") if part.strip())
    if not levels or min(levels) < 1:
        raise ValueError(text)
    return levels


parse_concurrency.__name__ = "concurrency list"  # argparse names the type in its error message


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="measure TTFT, per-token latency, throughput and $/1M tokens at several concurrencies",
        description="Stream requests with prompts of an exact token length at each concurrency level and "
        "report p50/p90/p99 TTFT, TPOT and end-to-end latency, output tokens/s, requests/s, errors and "
        "cost per 1M output tokens.",
    )
    add_target_arguments(parser)
    parser.add_argument("--concurrency", type=parse_concurrency, default=DEFAULT_CONCURRENCY, metavar="N,N,...",
                        help=f"concurrency levels to measure (default {','.join(map(str, DEFAULT_CONCURRENCY))})")
    amount = parser.add_mutually_exclusive_group()
    amount.add_argument("--requests", type=int, metavar="N",
                        help="requests per level (default 4 per concurrent worker, at least 16)")
    amount.add_argument("--duration", type=float, metavar="S", help="seconds per level instead of --requests")
    parser.add_argument("--prompt-tokens", type=int, default=DEFAULT_PROMPT_TOKENS, metavar="N",
                        help=f"exact prompt length in tokens (default {DEFAULT_PROMPT_TOKENS})")
    parser.add_argument("--max-new-tokens", type=int, default=DEFAULT_MAX_NEW_TOKENS, metavar="N",
                        help=f"tokens to generate per request (default {DEFAULT_MAX_NEW_TOKENS})")
    parser.add_argument("--tokenizer", metavar="PATH_OR_ID",
                        help="tokenizer folder, artifact folder or Hub id; default the deployment's artifact")
    parser.add_argument("--price-per-hour", type=float, metavar="USD",
                        help="USD per instance-hour; default the catalog reference for the endpoint's type")
    parser.add_argument("--instance-type", metavar="T", help="instance type for the price (default the endpoint's)")
    parser.add_argument("--instance-count", type=int, metavar="N",
                        help="instances behind the endpoint (default the endpoint's, else 1)")
    parser.add_argument("--region", metavar="R", help="AWS region of the endpoint")
    parser.add_argument("--out", metavar="FILE", help="write the results as JSON")
    parser.add_argument("--plot", metavar="PNG", help="write a PNG of latency and throughput against concurrency")
    parser.set_defaults(run=run)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.1f}"


def render_result(result, console) -> None:  # noqa: ANN001 - BenchResult and rich Console, imported lazily
    """Print one table per concurrency level and the price's origin."""
    from rich.table import Table

    for level in result.levels:
        stats = level.stats
        table = Table(title=f"concurrency {stats.concurrency}: {stats.requests} requests in "
                            f"{stats.wall_seconds:.1f} s", title_justify="left")
        table.add_column("metric")
        for q in ("p50", "p90", "p99"):
            table.add_column(f"{q} ms", justify="right")
        for label, dist in (("TTFT", stats.ttft), ("TPOT", stats.tpot), ("E2E", stats.e2e)):
            table.add_row(label, *(_ms(dist.p(q)) for q in (50, 90, 99)))
        console.print(table)
        cost = stats.cost_per_million_output_tokens
        kinds = ", ".join(f"{kind} x{count}" for kind, count in stats.error_kinds.items())
        console.print(f"  output tok/s [bold]{stats.output_tokens_per_second:.1f}[/bold]   "
                      f"req/s [bold]{stats.requests_per_second:.2f}[/bold]   "
                      f"errors [bold]{stats.errors}[/bold]/{stats.requests}" + (f" ({kinds})" if kinds else "")
                      + f"   $/1M output tokens [bold]{'-' if cost is None else f'{cost:.2f}'}[/bold]")
    if result.price_per_hour is None:
        console.print("price: unknown; pass --price-per-hour (or --instance-type) for $/1M tokens")
    else:
        console.print(f"price: ${result.price_per_hour:.4f}/hour x {result.instance_count} instance(s), "
                      f"from {result.price_source}")


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ..benchmarking.config import BenchConfig
    from ..benchmarking.runner import BenchProgress, bench

    config = BenchConfig(concurrency=args.concurrency, requests=args.requests, duration=args.duration,
                         prompt_tokens=args.prompt_tokens, max_new_tokens=args.max_new_tokens,
                         price_per_hour=args.price_per_hour, instance_type=args.instance_type,
                         instance_count=args.instance_count)
    console = Console()
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[info]}"), TimeElapsedColumn())
    with Progress(*columns, console=console) as bar:
        tasks: dict[int, int] = {}

        def on_progress(event: BenchProgress) -> None:
            if event.concurrency not in tasks:
                total = event.total if event.total is not None else event.duration
                tasks[event.concurrency] = bar.add_task(f"concurrency {event.concurrency}", total=total,
                                                        info="")
            done = event.completed if event.total is not None else min(event.elapsed, event.duration or 0)
            bar.update(tasks[event.concurrency], completed=done,
                       info=f"{event.completed} done, {event.errors} errors")

        result = bench(args.url or args.name, config=config, tokenizer=args.tokenizer, region=args.region,
                       progress=on_progress)
    render_result(result, console)
    if args.out:
        console.print(f"results: {result.save_json(args.out)}")
    if args.plot:
        from ..benchmarking.plot import plot_bench

        console.print(f"plot: {plot_bench(result, args.plot)}")
    if all(level.stats.errors == level.stats.requests for level in result.levels):
        print(f"error: every request failed; the first: {result.first_error}", file=sys.stderr)
        return 1
    return 0
