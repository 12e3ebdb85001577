"""``inf2-deploy invoke``: send one prompt to a deployment and print the answer, or send a file's bytes
as InvokeEndpoint does and print the raw answer.

NAME is a local deployment when one is recorded under that name, else a
SageMaker endpoint; ``--url`` talks to any LMI-compatible server directly and
takes the place of NAME. The generation flags are shared with ``chat``.
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
    "generation_parameters",
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
# flag, InvokeEndpoint field (and Predictor.invoke argument), help
_RAW_FLAGS: tuple[tuple[str, str, str], ...] = (
    ("--content-type", "content_type", "the body's media type (default application/json)"),
    ("--accept", "accept", "the media type asked for in the answer"),
    ("--custom-attributes", "custom_attributes",
     "passed to the container in X-Amzn-SageMaker-Custom-Attributes"),
    ("--target-variant", "target_variant", "the production variant to invoke (SageMaker endpoints)"),
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


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "invoke",
        help="send one prompt to a deployment and print the generated text",
        description="Send PROMPT to a local deployment or SageMaker endpoint and print the answer; or, with "
        "--body, send a file's bytes unchanged, as InvokeEndpoint does, and print the answer's body.",
        usage="%(prog)s (NAME | --url URL) (PROMPT | --body FILE) [options]",
        intermixed=True,
    )
    parser.add_argument("name", metavar="NAME", nargs="?", help="local deployment or SageMaker endpoint name")
    parser.add_argument("prompt", metavar="PROMPT", nargs="?", help="the text to continue")
    parser.add_argument("--url", metavar="URL",
                        help="talk to this LMI-compatible server instead of NAME, e.g. http://127.0.0.1:8080")
    parser.add_argument("--region", metavar="R", help="AWS region of the SageMaker endpoint")
    parser.add_argument("--stream", action="store_true", help="print tokens as they arrive")
    parser.add_argument("--details", action="store_true",
                        help="print the whole JSON response (with --stream: timings on stderr)")
    add_generation_flags(parser)
    raw = parser.add_argument_group("raw request (InvokeEndpoint's fields)")
    raw.add_argument("--body", metavar="FILE", help="send this file's bytes (- for stdin) instead of a PROMPT")
    for flag, name, help_text in _RAW_FLAGS:
        raw.add_argument(flag, dest=name, metavar="TEXT" if name != "target_variant" else "V", help=help_text)
    parser.set_defaults(run=run)


def _placed(args: argparse.Namespace) -> tuple[str | None, str | None]:
    """(NAME, PROMPT) from the positionals, which --url leaves to the prompt; checked before any call."""
    from ..errors import ConfigError

    name, prompt = args.name, args.prompt
    if args.url is not None:
        if prompt is not None:
            raise ConfigError(f"give NAME or --url, not both (got NAME {name!r})", field="url", value=args.url)
        name, prompt = None, name
    elif name is None:
        raise ConfigError("name a deployment (NAME) or a server (--url URL)", field="name")
    _check_request_kind(args, prompt)
    return name, prompt


def _check_request_kind(args: argparse.Namespace, prompt: str | None) -> None:
    """A PROMPT with the generation flags, or --body with InvokeEndpoint's fields; not a mix."""
    from ..errors import ConfigError

    if args.body is None:
        if prompt is None:
            raise ConfigError("give the text to continue, or --body FILE", field="prompt")
        raw = [(flag, name) for flag, name, _help in _RAW_FLAGS if getattr(args, name) is not None]
        if raw:
            raise ConfigError(f"{raw[0][0]} applies to --body requests only", field=raw[0][1])
        return
    prompt_flags = (("PROMPT", prompt is not None), ("--stream", args.stream), ("--details", args.details),
                    ("the generation flags", bool(generation_parameters(args))))
    extra = [flag for flag, given in prompt_flags if given]
    if extra:
        raise ConfigError(f"sends the file as is; drop {', '.join(extra)}", field="body", value=args.body)


def _read_body(path: str) -> bytes:
    from ..errors import ConfigError
    from ..spec.validators import check_path

    if path == "-":
        return sys.stdin.buffer.read()
    try:
        return check_path(path, "body").read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}", field="body", value=path) from None


def _raw(predictor: Any, body: bytes, args: argparse.Namespace) -> None:
    fields = {name: getattr(args, name) for _flag, name, _help in _RAW_FLAGS if getattr(args, name) is not None}
    answer = predictor.invoke(body, **fields)
    sys.stdout.flush()
    sys.stdout.buffer.write(answer.body)  # bytes as they came: the answer may be binary
    if sys.stdout.isatty() and not answer.body.endswith(b"\n"):
        sys.stdout.buffer.write(b"\n")
    sys.stdout.buffer.flush()


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
    from ..client.invocation import check_parameters
    from ..client.targets import resolve, resolve_url

    parameters = check_parameters(generation_parameters(args))  # before any call, even name lookups
    name, prompt = _placed(args)
    body = _read_body(args.body) if args.body is not None else None
    target = resolve_url(args.url) if args.url is not None else resolve(name, region=args.region)
    with target.predictor() as predictor:
        if body is not None:
            _raw(predictor, body, args)
        elif args.stream:
            _stream(predictor, prompt, parameters, args.details)
        elif args.details:
            print(json.dumps(predictor.generate(prompt, details=True, **parameters), indent=2))
        else:
            print(predictor.generate(prompt, **parameters))
    return 0
