"""Benchmark ``inf2-deploy package`` against the usual route on a synthetic GPT-J-shaped checkpoint.

The usual route loads the fp32 checkpoint with transformers in fp16, saves it
with ``save_pretrained`` and packs the folder with ``tarfile`` (gzip level 6,
what ``tar czf`` uses). Our route is the ``inf2-deploy package`` command as a
user runs it (planning included). Each run is a separate process; its wall time
and peak RSS (``os.wait4``'s ``ru_maxrss``) are measured, and the medians of
``--runs`` runs are reported and appended to ``docs/performance.md``.

Usage::

    python benchmarks/package_bench.py                 # ~2.4 GB fp32 (n_embd 2048, 8 layers, vocab 50400)
    python benchmarks/package_bench.py --size-gib 4 --runs 1

The checkpoint and outputs live in a temporary folder (``--workdir``) that is
deleted at the end; it needs about 3x the checkpoint size of free disk.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "performance.md"
GIB = 1024**3
N_EMBD, VOCAB, N_HEAD = 2048, 50400, 16
TARGET_RSS_MB = 600
TARGET_SPEEDUP = 5.0

# The usual route, run in its own process: argv = source, save folder, tar path.
USUAL_ROUTE = """
import json, sys, tarfile, time
import torch
from transformers import GPTJForCausalLM
source, saved, archive = sys.argv[1:4]
t0 = time.perf_counter()
model = GPTJForCausalLM.from_pretrained(source, dtype=torch.float16)
model.save_pretrained(saved)
t1 = time.perf_counter()
with tarfile.open(archive, "w:gz", compresslevel=6) as tar:
    tar.add(saved, arcname=".")
print(json.dumps({"load_save_s": t1 - t0, "tar_s": time.perf_counter() - t1}))
"""


def layers_for(size_gib: float) -> int:
    """GPT-J layers (n_embd 2048) that bring the fp32 checkpoint closest to ``size_gib``."""
    embd, inner = N_EMBD, 4 * N_EMBD
    per_layer = 4 * embd * embd + 2 * embd * inner + inner + 3 * embd
    fixed = 2 * VOCAB * embd + VOCAB + 2 * embd
    return max(1, round((size_gib * GIB / 4 - fixed) / per_layer))


def build_checkpoint(folder: Path, n_layer: int) -> int:
    """Write a sharded fp32 GPT-J checkpoint (one shard per tensor group) with bounded memory; return bytes."""
    import numpy as np
    from inf2_deploy.artifact.tiny import TINY_GPTJ_CONFIG, build_tiny_gptj
    from inf2_deploy.spec.catalog import gptj_tensor_shapes
    from safetensors.numpy import save_file

    config = {**TINY_GPTJ_CONFIG, "n_layer": n_layer, "n_embd": N_EMBD, "n_head": N_HEAD, "rotary_dim": 64,
              "vocab_size": VOCAB, "n_positions": 2048}
    folder.mkdir(parents=True)
    tiny = build_tiny_gptj(folder.parent / "tiny-tokenizer")
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json",
                 "generation_config.json"):
        shutil.copy(tiny / name, folder / name)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    shapes = gptj_tensor_shapes(config)
    groups: dict[str, list[str]] = {}
    for name in shapes:
        key = name.split(".")[2] if name.startswith("transformer.h.") else name.split(".")[0]
        groups.setdefault(key, []).append(name)
    rng = np.random.default_rng(0)
    weight_map, total = {}, 0
    for i, names in enumerate(groups.values()):
        file = f"model-{i + 1:05d}-of-{len(groups):05d}.safetensors"
        tensors = {n: (rng.standard_normal(shapes[n], dtype=np.float32) * np.float32(0.02)) for n in names}
        save_file(tensors, str(folder / file), metadata={"format": "pt"})
        total += sum(t.nbytes for t in tensors.values())
        weight_map.update(dict.fromkeys(names, file))
        del tensors
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
    return total


def measure(command: list[str]) -> tuple[float, float, str]:
    """Run ``command``; return wall seconds, peak RSS in MB and stdout."""
    started = time.perf_counter()
    with tempfile.TemporaryFile() as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.DEVNULL, cwd=ROOT)
        _pid, status, usage = os.wait4(process.pid, 0)
        elapsed = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read().decode()
    if process.returncode:
        raise SystemExit(f"{command[:4]} failed with exit code {process.returncode}:\n{text}")
    return elapsed, usage.ru_maxrss / 1024, text  # ru_maxrss is in KiB on Linux


def warm_cache(folder: Path) -> None:
    """Read the checkpoint once so both routes start from the same (warm) page cache."""
    for path in sorted(folder.iterdir()):
        with open(path, "rb") as stream:
            while stream.read(64 * 1024**2):
                pass


def machine() -> str:
    memory_kib = int(next(line.split()[1] for line in open("/proc/meminfo") if line.startswith("MemTotal")))
    return (f"{os.cpu_count()} CPUs (nproc), {memory_kib / 1024**2:.1f} GiB RAM, {platform.machine()}, "
            f"Python {platform.python_version()}")


def commit() -> str:
    """The checked-out commit, marked when the measured code has uncommitted changes."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False).stdout.strip()

    changed = git("status", "--porcelain", "--untracked-files=no", "--", "toolkit", "serving")
    return git("rev-parse", "--short", "HEAD") + (" (with uncommitted changes to the code)" if changed else "")


