"""``inf2-deploy iam-policy``: least-privilege IAM policies for deploying and for the endpoint, and the
endpoint role's trust policy; printed as one JSON object, or written one file each with ``--out-dir``."""
from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path
from typing import Any

__all__ = ["POLICY_FILES", "add_parser", "run"]

#: (key of iam_policies(), file written by --out-dir, who or what the document is for)
POLICY_FILES: tuple[tuple[str, str, str], ...] = (
    ("deployer", "deployer-policy.json", "for whoever runs inf2-deploy"),
    ("execution_role", "execution-role-policy.json", "for the endpoint's execution role"),
    ("execution_role_trust", "execution-role-trust-policy.json", "lets SageMaker assume that role"),
)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "iam-policy",
        help="print least-privilege IAM policy JSON for the deployer and the endpoint's execution role",
        description="Print three IAM documents as one JSON object: \"deployer\" for whoever runs "
        "inf2-deploy, \"execution_role\" for the role the endpoint runs as (--role of deploy), and "
        "\"execution_role_trust\", that role's trust policy (SageMaker may assume it). --out-dir writes "
        "one file each and prints the aws iam commands that apply them.",
    )
    parser.add_argument("--bucket", required=True, metavar="B", help="the artifact bucket (deploy --bucket)")
    parser.add_argument("--region", default="*", metavar="R", help="restrict to this region (default: any)")
    parser.add_argument("--account", default=None, metavar="ID",
                        help="restrict to this 12-digit account (default: --role's account, else any)")
    parser.add_argument("--prefix", default="inf2-deploy", metavar="P", help="the S3 key prefix (deploy --prefix)")
    role = parser.add_mutually_exclusive_group()
    role.add_argument("--role", metavar="ARN",
                      help="the execution role's ARN (deploy --role): the only role the deployer may pass; "
                           "gives its name, path and account")
    role.add_argument("--role-name", default=None, metavar="NAME",
                      help="the execution role's name, when it has no ARN yet (default: inf2-deploy-endpoint)")
    parser.add_argument("--endpoint-name", default=None, metavar="NAME",
                        help="restrict SageMaker resources and logs to this endpoint (default: any name)")
    parser.add_argument("--out-dir", metavar="DIR",
                        help="write " + ", ".join(name for _key, name, _about in POLICY_FILES) + " into DIR")
    bucket = parser.add_mutually_exclusive_group()
    bucket.add_argument("--create-bucket", dest="create_bucket", action="store_const", const=True, default=None,
                        help="allow creating the bucket private and encrypted (default: only for sagemaker-* "
                             "buckets, which deploy creates when --bucket is omitted)")
    bucket.add_argument("--no-create-bucket", dest="create_bucket", action="store_const", const=False,
                        help="never allow creating the bucket")
    parser.set_defaults(run=run)


def _role(args: argparse.Namespace) -> tuple[str, str, str]:
    """(name, path, account) of the execution role, from --role or --role-name and --account."""
    from ..aws.iam import DEFAULT_ROLE_NAME, parse_role_arn
    from ..errors import ConfigError

    if args.role is None:
        return args.role_name or DEFAULT_ROLE_NAME, "/", args.account or "*"
    role = parse_role_arn(args.role)
    if args.account not in (None, "*", role.account):
        raise ConfigError(f"{args.account} is not the account of --role ({role.account})", field="account",
                          value=args.account)
    return role.name, role.path, role.account


def _write(policies: dict[str, Any], out_dir: str, role_name: str, role_path: str) -> None:
    from ..atomic import atomic_write_text
    from ..spec.validators import check_path

    folder = check_path(out_dir, "out_dir")
    if folder.exists() and not folder.is_dir():
        from ..errors import ConfigError

        raise ConfigError("is a file, not a folder", field="out_dir", value=out_dir)
    written: dict[str, Path] = {}
    for key, name, about in POLICY_FILES:
        written[key] = folder / name
        atomic_write_text(written[key], json.dumps(policies[key], indent=2) + "\n")
        print(f"wrote {written[key]}  ({about})")
    role = shlex.quote(role_name)
    path = "" if role_path == "/" else f" --path {shlex.quote(role_path)}"
    print("to create the role (unless it exists) and apply the three documents:")
    print(f"  aws iam create-role --role-name {role}{path} "
          f"--assume-role-policy-document {shlex.quote('file://' + str(written['execution_role_trust']))}")
    print(f"  aws iam put-role-policy --role-name {role} --policy-name inf2-deploy-endpoint "
          f"--policy-document {shlex.quote('file://' + str(written['execution_role']))}")
    print("  aws iam create-policy --policy-name inf2-deploy-deployer "
          f"--policy-document {shlex.quote('file://' + str(written['deployer']))}")


def run(args: argparse.Namespace) -> int:
    from ..aws.iam import iam_policies

    role_name, role_path, account = _role(args)
    policies = iam_policies(args.bucket, region=args.region, account=account, prefix=args.prefix,
                            role_name=role_name, role_path=role_path, endpoint_name=args.endpoint_name,
                            create_bucket=args.create_bucket)
    if args.out_dir is None:
        print(json.dumps(policies, indent=2))
    else:
        _write(policies, args.out_dir, role_name, role_path)
    return 0
