"""The ``inf2-deploy`` command line.

Start-up stays fast: this module and the command modules import only the
standard library at load time; each command imports what it needs in ``run``.
Our errors become one line on stderr with exit code 2 (usage, config) or 1
(runtime); a config error with several problems adds one line for each of the
others; ``--debug`` shows the traceback instead. A flag a command does not know
is that command's usage error, with a "did you mean" (:class:`CommandParser`).
"""
from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from ..errors import Inf2DeployError
from ..version import __version__
from .arg_types import CommandParser

__all__ = ["main", "build_parser", "COMMANDS"]

# (command, module under inf2_deploy.cli). Each module defines
# add_parser(subparsers) and run(args) -> int.
COMMANDS: tuple[tuple[str, str], ...] = (
    ("plan", "plan_cmd"),
    ("package", "package_cmd"),
    ("deploy", "deploy_cmd"),
    ("status", "status_cmd"),
    ("wait", "wait_cmd"),
    ("scale", "scale_cmd"),
    ("logs", "logs_cmd"),
    ("delete", "delete_cmd"),
    ("list", "list_cmd"),
    ("invoke", "invoke_cmd"),
    ("chat", "chat_cmd"),
    ("serve", "serve_cmd"),
    ("bench", "bench_cmd"),
    ("verify", "verify_cmd"),
    ("iam-policy", "iam_cmd"),
    ("export", "export_cmd"),
)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, with every sub-command registered."""
    parser = argparse.ArgumentParser(
        prog="inf2-deploy",
        description="Deploy GPT-J to Amazon SageMaker on AWS Inferentia2: plan, package, deploy, "
        "invoke, benchmark and delete.",
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=CommandParser)
    subparsers.required = True
    for _name, module_name in COMMANDS:
        module = importlib.import_module(f"{__name__}.{module_name}")
        module.add_parser(subparsers)
    commands: dict[str, CommandParser] = subparsers.choices
    owners: dict[str, list[str]] = {}
    for name, command in commands.items():
        for flag in command.flags():
            owners.setdefault(flag, []).append(name)
    for name, command in commands.items():  # so that `plan --role` can say --role is deploy's
        command.flag_commands = {flag: names for flag, names in owners.items() if name not in names}
    return parser


def _translated(exc: Exception) -> Exception | None:
    if isinstance(exc, OSError) and not isinstance(exc, Inf2DeployError) and exc.filename:
        # A file the user named that no check foresaw: its path and the OS's reason, in one line.
        return Inf2DeployError(f"{exc.strerror or exc}: {exc.filename}")
    if not type(exc).__module__.startswith("botocore."):  # botocore stays unimported for --help
        return None
    from ..aws.session import translate_botocore_error

    return translate_botocore_error(exc)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return its exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        try:
            return int(args.run(args) or 0)
        except Exception as exc:
            # The last line of defence for AWS errors raised outside an aws_errors block:
            # botocore's own exceptions become ours (one line, exit 1); anything else passes.
            translated = _translated(exc)
            if translated is None:
                raise
            raise translated from exc
    except Inf2DeployError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130

