"""``inf2-deploy serve``: run the local LMI-compatible server in the foreground."""
from __future__ import annotations

import argparse

from inf2_serving.contract import BACKENDS

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="serve a packaged artifact folder over HTTP in the foreground (Ctrl-C stops it)",
        description="Serve ARTIFACT_DIR with the same handler and HTTP contract as the SageMaker LMI "
        "container: GET /ping, POST /invocations, POST /predictions/{model}.",
    )
    parser.add_argument("artifact_dir", metavar="ARTIFACT_DIR", help="folder made by inf2-deploy package")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default %(default)s)")
    parser.add_argument("--port", type=int, default=8080, help="port to listen on (default %(default)s)")
    parser.add_argument("--backend", choices=BACKENDS, default="auto",
                        help="neuron needs Inferentia2; auto uses it when present, else the CPU")
    parser.add_argument("--max-batch-delay-ms", type=float, default=None, metavar="N",
                        help="static batches only (rolling_batch disable): how long to wait for a batch to "
                             "fill (default: the artifact's, else 100)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from inf2_deploy.local.server import serve

    from ..artifact.djl_properties import PropertiesError
    from ..errors import ConfigError, ModelSourceError

    folder = Path(args.artifact_dir)
    if not (folder / "serving.properties").is_file():
        raise ModelSourceError(f"{folder} has no serving.properties", field="artifact_dir", value=str(folder),
                               hint="package it first with inf2-deploy package")
    if not 1 <= args.port <= 65535:
        raise ConfigError("must be between 1 and 65535", field="port", value=args.port)

    def ready() -> None:
        print(f"ready: http://{args.host}:{args.port} (POST /invocations, GET /ping); Ctrl-C stops",
              flush=True)

    try:
        serve(folder, host=args.host, port=args.port, backend=args.backend,
              max_batch_delay_ms=args.max_batch_delay_ms, ready_callback=ready)
    except PropertiesError as exc:  # a serving.properties line DJL would misread
        raise ConfigError(str(exc), field="serving.properties", value=str(folder)) from None
    return 0
