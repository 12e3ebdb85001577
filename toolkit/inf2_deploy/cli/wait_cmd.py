"""``inf2-deploy wait NAME``: wait for an endpoint after ``deploy --no-wait``, showing what deploy shows."""
from __future__ import annotations

import argparse
import sys

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "wait", help="wait until an endpoint is InService (after deploy --no-wait), tailing its logs",
        description="Wait until SageMaker stops working on the endpoint, with deploy's live status line and the "
        "container's log lines since the endpoint last changed. Exit 0 when it is InService, 1 when it failed "
        "(with SageMaker's reason) or the timeout passed, 2 when there is no such endpoint. A local "
        "deployment is ready or stopped: wait answers at once.",
    )
    parser.add_argument("name", metavar="NAME", help="endpoint or local deployment name")
    parser.add_argument("--timeout", type=float, metavar="S",
                        help="give up after this many seconds (the endpoint keeps going); default: no limit")
    parser.add_argument("--region", metavar="R", help="AWS region (default: the standard resolution)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from ..aws.deployment import WaitInterrupted
    from ..client.targets import resolve
    from ..errors import ConfigError
    from ..status import DeploymentStatus
    from .deploy_cmd import DeployDisplay

    if args.timeout is not None and args.timeout <= 0:
        raise ConfigError("must be a positive number of seconds", field="timeout", value=args.timeout)
    target = resolve(args.name, region=args.region)
    try:
        with DeployDisplay(Console(stderr=True), target.name) as display:
            status = target.wait(timeout=args.timeout, observer=display)
    except WaitInterrupted as exc:
        print(str(exc), file=sys.stderr)
        return 130
    what = "endpoint" if target.kind == "sagemaker" else "local deployment"
    print(f"{what} {target.name} is {status.value}")
    if status is not DeploymentStatus.IN_SERVICE:
        return 1
    print(f"  invoke:  inf2-deploy invoke {target.name} \"Hello\"")
    return 0
