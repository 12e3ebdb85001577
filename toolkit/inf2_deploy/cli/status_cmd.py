"""``inf2-deploy status NAME``: the state of a SageMaker endpoint or a local deployment."""
from __future__ import annotations

import argparse
import json

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "status", help="show an endpoint's status, config, instance and failure reason",
        description="Show the status of a SageMaker endpoint (or of a local deployment with that name).",
    )
    parser.add_argument("name", metavar="NAME", help="endpoint or local deployment name")
    parser.add_argument("--region", metavar="R", help="AWS region (default: the standard resolution)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(run=run)


def _sagemaker_status(name: str, region: str | None) -> dict:
    from ..aws.endpoint import find_endpoint, missing_endpoint
    from ..aws.session import aws_errors, make_session

    session = make_session(region)
    sagemaker = session.client("sagemaker")
    endpoint = find_endpoint(sagemaker, name)
    if endpoint is None:
        raise missing_endpoint(sagemaker, name, session.region)
    with aws_errors(f"sagemaker:DescribeEndpointConfig {endpoint.config_name}"):
        variant = sagemaker.describe_endpoint_config(
            EndpointConfigName=endpoint.config_name)["ProductionVariants"][0]
    return {
        "name": name, "kind": "sagemaker", "region": session.region,
        "status": endpoint.status.value if endpoint.status else None,
        "endpoint_config": endpoint.config_name, "model": variant.get("ModelName"),
        "instance_type": variant.get("InstanceType"), "instance_count": variant.get("InitialInstanceCount"),
        "failure_reason": endpoint.failure_reason,
        "created": endpoint.created.isoformat() if endpoint.created else None,
        "modified": endpoint.modified.isoformat() if endpoint.modified else None,
    }


def run(args: argparse.Namespace) -> int:
    from ..local.records import default_store

    local = default_store().get(args.name)
    if local is not None:
        info = {"name": local.name, "kind": "local", "status": local.status, "url": local.url, "pid": local.pid,
                "artifact": local.artifact_dir, "created": local.started_at}
    else:
        info = _sagemaker_status(args.name, args.region)
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        width = max(len(key) for key in info)
        for key, value in info.items():
            if value is not None:
                print(f"{key:<{width}}  {value}")
    return 0 if info["status"] in ("InService", "running") else 1
