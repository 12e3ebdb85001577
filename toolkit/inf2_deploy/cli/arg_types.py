"""argparse pieces shared by commands: the sub-command parser (no abbreviations; a mistyped or SDK-style
flag gets this command's usage and a suggestion), value types (a bad value is a usage error, exit 2,
naming the flag) and the NAME-or---url target."""
from __future__ import annotations

import argparse
import difflib
import re
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

__all__ = [
    "FLAG_ALIASES",
    "CommandParser",
    "add_target_arguments",
    "fraction",
    "http_url",
    "positive_int",
    "since_time",
    "suggest_flag",
    "target_from_args",
]

#: How SageMaker SDK, LMI and boto3 users spell our flags (after ``_`` became ``-``): the suggestion
#: for each. A command gets the suggestion only when it has the flag.
FLAG_ALIASES: dict[str, str] = {
    "--initial-instance-count": "--instance-count",
    "--role-arn": "--role",
    "--execution-role": "--role",
    "--execution-role-arn": "--role",
    "--tensor-parallel-degree": "--tp-degree",
    "--tp": "--tp-degree",
    "--amp": "--dtype",
    "--model-id": "--model",
    "--image": "--image-uri",
    "--kms-key-id": "--kms-key",
    "--container-startup-health-check-timeout": "--startup-timeout",
    "--model-data-download-timeout": "--download-timeout",
    "--volume-size": "--volume-size-gb",
    "--volume-size-in-gb": "--volume-size-gb",
    "--subnets": "--subnet",
    "--security-group-ids": "--security-group",
    "--enable-network-isolation": "--network-isolation",
    "--environment": "--env",
    "--tags": "--tag",
    "--data-capture-config": "--data-capture",
    "--initial-sampling-percentage": "--capture-percent",
    "--sampling-percentage": "--capture-percent",
    "--max-tokens": "--max-new-tokens",
    "--endpoint": "--endpoint-name",
}
# argparse reads these as values, not flags, when no flag looks like a number.
_NUMBER = re.compile(r"^-\d+$|^-\d*\.\d+$")


def suggest_flag(flag: str, known: Sequence[str]) -> str | None:
    """The flag of ``known`` that ``flag`` most likely meant: its SDK alias, its spelling with
    hyphens, or the closest by similarity; None when nothing is close."""
    spelled = flag.split("=", 1)[0].replace("_", "-").lower()
    if spelled.startswith("--"):
        alias = FLAG_ALIASES.get(spelled, spelled)
        if alias in known:
            return alias
    # 0.75: a typo or two in a long flag, not a different word (--role is not --model).
    close = difflib.get_close_matches(spelled, [option for option in known if option.startswith("--")], n=1,
                                      cutoff=0.75)
    return close[0] if close else None


class CommandParser(argparse.ArgumentParser):
    """The parser of one sub-command.

    Abbreviations are off (``--tp`` is not ``--tp-degree``). An argument it does not know is
    this command's usage error (exit 2) with a "did you mean" for each unknown flag, rather than
    the top-level parser's bare "unrecognized arguments".

    Args:
        intermixed: let options sit between optional positionals (``invoke NAME --stream PROMPT``),
            which plain argparse parses only when the positionals are required.
    """

    def __init__(self, *args: Any, intermixed: bool = False, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)
        self.intermixed = intermixed
        #: flag -> the other commands that have it, for a flag given to the wrong command
        self.flag_commands: dict[str, list[str]] = {}
        self._parsing = False

    def parse_known_args(self, args: Sequence[str] | None = None,
                         namespace: argparse.Namespace | None = None) -> tuple[argparse.Namespace, list[str]]:
        if self._parsing:  # parse_known_intermixed_args calls back in on Python < 3.12.7
            return super().parse_known_args(args, namespace)
        self._parsing = True
        try:
            if self.intermixed:
                namespace, extras = self.parse_known_intermixed_args(args, namespace)
            else:
                namespace, extras = super().parse_known_args(args, namespace)
        finally:
            self._parsing = False
        if extras:
            self.error(self._unrecognized(extras))
        return namespace, extras

    def flags(self) -> list[str]:
        """Every option string this command accepts."""
        return [option for action in self._actions for option in action.option_strings]

    def _unrecognized(self, extras: list[str]) -> str:
        known = self.flags()
        shown = []
        after_flag = False
        for item in extras:
            if item.startswith("-") and not _NUMBER.match(item):
                after_flag = "=" not in item  # --flag=value carries its value
                suggestion = suggest_flag(item, known)
                elsewhere = self.flag_commands.get(item.split("=", 1)[0])
                if suggestion:
                    item += f" (did you mean {suggestion}?)"
                elif elsewhere:
                    item += f" (a flag of {', '.join(elsewhere)})"
                shown.append(item)
            elif not after_flag:  # a word right after an unknown flag is taken for its value
                shown.append(item)
            else:
                after_flag = False
        noun = "argument" if len(shown) == 1 else "arguments"
        return f"unrecognized {noun}: {', '.join(shown)}"


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


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhdw]?)$")
_UNIT_SECONDS = {"s": 1, "m": 60, "": 60, "h": 3600, "d": 86400, "w": 604800}


def since_time(text: str) -> timedelta | datetime:
    """How far back to start: a duration (``90s``, ``10m``, ``1h``, ``2d``, ``1w``; a bare number is
    minutes) or an ISO-8601 time, UTC unless it carries an offset."""
    duration = _DURATION.match(text.strip().lower())
    if duration:
        return timedelta(seconds=float(duration.group(1)) * _UNIT_SECONDS[duration.group(2)])
    stamp = text.strip()
    try:  # Python 3.10's fromisoformat does not read the "Z" suffix
        moment = datetime.fromisoformat(stamp[:-1] + "+00:00" if stamp.endswith(("Z", "z")) else stamp)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither a duration like 10m, 1h or 2d nor an ISO-8601 time like "
            "2024-05-01T12:00:00Z") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def add_target_arguments(parser: argparse.ArgumentParser) -> None:
    """NAME (a SageMaker endpoint or local deployment) or ``--url``, exactly one of them."""
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("name", nargs="?", help="SageMaker endpoint or local deployment name")
    where.add_argument("--url", type=http_url, help="base URL of an LMI-compatible server, e.g. http://127.0.0.1:8080")


def target_from_args(args: argparse.Namespace) -> Any:
    """The deployment target that ``--url`` or NAME (with ``--region``) names."""
    from ..client.targets import resolve, resolve_url

    return resolve_url(args.url) if args.url else resolve(args.name, region=args.region)
