"""``inf2-deploy status NAME``: the state of a SageMaker endpoint or a local deployment."""
from __future__ import annotations

import argparse
import json

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "status", help="show an endpoint's status, config, instance counts, autoscaling and failure reason",
        description="Show the status of a SageMaker endpoint (or of a local deployment with that name).",
    )
    parser.add_argument("name", metavar="NAME", help="endpoint or local deployment name")
    parser.add_argument("--region", metavar="R", help="AWS region (default: the standard resolution)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..client.targets import resolve
    from ..status import DeploymentStatus

    description = resolve(args.name, region=args.region).describe()
    info = description.to_dict()
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        width = max(len(key) for key in info)
        for key, value in info.items():
            lines = value if isinstance(value, list) else [value]  # policies and activities, one a line
            for index, line in enumerate(lines):
                print(f"{key if index == 0 else '':<{width}}  {line}")
    return 0 if description.status is DeploymentStatus.IN_SERVICE else 1
