"""``inf2-deploy verify``: check that an endpoint's greedy tokens are the model's own."""
from __future__ import annotations

import argparse
import json

from ..spec.floors import REFERENCE_DTYPE_BYTES
from .arg_types import add_target_arguments, fraction, positive_int
from .progress import TransferBars

__all__ = ["add_parser", "render_report", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "verify",
        help="prove an endpoint computes what its model computes (greedy tokens against a CPU reference)",
        description="Send fixed greedy prompts (short, long, non-ASCII) to the endpoint and score every token it "
        "returns against transformers on the CPU, on the same artifact. Exit 0 when the first --tokens tokens "
        "of every prompt agree (near-ties within --margin allowed for fp16/bf16 rounding), else 1.",
    )
    add_target_arguments(parser)
    parser.add_argument("--artifact", metavar="PATH_OR_S3",
                        help="the artifact folder or s3:// prefix (default: the deployment's own; S3 is copied "
                             "into the local cache)")
    parser.add_argument("--reference-dtype", choices=tuple(REFERENCE_DTYPE_BYTES), default="fp32",
                        help="dtype of the CPU reference (default fp32; bf16 halves its memory: 12.1 GB for "
                             "GPT-J-6B instead of 24.2)")
    parser.add_argument("--tokens", type=positive_int, default=16, metavar="N",
                        help="greedy tokens per prompt that must agree (default 16)")
    parser.add_argument("--margin", type=fraction, default=0.02, metavar="F",
                        help="a token the reference ranks second counts as agreeing when its logit is within "
                             "F x the largest |logit| of the top one (default 0.02)")
    parser.add_argument("--region", metavar="R", help="AWS region of the endpoint")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.set_defaults(run=run)


def render_report(report, console) -> None:  # noqa: ANN001 - VerifyReport and rich Console, imported lazily
    """One row per prompt, then the verdict."""
    from rich.table import Table

    table = Table(title=f"verify {report.target} against {report.reference_dtype} on the CPU",
                  title_justify="left")
    for column in ("prompt", "in", "agree", "ties", "diverges at", "endpoint text"):
        table.add_column(column, overflow="ellipsis", no_wrap=column != "diverges at")
    for verdict in report.prompts:
        where = "-" if verdict.agrees else f"token {verdict.first_divergence} (reference: {verdict.reference_choice!r})"
        table.add_row(verdict.label.split()[0], str(verdict.prompt_tokens),
                      f"{verdict.exact + verdict.near_ties}/{verdict.compared}", str(verdict.near_ties), where,
                      repr(verdict.endpoint_text[:24]))
    console.print(table)
    verdict = "[green]agrees[/green]" if report.ok else "[red]disagrees[/red]"
    console.print(f"{verdict}: {report.agreement:.1%} of compared tokens agree (first {report.tokens} per prompt, "
                  f"near-tie margin {report.margin:g})")


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from ..client.verify import verify

    console = Console(stderr=args.json)
    bars = TransferBars(console, transient=True)

    def on_progress(stage: str, done: int, total: int) -> None:
        if stage == "download":
            bars.update(done, total, "artifact from S3")
        else:
            bars.stop()
            console.print(f"[dim]{'loading the CPU reference' if stage == 'load' else 'prompt: ' + stage}[/dim]")

    try:
        report = verify(args.url or args.name, artifact=args.artifact, region=args.region,
                        reference_dtype=args.reference_dtype, tokens=args.tokens, margin=args.margin,
                        on_progress=on_progress)
    finally:
        bars.stop()
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        render_report(report, console)
    return 0 if report.ok else 1