def dir_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def run(args: argparse.Namespace) -> dict:
    n_layer = args.layers or layers_for(args.size_gib)
    work = Path(tempfile.mkdtemp(prefix="package-bench-", dir=args.workdir))
    load_before = os.getloadavg()[0]
    try:
        source = work / "gptj-fp32"
        print(f"building a {n_layer}-layer fp32 GPT-J-shaped checkpoint in {source} ...", flush=True)
        # Built in a child process: Linux carries a process's peak RSS across fork and exec into
        # ru_maxrss, so this process must stay small for the children's figures to be their own.
        subprocess.run([sys.executable, __file__, "--build-into", str(source), "--layers", str(n_layer)],
                       check=True)
        source_bytes = json.loads((source / "model.safetensors.index.json").read_text())["metadata"]["total_size"]
        warm_cache(source)
        ours_cmd = [sys.executable, "-m", "inf2_deploy.cli", "package", "--model", str(source),
                    "--instance-type", "ml.inf2.xlarge", "--region", "us-east-1", "--dtype", "fp16"]
        results: dict[str, list] = {"usual_s": [], "usual_rss": [], "usual_phases": [], "ours_s": [],
                                    "ours_rss": []}
        for index in range(args.runs):
            saved, archive = work / f"saved-{index}", work / f"usual-{index}.tar.gz"
            seconds, rss, text = measure([sys.executable, "-c", USUAL_ROUTE, str(source), str(saved), str(archive)])
            results["usual_s"].append(seconds)
            results["usual_rss"].append(rss)
            results["usual_phases"].append(json.loads(text.strip().splitlines()[-1]))
            archive_bytes = archive.stat().st_size
            shutil.rmtree(saved)
            archive.unlink()
            artifact = work / f"artifact-{index}"
            seconds, rss, _ = measure([*ours_cmd, "--output", str(artifact)])
            results["ours_s"].append(seconds)
            results["ours_rss"].append(rss)
            artifact_bytes = dir_bytes(artifact)
            print(f"run {index + 1}/{args.runs}: usual {results['usual_s'][-1]:.1f} s "
                  f"{results['usual_rss'][-1]:.0f} MB, ours {seconds:.1f} s {rss:.0f} MB", flush=True)
            if index < args.runs - 1:
                shutil.rmtree(artifact)
        skip_s, skip_rss, _ = measure([*ours_cmd, "--output", str(artifact)])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {
        "load": (load_before, os.getloadavg()[0]), "commit": commit(),
        "n_layer": n_layer, "source_bytes": source_bytes, "runs": args.runs,
        "usual_s": statistics.median(results["usual_s"]), "usual_rss": statistics.median(results["usual_rss"]),
        "usual_load_save_s": statistics.median(p["load_save_s"] for p in results["usual_phases"]),
        "usual_tar_s": statistics.median(p["tar_s"] for p in results["usual_phases"]),
        "ours_s": statistics.median(results["ours_s"]), "ours_rss": statistics.median(results["ours_rss"]),
        "all_usual_s": results["usual_s"], "all_ours_s": results["ours_s"],
        "archive_bytes": archive_bytes, "artifact_bytes": artifact_bytes, "skip_s": skip_s, "skip_rss": skip_rss,
    }


