"""``inf2-deploy scale NAME COUNT``: set a SageMaker endpoint's instance count now."""
from __future__ import annotations

import argparse

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "scale", help="set an endpoint's instance count now (within its autoscaling range)",
        description="Set the SageMaker endpoint NAME to COUNT instances (UpdateEndpointWeightsAndCapacities). "
        "A count outside the autoscaling range of the deploy is refused unless --force: autoscaling would "
        "pull it back at its next evaluation.",
    )
    parser.add_argument("name", metavar="NAME", help="endpoint name")
    parser.add_argument("count", metavar="COUNT", type=int, help="instances wanted")
    parser.add_argument("--force", action="store_true", help="set COUNT even outside min..max")
    parser.add_argument("--region", metavar="R", help="AWS region (default: the standard resolution)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..aws.scaling import scale
    from ..aws.session import make_session

    before = scale(args.name, args.count, force=args.force, session=make_session(args.region))
    print(f"{args.name}: {before.desired_instances} -> {args.count} instances (SageMaker is updating it)")
    return 0
