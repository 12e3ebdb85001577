"""``inf2-deploy iam-policy``: print least-privilege IAM policies for deploying and for the endpoint."""
from __future__ import annotations

import argparse
import json

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "iam-policy",
        help="print least-privilege IAM policy JSON for the deployer and the endpoint's execution role",
        description="Print two IAM policy documents as one JSON object: \"deployer\" for whoever runs "
        "inf2-deploy, and \"execution_role\" for the role the endpoint runs as (--role of deploy). "
        "Attach each with e.g. `aws iam put-role-policy`.",
    )
    parser.add_argument("--bucket", required=True, metavar="B", help="the artifact bucket (deploy --bucket)")
    parser.add_argument("--region", default="*", metavar="R", help="restrict to this region (default: any)")
    parser.add_argument("--account", default="*", metavar="ID", help="restrict to this 12-digit account (default: any)")
    parser.add_argument("--prefix", default="inf2-deploy", metavar="P", help="the S3 key prefix (deploy --prefix)")
    parser.add_argument("--role-name", default=None, metavar="NAME",
                        help="the execution role's name: the only role the deployer may pass "
                             "(default: inf2-deploy-endpoint)")
    parser.add_argument("--endpoint-name", default=None, metavar="NAME",
                        help="restrict SageMaker resources and logs to this endpoint (default: any name)")
    bucket = parser.add_mutually_exclusive_group()
    bucket.add_argument("--create-bucket", dest="create_bucket", action="store_const", const=True, default=None,
                        help="allow creating the bucket private and encrypted (default: only for sagemaker-* "
                             "buckets, which deploy creates when --bucket is omitted)")
    bucket.add_argument("--no-create-bucket", dest="create_bucket", action="store_const", const=False,
                        help="never allow creating the bucket")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..aws.iam import DEFAULT_ROLE_NAME, iam_policies

    policies = iam_policies(args.bucket, region=args.region, account=args.account, prefix=args.prefix,
                            role_name=args.role_name or DEFAULT_ROLE_NAME, endpoint_name=args.endpoint_name,
                            create_bucket=args.create_bucket)
    print(json.dumps(policies, indent=2))
    return 0
