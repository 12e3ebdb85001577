"""``inf2-deploy plan``: check a deployment in about a second, before any money is spent."""
from __future__ import annotations

import argparse
import json

from .arg_types import positive_int
from .spec_flags import add_spec_flags, spec_from_args

__all__ = ["LIST_PRICE_NOTE", "add_parser", "render_plan", "render_prompt_cost", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "plan",
        help="check Neuron settings and show memory per core, image and serving.properties",
        description="Check a deployment against the model and the inf2 catalog. Exits 2 when it cannot work.",
    )
    add_spec_flags(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    parser.add_argument("--prompt-tokens", type=positive_int, default=128, metavar="N",
                        help="prompt length for the time-to-first-token floor (default 128): GPT-J's Neuron "
                             "graph takes prompt tokens one at a time")
    parser.set_defaults(run=run)


def render_prompt_cost(console, cost) -> None:  # noqa: ANN001 - rich Console and PromptCost, imported lazily
    """Draw the per-token, per-prompt and per-request floors."""
    from rich.table import Table

    table = Table(title="Latency floors (HBM-bandwidth bound; real steps are slower)", show_header=False,
                  title_justify="left")
    table.add_column("what", no_wrap=True)
    table.add_column("floor", overflow="fold")
    table.add_row("decode step", f"{cost.decode_floor_s * 1e3:.1f} ms/token (weights over {cost.chips} chip(s))")
    table.add_row(f"time to first token, {cost.prompt_tokens}-token prompt",
                  f"{cost.ttft_floor_s * 1e3:.0f} ms (prompt tokens run one per step: no parallel prefill)")
    if cost.rolling_batch:
        table.add_row("admission while rows run (rolling batch)",
                      f"stalls them up to {cost.longest_replay_s:.1f} s: their contexts replay, up to "
                      f"{cost.n_positions - 1} steps; option.replay_interval_ms spaces such admissions")
    else:
        table.add_row("KV cache reset per batch", f"{cost.reset_bytes / 1e6:.0f} MB written by reset()")
    table.add_row("`verify` reference on the CPU",
                  " / ".join(f"{size / 1e9:.1f} GB host RAM in {dtype}"
                             for dtype, size in cost.reference_bytes.items()))
    console.print(table)


#: The price row's note: the catalog holds EC2 list prices, and SageMaker's ml.* rates differ.
LIST_PRICE_NOTE = "EC2 list price; SageMaker's differs; --price-per-hour"


def _price_text(plan) -> str:  # noqa: ANN001 - Plan, imported lazily
    price = plan.price_per_hour
    if price is None:
        return "-"
    source = "--price-per-hour" if plan.spec.price_per_hour is not None else LIST_PRICE_NOTE
    return f"${price:.2f}/hour ({source})"


def _render_summary(console, plan, data) -> None:  # noqa: ANN001 - rich Console and Plan, imported lazily
    from rich.table import Table

    summary = Table(title=f"Plan for {plan.model.source}", show_header=False, title_justify="left")
    summary.add_column("setting", no_wrap=True)
    summary.add_column("value", overflow="fold")
    summary.add_row("parameters", f"{plan.model.parameters / 1e9:.3f} B")
    summary.add_row("instance", f"{data['instance_type']} x {data['instance_count']} "
                                f"({data['neuron_cores']} NeuronCores each)")
    summary.add_row("tensor parallel degree", str(data["tensor_parallel_degree"]))
    summary.add_row("n_positions / buckets", f"{data['n_positions']} / {data['buckets']}")
    summary.add_row("batch size / dtype", f"{data['batch_size']} / {data['dtype']}")
    summary.add_row("region", data["region"])
    summary.add_row("image", data["image_uri"] or "-")
    summary.add_row("price", _price_text(plan))
    console.print(summary)


def _render_memory(console, data) -> None:  # noqa: ANN001 - rich Console, imported lazily
    from rich.table import Table

    from ..spec.catalog import GIB

    memory = Table(title="HBM per NeuronCore", title_justify="left")
    memory.add_column("part")
    memory.add_column("GiB", justify="right")
    for part in ("weights", "kv_cache", "reserve", "total", "limit"):
        memory.add_row(part, f"{data['memory_per_core'][part] / GIB:.2f}")
    console.print(memory)


def _render_alternatives(console, plan) -> None:  # noqa: ANN001 - rich Console and Plan, imported lazily
    from rich.table import Table

    from ..spec.catalog import GIB

    if not plan.alternatives:
        return
    title = "Configurations that fit (best first)" if plan.ok else "Configurations that fix this (best first)"
    options = Table(title=title, title_justify="left")
    for column in ("instance", "tp", "GiB/core", "EC2 list $/hour", "host RAM"):
        options.add_column(column)
    for option in plan.alternatives[:8]:
        options.add_row(option.instance_type, str(option.tensor_parallel_degree),
                        f"{option.memory_per_core.total / GIB:.2f}", f"{option.price_per_hour:.2f}",
                        "tight" if option.host_ram_tight else "ok")
    console.print(options)


def render_plan(plan, cost=None) -> None:  # noqa: ANN001 - Plan and PromptCost, imported lazily
    """Draw ``plan`` as rich tables on stdout.

    A plan with errors shows only the errors and the configurations that fix them:
    its settings, memory and serving.properties would describe something that cannot run.
    """
    from rich.console import Console

    from ..artifact.properties import render_properties

    console = Console()
    if not plan.ok:
        for field, message in plan.errors:
            console.print(f"[red]error:[/red] {field}: {message}")
        _render_alternatives(console, plan)
        for warning in plan.warnings:
            console.print(f"[yellow]warning:[/yellow] {warning}")
        return
    data = plan.to_dict()
    _render_summary(console, plan, data)
    _render_memory(console, data)
    _render_alternatives(console, plan)
    if cost is not None:
        render_prompt_cost(console, cost)
    console.print("[bold]serving.properties[/bold]")
    console.print(render_properties(data["serving_properties"]), markup=False, highlight=False)
    for warning in plan.warnings:
        console.print(f"[yellow]warning:[/yellow] {warning}")


def run(args: argparse.Namespace) -> int:
    from ..errors import ConfigError
    from ..spec.floors import prompt_cost
    from ..spec.planner import make_plan

    try:
        plan = make_plan(spec_from_args(args))
    except ConfigError as exc:
        if not args.json:
            raise
        print(json.dumps({"ok": False, "errors": [{"field": f, "message": m} for f, m in exc.problems],
                          "warnings": []}))
        return exc.exit_code
    cost = prompt_cost(plan, args.prompt_tokens)
    if args.json:
        print(json.dumps({**plan.to_dict(), "prompt_cost": cost.to_dict()}, indent=2))
    else:
        render_plan(plan, cost)
    return 0 if plan.ok else 2
