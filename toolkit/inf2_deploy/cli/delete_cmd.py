"""``inf2-deploy delete NAME``: remove an endpoint, its config and model (or stop a local server)."""
from __future__ import annotations

import argparse

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "delete", help="delete an endpoint with its endpoint config and model (or stop a local deployment)",
        description="Delete the SageMaker endpoint NAME, its endpoint config and its model; with "
        "--purge-artifacts also the artifact in S3. For a local deployment, stop its server.",
    )
    parser.add_argument("name", metavar="NAME", help="endpoint or local deployment name")
    parser.add_argument("--purge-artifacts", action="store_true", help="also delete the S3 artifact objects")
    parser.add_argument("--wait", action="store_true",
                        help="if the endpoint is still Creating/Updating, wait for it to settle, then delete")
    parser.add_argument("--region", metavar="R", help="AWS region (default: the standard resolution)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..client.targets import resolve

    target = resolve(args.name, region=args.region)
    if args.wait and target.kind == "sagemaker":
        print(f"waiting for {args.name} to settle before deleting ...", flush=True)
    for item in target.delete(purge=args.purge_artifacts, wait=args.wait):
        print(f"deleted {item}" if target.kind == "sagemaker" else f"stopped {item}")
    return 0
