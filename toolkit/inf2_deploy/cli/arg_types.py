"""argparse pieces shared by commands: value types (a bad value is a usage error, exit 2, naming the
flag) and the NAME-or---url target."""
from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_target_arguments", "fraction", "http_url", "positive_int", "target_from_args"]


def positive_int(text: str) -> int:
    """A whole number of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def fraction(text: str) -> float:
    """A number in [0, 1)."""
    value = float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError("must be at least 0 and below 1")
    return value


def http_url(text: str) -> str:
    """An http:// or https:// URL."""
    if not text.startswith(("http://", "https://")):
        raise argparse.ArgumentTypeError("must be an http:// or https:// URL")
    return text


def add_target_arguments(parser: argparse.ArgumentParser) -> None:
    """NAME (a SageMaker endpoint or local deployment) or ``--url``, exactly one of them."""
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("name", nargs="?", help="SageMaker endpoint or local deployment name")
    where.add_argument("--url", type=http_url, help="base URL of an LMI-compatible server, e.g. http://127.0.0.1:8080")


def target_from_args(args: argparse.Namespace) -> Any:
    """The deployment target that ``--url`` or NAME (with ``--region``) names."""
    from ..client.targets import resolve, resolve_url

    return resolve_url(args.url) if args.url else resolve(args.name, region=args.region)
