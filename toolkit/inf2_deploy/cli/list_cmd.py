"""``inf2-deploy list``: the endpoints inf2-deploy manages, and the local deployments."""
from __future__ import annotations

import argparse
import json
import sys

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "list", help="list managed SageMaker endpoints and local deployments with status, instance and age",
        description="List the SageMaker endpoints tagged inf2-deploy:managed=true in the region, and the "
        "local deployments. Without AWS credentials, only local deployments are listed.",
    )
    parser.add_argument("--region", metavar="R", help="AWS region (default: the standard resolution)")
    parser.add_argument("--json", action="store_true", help="print a JSON list")
    parser.set_defaults(run=run)


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes = int(seconds // 60)
    if minutes < 60:
        return f"{minutes}m"
    if minutes < 48 * 60:
        return f"{minutes // 60}h{minutes % 60:02d}m"
    return f"{minutes // 1440}d"


def run(args: argparse.Namespace) -> int:
    from ..aws.deploy import list_deployments
    from ..aws.session import make_session
    from ..errors import CredentialsError

    try:
        items = list_deployments(make_session(args.region))
    except CredentialsError as exc:
        print(f"note: SageMaker endpoints not listed: {exc}", file=sys.stderr)
        items = list_deployments(sagemaker=False)
    if args.json:
        print(json.dumps([{"name": i.name, "kind": i.kind, "status": i.status, "instance_type": i.instance_type,
                           "created": i.created.isoformat() if i.created else None, "location": i.location,
                           "age_seconds": i.age_seconds()} for i in items], indent=2))
        return 0
    if not items:
        print("no deployments (deploy one with `inf2-deploy deploy` or `inf2-deploy deploy --local`)")
        return 0
    rows = [("NAME", "KIND", "STATUS", "INSTANCE", "AGE", "WHERE")]
    rows += [(i.name, i.kind, i.status, i.instance_type or "-", _age(i.age_seconds()), i.location) for i in items]
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    return 0