def report(result: dict, command: str) -> str:
    ratio = result["usual_s"] / result["ours_s"]
    speed_ok = "met" if ratio >= TARGET_SPEEDUP else "MISSED"
    rss_ok = "met" if result["ours_rss"] <= TARGET_RSS_MB else "MISSED"
    return "\n".join([
        f"### Packaging benchmark, {dt.date.today().isoformat()}: {result['source_bytes'] / 1e9:.2f} GB fp32 "
        f"checkpoint ({result['n_layer']} layers, n_embd {N_EMBD}, vocab {VOCAB})",
        "",
        f"- Machine: {machine()}; 1-minute load average {result['load'][0]:.1f} at the start and "
        f"{result['load'][1]:.1f} at the end (other work shares the CPUs). Code at {result['commit']}.",
        f"- Command: `{command}`",
        f"- Medians of {result['runs']} run(s); each route runs in its own process, peak RSS from `os.wait4`.",
        "",
        "| route | wall time (s) | peak RSS (MB) | output |",
        "|---|---:|---:|---|",
        f"| usual: transformers fp16 load + `save_pretrained` + `tarfile` gzip -6 | {result['usual_s']:.1f} "
        f"(load+save {result['usual_load_save_s']:.1f}, tar {result['usual_tar_s']:.1f}) | "
        f"{result['usual_rss']:.0f} | {result['archive_bytes'] / 1e9:.2f} GB tar.gz |",
        f"| `inf2-deploy package` (fp16, planning included) | {result['ours_s']:.1f} | {result['ours_rss']:.0f} | "
        f"{result['artifact_bytes'] / 1e9:.2f} GB folder |",
        f"| `inf2-deploy package` again, unchanged (skipped) | {result['skip_s']:.1f} | {result['skip_rss']:.0f} | - |",
        "",
        f"- Speed-up: **{ratio:.1f}x** (target >= {TARGET_SPEEDUP:.0f}x: {speed_ok}). "
        f"Peak RSS {result['ours_rss']:.0f} MB (target <= {TARGET_RSS_MB} MB: {rss_ok}).",
        f"- All runs (s): usual {', '.join(f'{s:.1f}' for s in result['all_usual_s'])}; "
        f"ours {', '.join(f'{s:.1f}' for s in result['all_ours_s'])}.",
        "",
    ])


def append_to_doc(text: str) -> None:
    DOC.parent.mkdir(parents=True, exist_ok=True)
    if not DOC.exists():
        DOC.write_text("# Performance\n")
    body = DOC.read_text()
    if "\n## Packaging\n" not in body:
        body = body.rstrip("\n") + "\n\n## Packaging\n\nMeasured by `benchmarks/package_bench.py`.\n"
    DOC.write_text(body.rstrip("\n") + "\n\n" + text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-gib", type=float, default=2.27, help="fp32 checkpoint size (default 2.27 = 8 layers)")
    parser.add_argument("--layers", type=int, help="GPT-J layers (overrides --size-gib)")
    parser.add_argument("--runs", type=int, default=3, help="runs per route; medians are reported")
    parser.add_argument("--workdir", default=None, help="folder for the temporary files (default: system temp)")
    parser.add_argument("--no-doc", action="store_true", help=f"do not append to {DOC.relative_to(ROOT)}")
    parser.add_argument("--build-into", metavar="DIR", help=argparse.SUPPRESS)  # internal: the build step
    args = parser.parse_args()
    if args.build_into:
        build_checkpoint(Path(args.build_into), args.layers)
        return
    if args.runs < 1 or (args.layers is None and not math.isfinite(args.size_gib)):
        parser.error("--runs must be >= 1 and --size-gib finite")
    result = run(args)
    command = "python benchmarks/package_bench.py " + " ".join(sys.argv[1:])
    text = report(result, command.strip())
    print(text)
    if not args.no_doc:
        append_to_doc(text)


if __name__ == "__main__":
    main()
