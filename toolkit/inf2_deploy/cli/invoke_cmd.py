"""``inf2-deploy invoke``: send one prompt to a deployment and print the answer.

NAME is a local deployment when one is recorded under that name, else a
SageMaker endpoint; ``--url`` talks to any LMI-compatible server directly. The
generation flags and the NAME/--url resolution are shared with ``chat``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

__all__ = [
    "add_parser",
    "run",
    "add_generation_flags",
    "add_target_flags",
    "generation_parameters",
    "predictor_for",
]

# flag, TGI parameter, argparse options (help text included)
_GENERATION_FLAGS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("--max-new-tokens", "max_new_tokens", {"type": int, "metavar": "N", "help": "tokens to generate"}),
    ("--temperature", "temperature", {"type": float, "metavar": "T", "help": "sampling temperature"}),
    ("--top-k", "top_k", {"type": int, "metavar": "K", "help": "sample from the K most likely tokens"}),
    ("--top-p", "top_p", {"type": float, "metavar": "P", "help": "nucleus sampling probability mass"}),
    ("--do-sample", "do_sample", {"action": "store_const", "const": True,
                                  "help": "sample instead of greedy decoding"}),
    ("--repetition-penalty", "repetition_penalty", {"type": float, "metavar": "R",
                                                    "help": "penalty for repeated tokens (1.0 = none)"}),
    ("--stop", "stop", {"action": "extend", "nargs": "+", "metavar": "S",
                        "help": "stop when one of these strings is generated"}),
    ("--seed", "seed", {"type": int, "metavar": "N", "help": "random seed for sampling"}),
)


def add_generation_flags(parser: argparse.ArgumentParser) -> None:
    """Add the TGI generation flags (``--max-new-tokens`` ... ``--seed``)."""
    group = parser.add_argument_group("generation")
    for flag, name, options in _GENERATION_FLAGS:
        group.add_argument(flag, dest=name, default=None, **options)


def generation_parameters(args: argparse.Namespace) -> dict[str, Any]:
    """The generation parameters the flags set (unset flags are left out)."""
    values = {name: getattr(args, name, None) for _flag, name, _options in _GENERATION_FLAGS}
    return {name: value for name, value in values.items() if value is not None}


def add_target_flags(parser: argparse.ArgumentParser) -> None:
    """Add NAME, ``--url`` and ``--region``: which deployment to talk to."""
    parser.add_argument("name", metavar="NAME", help="local deployment or SageMaker endpoint name")
    parser.add_argument("--url", metavar="URL",
                        help="talk to this LMI-compatible server directly, e.g. http://127.0.0.1:8080")
    parser.add_argument("--region", metavar="R", help="AWS region of the SageMaker endpoint")


def predictor_for(args: argparse.Namespace) -> Any:
    """The predictor for ``--url``, else the local deployment or SageMaker endpoint ``NAME``."""
    from .arg_types import target_from_args

    return target_from_args(args).predictor()


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "invoke",
        help="send one prompt to a deployment and print the generated text",
        description="Send PROMPT to a local deployment or SageMaker endpoint and print the answer.",
    )
    add_target_flags(parser)
    parser.add_argument("prompt", metavar="PROMPT", help="the text to continue")
    parser.add_argument("--stream", action="store_true", help="print tokens as they arrive")
    parser.add_argument("--details", action="store_true",
                        help="print the whole JSON response (with --stream: timings on stderr)")
    add_generation_flags(parser)
    parser.set_defaults(run=run)


def _stream(predictor: Any, prompt: str, parameters: dict[str, Any], details: bool) -> None:
    started = time.perf_counter()
    first = None
    tokens = 0
    final: dict[str, Any] = {}
    for event in predictor.stream_events(prompt, details=details, **parameters):
        text = (event.get("token") or {}).get("text") or ""
        if first is None:
            first = time.perf_counter() - started
        tokens += 1
        sys.stdout.write(text)
        sys.stdout.flush()
        if "generated_text" in event:
            final = event
    sys.stdout.write("\n")
    if details:
        elapsed = time.perf_counter() - started
        summary = {"tokens": tokens, "time_to_first_token_s": round(first or 0.0, 4),
                   "total_s": round(elapsed, 4), "tokens_per_s": round(tokens / elapsed, 2) if elapsed else None,
                   "details": final.get("details")}
        print(json.dumps(summary), file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    from ..client.predictor import check_parameters

    parameters = check_parameters(generation_parameters(args))  # before any call, even name lookups
    with predictor_for(args) as predictor:
        if args.stream:
            _stream(predictor, args.prompt, parameters, args.details)
        elif args.details:
            print(json.dumps(predictor.generate(args.prompt, details=True, **parameters), indent=2))
        else:
            print(predictor.generate(args.prompt, **parameters))
    return 0
