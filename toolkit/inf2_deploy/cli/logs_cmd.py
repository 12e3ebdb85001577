"""``inf2-deploy logs NAME [--follow] [--since 10m|1h|2d|ISO-8601]``: the container logs of an endpoint
(CloudWatch) or a local server."""
from __future__ import annotations

import argparse
import sys

from .arg_types import since_time

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "logs", help="print an endpoint's container logs (Neuron compile progress shows here)",
        description="Print the CloudWatch Logs of /aws/sagemaker/Endpoints/NAME, or a local server's log file.",
    )
    parser.add_argument("name", metavar="NAME", help="endpoint or local deployment name")
    parser.add_argument("--follow", "-f", action="store_true", help="keep printing new lines until Ctrl-C")
    parser.add_argument("--since", type=since_time, default="1h", metavar="WHEN",
                        help="start this far back: 90s, 10m, 1h, 2d or 1w (a bare number is minutes), or from "
                             "an ISO-8601 time, UTC unless it has an offset (default 1h)")
    parser.add_argument("--region", metavar="R", help="AWS region (default: the standard resolution)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from datetime import datetime, timezone

    from ..client.targets import resolve

    target = resolve(args.name, region=args.region)
    since = args.since if isinstance(args.since, datetime) else datetime.now(timezone.utc) - args.since
    printed = 0
    try:
        for line in target.logs(follow=args.follow, since=since):
            print(line, flush=True)
            printed += 1
    except KeyboardInterrupt:
        return 0
    if not printed and target.kind == "sagemaker":
        print(f"no log lines in {target.log_location} since {since.astimezone(timezone.utc):%Y-%m-%d %H:%M:%S} "
              "UTC (the group appears once a container starts)", file=sys.stderr)
    return 0
