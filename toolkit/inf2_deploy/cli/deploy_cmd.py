"""``inf2-deploy deploy``: package, upload and deploy to SageMaker (or serve locally with ``--local``)."""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

from ..observer import NullObserver
from .progress import TransferBars
from .spec_flags import add_spec_flags, spec_from_args

__all__ = ["DeployDisplay", "add_parser", "run"]

_PACKAGER_LABELS = ("download", "weights")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "deploy",
        help="package, upload and create or update a SageMaker inf2 endpoint (or --local)",
        description="Plan (exit 2 when it cannot work), package the artifact, upload it to S3, then create "
        "the model, endpoint config and endpoint, or update the endpoint that has the name. Waits until "
        "InService while showing the container's logs (Neuron compilation takes 10-60 minutes without a "
        "compile cache). A redeploy of the same artifact and settings changes nothing, or only the tags when "
        "they changed. --model-data deploys an artifact already in S3 without packaging, once its manifest "
        "checks out. On failure, what this deploy created is deleted unless --keep-on-failure.",
    )
    add_spec_flags(parser, deploy=True)
    parser.add_argument("--local", action="store_true",
                        help="serve the same artifact on this machine in the background instead of SageMaker")
    parser.add_argument("--port", type=int, metavar="N", help="port for --local (default: a free one)")
    parser.add_argument("--model-data", metavar="S3URI",
                        help="deploy the packaged artifact at s3://BUCKET/PREFIX/ as it is (no packaging or "
                             "upload); its manifest.json, files and serving.properties are checked first")
    parser.add_argument("--no-wait", action="store_true",
                        help="return once the endpoint is being created; `inf2-deploy wait NAME` waits later")
    parser.add_argument("--keep-on-failure", action="store_true",
                        help="keep the model, config and endpoint when the endpoint fails, for inspection")
    parser.add_argument("--pass-hf-token", action="store_true",
                        help="pass $HF_TOKEN to the container (for gated models; DescribeModel readers can see it)")
    parser.set_defaults(run=run)


class DeployDisplay(NullObserver):
    """Upload bars, then a live status line with elapsed time and the container's log lines.

    A context manager: the bars and the live line stop on exit. ``wait`` shows the same.

    Args:
        console: the rich console to draw on (stderr).
        name: the endpoint, shown on the status line.
    """

    def __init__(self, console: Any, name: str) -> None:
        self.console = console
        self.name = name
        self.bars = TransferBars(console)
        self.live: Any = None
        self.status = "submitting"
        self.started = time.monotonic()

    def __enter__(self) -> DeployDisplay:
        return self

    def __exit__(self, *exc: object) -> None:
        self.bars.stop()
        if self.live is not None:
            self.live.stop()

    def on_progress(self, done: int, total: int, label: str) -> None:
        self.bars.update(done, total, label if label in _PACKAGER_LABELS else "upload")

    def __rich__(self) -> Any:
        from rich.text import Text

        elapsed = int(time.monotonic() - self.started)
        return Text.assemble(("⏳ ", ""), (self.name, "bold"), f": {self.status}  ",
                             (f"{elapsed // 60}m{elapsed % 60:02d}s", "cyan"))

    def on_status(self, status: Any, elapsed: float) -> None:
        if self.live is None:
            from rich.live import Live

            self.bars.stop()
            self.started = time.monotonic() - elapsed
            self.live = Live(self, console=self.console, refresh_per_second=2, transient=True)
            self.live.start()
        self.status = status.value

    def on_log(self, line: Any) -> None:
        self.console.print(line.message, markup=False, highlight=False, soft_wrap=True)


def _deploy_local(args: argparse.Namespace, spec: Any) -> int:
    from ..local.deploy import serve_local

    print(f"packaging {spec.model} and starting the local server ...", file=sys.stderr)
    deployment = serve_local(spec, name=spec.endpoint_name, port=args.port, wait=not args.no_wait)
    print(f"local deployment {deployment.name} serving at {deployment.url} (pid {deployment.pid})")
    print(f"  invoke:  inf2-deploy invoke {deployment.name} \"Hello\"")
    print(f"  boto3:   AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME={deployment.url}  (any endpoint name and credentials)")
    print(f"  delete:  inf2-deploy delete {deployment.name}")
    return 0


def _check_flags(args: argparse.Namespace) -> None:
    """Flags that do not go together, and a malformed --model-data: usage errors before anything runs."""
    from ..errors import ConfigError

    if args.local and args.model_data is not None:
        raise ConfigError("--model-data applies to SageMaker deploys; --local packages from the model",
                          field="model_data", value=args.model_data)
    if not args.local and args.port is not None:
        raise ConfigError("--port applies to --local deployments only", field="port", value=args.port)
    if args.model_data is not None:
        from ..aws.model_data import check_model_data_uri

        check_model_data_uri(args.model_data)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from ..aws.deploy import default_endpoint_name, deploy, require_role
    from ..aws.deployment import WaitInterrupted
    from ..errors import ConfigError

    _check_flags(args)
    spec = spec_from_args(args)
    if args.local:
        return _deploy_local(args, spec)
    require_role(spec)  # before anything is drawn or packaged
    hf_token = os.environ.get("HF_TOKEN") if args.pass_hf_token else None
    if args.pass_hf_token and not hf_token:
        raise ConfigError("--pass-hf-token given but HF_TOKEN is not set", field="hf_token")
    name = default_endpoint_name(spec)
    console = Console(stderr=True)
    try:
        with DeployDisplay(console, name) as display:
            deployment = deploy(spec, model_data=args.model_data, wait=not args.no_wait,
                                keep_on_failure=args.keep_on_failure, observer=display, hf_token=hf_token)
    except WaitInterrupted as exc:
        print(str(exc), file=sys.stderr)
        return 130
    print(deployment.message)
    print(f"  uploaded         {deployment.bytes_uploaded / 1e6:.1f} MB" if deployment.bytes_uploaded
          else "  uploaded         nothing (the artifact was already in S3)")
    if deployment.changed:
        print(f"  artifact         {deployment.artifact_s3_uri}")
        print(f"  model / config   {deployment.model_name}")
    if args.no_wait:
        print(f"  wait:    inf2-deploy wait {name}   (or: inf2-deploy status {name})")
    else:
        print(f"  invoke:  inf2-deploy invoke {name} \"Hello\"")
    print(f"  delete:  inf2-deploy delete {name}")
    return 0
