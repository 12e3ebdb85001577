"""``inf2-deploy delete NAME``: remove an endpoint, its config and model (or stop a local server)."""
from __future__ import annotations

import argparse

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "delete", help="delete an endpoint with its endpoint config and model (or stop a local deployment)",
        description="Delete the SageMaker endpoint NAME, its endpoint config and its model; with "
        "--purge-artifacts also every S3 artifact prefix it deployed that no other live model reads "
        "(those are kept and named). For a local deployment, stop its server.",
    )
    parser.add_argument("name", metavar="NAME", help="endpoint or local deployment name")
    parser.add_argument("--purge-artifacts", action="store_true",
                        help="also delete the S3 artifacts this endpoint deployed, except those another model uses")
    parser.add_argument("--dry-run", action="store_true", help="list what would be deleted and delete nothing")
    parser.add_argument("--wait", action="store_true",
                        help="if the endpoint is still Creating/Updating, wait for it to settle, then delete")
    parser.add_argument("--region", metavar="R", help="AWS region (default: the standard resolution)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..client.targets import resolve

    target = resolve(args.name, region=args.region)
    if args.wait and target.kind == "sagemaker" and not args.dry_run:
        print(f"waiting for {args.name} to settle before deleting ...", flush=True)
    result = target.delete(purge=args.purge_artifacts, dry_run=args.dry_run, wait=args.wait)
    done, would = ("stopped", "would stop") if target.kind == "local" else ("deleted", "would delete")
    for item in result:
        print(f"{would if args.dry_run else done} {item}")
    for item in getattr(result, "kept", ()):  # artifact prefixes another live model reads (SageMaker only)
        print(f"{'would keep' if args.dry_run else 'kept'} {item}")
    return 0
