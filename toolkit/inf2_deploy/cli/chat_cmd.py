"""``inf2-deploy chat``: an interactive prompt loop that streams each answer.

Each line read is sent as its own prompt (GPT-J is a base model without a chat
template, so no conversation history is added). The loop ends at ``exit``,
``quit`` or end of input, so piped input works too.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any

from .arg_types import add_target_arguments, target_from_args
from .invoke_cmd import add_generation_flags, generation_parameters

__all__ = ["add_parser", "run", "chat_loop"]

_EXIT_WORDS = ("exit", "quit")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "chat",
        help="type prompts and watch the answers stream, until exit, quit or end of input",
        description="Read prompts one line at a time (from the terminal or a pipe) and stream each answer.",
    )
    add_target_arguments(parser)
    parser.add_argument("--region", metavar="R", help="AWS region of the SageMaker endpoint")
    add_generation_flags(parser)
    parser.set_defaults(run=run)


def chat_loop(predictor: Any, parameters: dict[str, Any], *, interactive: bool) -> int:
    """Read prompts from stdin until exit/quit/EOF and stream the answers to stdout.

    An error answer is reported on stderr and the loop goes on.

    Returns:
        0 when every prompt was answered, else 1.
    """
    from ..errors import InvocationError

    failures = 0
    while True:
        try:
            line = input("> " if interactive else "")
        except EOFError:
            break
        prompt = line.strip()
        if prompt.lower() in _EXIT_WORDS:
            break
        if not prompt:
            continue
        try:
            for text in predictor.stream(prompt, **parameters):
                sys.stdout.write(text)
                sys.stdout.flush()
        except InvocationError as exc:
            failures += 1
            print(f"\nerror: {exc}", file=sys.stderr)
        sys.stdout.write("\n")
        sys.stdout.flush()
    if interactive:
        sys.stdout.write("\n")
    return 1 if failures else 0


def run(args: argparse.Namespace) -> int:
    from ..client.invocation import check_parameters

    parameters = check_parameters(generation_parameters(args))
    with target_from_args(args).predictor() as predictor:
        return chat_loop(predictor, parameters, interactive=sys.stdin.isatty())
