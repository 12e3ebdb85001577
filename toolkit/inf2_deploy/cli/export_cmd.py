"""``inf2-deploy export``: a deployment as a CloudFormation template, from a spec or a deployed endpoint."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .spec_flags import DEPLOY_FLAGS, PLAN_FLAGS, add_spec_flags, spec_from_args

__all__ = ["FORMATS", "add_parser", "render_template", "run"]

FORMATS = ("cloudformation",)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="write a deployment as a CloudFormation template (from a spec or a deployed endpoint)",
        description="Write a CloudFormation template with the SageMaker model, endpoint config and endpoint "
        "(and the autoscaling target and policy when there is scaling), built from the same requests a deploy "
        "sends. From the spec flags and --config, or from a deployed endpoint with --from-endpoint NAME. The "
        "role, artifact bucket, artifact prefix (ModelDataUri), image and endpoint name are template parameters.",
    )
    parser.add_argument("--format", default="cloudformation", metavar="F",
                        help="the template format: cloudformation (the default and only one)")
    parser.add_argument("--from-endpoint", dest="endpoint", metavar="NAME",
                        help="export this deployed endpoint (of --region) instead of the spec")
    parser.add_argument("--json", action="store_true", help="write JSON instead of YAML")
    parser.add_argument("--out", metavar="FILE", help="write the template to FILE (default: stdout)")
    add_spec_flags(parser, deploy=True)
    parser.set_defaults(run=run)


def render_template(template: dict[str, Any], *, as_json: bool = False) -> str:
    """``template`` as YAML (block style, keys in the template's order) or as indented JSON."""
    if as_json:
        return json.dumps(template, indent=2) + "\n"
    import yaml

    class Dumper(yaml.SafeDumper):
        # CloudFormation rejects YAML anchors and aliases, which PyYAML writes for a shared object (the tags)
        def ignore_aliases(self, data: Any) -> bool:
            return True

    return yaml.dump(template, Dumper=Dumper, sort_keys=False, default_flow_style=False, width=120)


def _check_args(args: argparse.Namespace) -> None:
    from ..errors import ConfigError

    if args.format not in FORMATS:
        raise ConfigError(f"must be one of {', '.join(FORMATS)}, got {args.format!r}", field="format",
                          value=args.format)
    if args.endpoint is None:
        return
    given = [flag for flag, name, _options in PLAN_FLAGS + DEPLOY_FLAGS
             if name != "region" and getattr(args, name, None) is not None]
    if args.config or given:
        flag = "--config" if args.config else given[0]
        raise ConfigError(f"{flag} does not apply with --from-endpoint, which exports the endpoint as deployed",
                          field="from_endpoint", value=args.endpoint)


def _template(args: argparse.Namespace) -> dict[str, Any]:
    if args.endpoint is not None:
        from ..aws.cloudformation import endpoint_template
        from ..aws.session import make_session

        session = make_session(args.region)
        return endpoint_template(session.client("sagemaker"), session.client("application-autoscaling"),
                                 args.endpoint, region=session.region)
    from ..aws.cloudformation import spec_template
    from ..aws.deploy import default_endpoint_name
    from ..spec.planner import check_plan

    spec = spec_from_args(args)
    return spec_template(spec, check_plan(spec), endpoint_name=default_endpoint_name(spec))


def run(args: argparse.Namespace) -> int:
    _check_args(args)
    text = render_template(_template(args), as_json=args.json)
    if args.out is None:
        sys.stdout.write(text)
        return 0
    from ..atomic import atomic_write_text

    atomic_write_text(args.out, text)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0
