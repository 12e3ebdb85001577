"""``inf2-deploy package``: build the artifact folder the container sees at /opt/ml/model."""
from __future__ import annotations

import argparse
import time

from .progress import TransferBars
from .spec_flags import add_spec_flags, spec_from_args

__all__ = ["add_parser", "run"]

_MIB = 1024**2
# convert.DEFAULT_MAX_SHARD_BYTES in MiB, written out so --help need not import numpy (a test ties them).
DEFAULT_MAX_SHARD_MIB = 256


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "package",
        help="convert weights to fp16/bf16 safetensors and add tokenizer, serving code and manifest",
        description="Plan the deployment (refusing invalid plans, exit 2), then stream the checkpoint into "
        "safetensors shards of the plan's dtype with the tokenizer, serving.properties, the serving code and "
        "manifest.json. An unchanged source and plan are skipped.",
    )
    parser.add_argument("--output", "-o", required=True, metavar="DIR", help="artifact folder to write")
    parser.add_argument("--force", action="store_true", help="rebuild even when the artifact is up to date")
    parser.add_argument("--max-shard-mib", type=int, default=DEFAULT_MAX_SHARD_MIB, metavar="MIB",
                        help=f"data per safetensors shard, in MiB (default {DEFAULT_MAX_SHARD_MIB})")
    parser.add_argument("--cache-dir", metavar="DIR",
                        help="where tiny-gptj is built (default ~/.cache/inf2-deploy)")
    add_spec_flags(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from ..artifact.packager import package
    from ..errors import ConfigError

    if args.max_shard_mib <= 0:
        raise ConfigError(f"--max-shard-mib must be positive, got {args.max_shard_mib}", field="max_shard_mib",
                          value=args.max_shard_mib)
    spec = spec_from_args(args)
    bars = TransferBars(Console(stderr=True), transient=True)
    started = time.perf_counter()
    try:
        artifact = package(spec, args.output, force=args.force, progress=bars.update, cache_dir=args.cache_dir,
                           max_shard_bytes=args.max_shard_mib * _MIB)
    finally:
        bars.stop()
    elapsed = time.perf_counter() - started
    state = "built" if "weights" in bars.labels else "up to date, skipped"
    shards = sum(1 for f in artifact.files if f.path.endswith(".safetensors"))
    print(f"artifact {artifact.directory} ({state})")
    print(f"  files        {len(artifact.files)} + manifest.json ({shards} weight shard(s), "
          f"{artifact.conversion.get('dtype', '?')})")
    print(f"  bytes        {artifact.total_bytes:,} ({artifact.total_bytes / 1e9:.2f} GB)")
    print(f"  fingerprint  {artifact.fingerprint}")
    print(f"  time         {elapsed:.1f} s")
    return 0
