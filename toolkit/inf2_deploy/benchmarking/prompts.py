"""Prompts of an exact token length, and the tokenizer that measures them.

Each prompt is a shuffle of common English words that are single tokens with a
leading space, so their token count is their word count, and every prompt is
re-encoded to check it. The tokenizer comes from a folder, an artifact folder, a
Hub id, or the tokenizer files under an s3:// prefix (a SageMaker model's data).
"""
from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any

from ..errors import ConfigError, ModelSourceError
from ..spec.validators import check_path

__all__ = ["PROMPT_POOL", "load_tokenizer", "make_prompts"]

# Distinct prompts cycled through; enough that no two in-flight requests share one at concurrency <= 32.
PROMPT_POOL = 32
_WORDS = (
    "the of and to in is was for on that with as by at from his an were are which this be had not first "
    "one their its new after but who they have two been has more also other into all time during most "
    "only over some city would can many where when between there made school state world year three "
    "under known later team season war her these about water north south river music film game house "
    "church party early called since long high number part then both well such while series left life "
    "family small second public four took began line local place club former work best held around"
).split()


def _fetch_tokenizer_files(s3_uri: str, region: str | None, folder: Path) -> None:
    """Download the tokenizer files under an s3:// prefix into ``folder``."""
    from botocore.exceptions import ClientError

    from ..artifact.sources import TOKENIZER_FILES
    from ..aws.session import aws_errors, is_not_found, make_session

    bucket, _, prefix = s3_uri.removeprefix("s3://").partition("/")
    if prefix.endswith(".tar.gz"):
        raise ModelSourceError(f"{s3_uri} is a compressed archive; bench reads tokenizer files from an "
                               "uncompressed S3 prefix", field="tokenizer", value=s3_uri,
                               hint="pass --tokenizer with a local folder")
    prefix = prefix.rstrip("/") + "/" if prefix else ""
    s3 = make_session(region).client("s3")
    found = 0
    for name in TOKENIZER_FILES:
        try:
            body = s3.get_object(Bucket=bucket, Key=prefix + name)["Body"].read()
        except ClientError as exc:
            if is_not_found(exc):  # a tokenizer has some of these files, never all
                continue
            with aws_errors(f"s3:GetObject s3://{bucket}/{prefix}{name}"):
                raise
        (folder / name).write_bytes(body)
        found += 1
    if not found:
        raise ModelSourceError(f"no tokenizer files under {s3_uri}", field="tokenizer", value=s3_uri,
                               hint="pass --tokenizer with a local folder or Hub id")


def _auto_tokenizer(location: str, source: str) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(location)
    except (OSError, ValueError) as exc:
        raise ModelSourceError(f"cannot load a tokenizer from {source}: {exc}", field="tokenizer", value=source,
                               hint="pass --tokenizer with the model's folder or Hub id") from None


def load_tokenizer(source: str | os.PathLike[str], *, region: str | None = None) -> Any:
    """A transformers tokenizer from a folder, an artifact folder, an s3:// prefix or a Hub id.

    From S3 only the tokenizer files are read, into a temporary folder removed afterwards.

    Raises:
        ModelSourceError: no tokenizer could be loaded from ``source``.
        AwsError: reading from S3 failed.
    """
    text = os.fspath(source)
    if text.startswith("s3://"):
        with tempfile.TemporaryDirectory(prefix="inf2-bench-tokenizer-") as folder:
            _fetch_tokenizer_files(text, region, Path(folder))
            return _auto_tokenizer(folder, text)
    path = check_path(text, "tokenizer")
    return _auto_tokenizer(str(path) if path.exists() else text, text)


def _count(tokenizer: Any, text: str) -> int:
    # Counted the way the serving handler tokenizes a prompt (special tokens included).
    return len(tokenizer(text)["input_ids"])


def make_prompts(tokenizer: Any, prompt_tokens: int, *, count: int = PROMPT_POOL, seed: int = 0) -> list[str]:
    """``count`` distinct prompts of exactly ``prompt_tokens`` tokens each.

    Raises:
        ConfigError: the tokenizer cannot make a prompt of that length from plain words.
    """
    words = [w for w in _WORDS if _count(tokenizer, " " + w) == _count(tokenizer, " the")]
    if len(words) < 8:
        raise ConfigError("the tokenizer splits common English words; cannot build exact-length prompts",
                          field="tokenizer", value=getattr(tokenizer, "name_or_path", None))
    overhead = _count(tokenizer, " the") - 1  # special tokens the tokenizer adds to every text
    rng = random.Random(seed)
    prompts = []
    for _ in range(count):
        picked = [rng.choice(words) for _ in range(max(prompt_tokens - overhead, 1))]
        text = "".join(" " + w for w in picked)
        measured = _count(tokenizer, text)
        if measured != prompt_tokens:
            raise ConfigError(f"a prompt built for {prompt_tokens} tokens has {measured}",
                              field="prompt_tokens", value=prompt_tokens)
        prompts.append(text)
    return prompts
