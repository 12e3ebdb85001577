"""``inf2-deploy logs NAME [--follow]``: the container logs of an endpoint (CloudWatch) or a local server."""
from __future__ import annotations

import argparse
import sys
import time

__all__ = ["add_parser", "run"]

FOLLOW_POLL_SECONDS = 5.0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "logs", help="print an endpoint's container logs (Neuron compile progress shows here)",
        description="Print the CloudWatch Logs of /aws/sagemaker/Endpoints/NAME, or a local server's log file.",
    )
    parser.add_argument("name", metavar="NAME", help="endpoint or local deployment name")
    parser.add_argument("--follow", "-f", action="store_true", help="keep printing new lines until Ctrl-C")
    parser.add_argument("--since", type=float, default=60.0, metavar="MINUTES",
                        help="start this many minutes back (default 60)")
    parser.add_argument("--region", metavar="R", help="AWS region (default: the standard resolution)")
    parser.set_defaults(run=run)


def _local_logs(path: str, follow: bool) -> int:
    with open(path, encoding="utf-8", errors="replace") as stream:
        sys.stdout.write(stream.read())
        while follow:
            line = stream.readline()
            if line:
                sys.stdout.write(line)
            else:
                sys.stdout.flush()
                time.sleep(0.5)
    return 0


def run(args: argparse.Namespace) -> int:
    from ..aws.endpoint import LogTailer
    from ..aws.session import make_session
    from ..local.records import default_store

    try:
        local = default_store().get(args.name)
        if local is not None:
            return _local_logs(local.log_file, args.follow)
        session = make_session(args.region)
        start = int((time.time() - args.since * 60) * 1000)
        tailer = LogTailer(session.client("logs"), args.name, start_time_ms=start)
        printed = 0
        while True:
            for line in tailer.poll():
                print(line.message, flush=True)
                printed += 1
            if not args.follow:
                break
            time.sleep(FOLLOW_POLL_SECONDS)
    except KeyboardInterrupt:
        return 0
    if not printed:
        from ..aws.endpoint import find_endpoint, missing_endpoint

        sagemaker = session.client("sagemaker")
        if find_endpoint(sagemaker, args.name) is None:  # a deleted endpoint's logs remain; no lines, no endpoint
            raise missing_endpoint(sagemaker, args.name, session.region)
        print(f"no log lines in {tailer.group} in the last {args.since:g} minutes "
              "(the group appears once a container starts)", file=sys.stderr)
    return 0
