"""Soak the local server: concurrent streaming and non-streaming clients plus mid-stream disconnects.

Starts ``python -m inf2_deploy.local.server`` on 127.0.0.1 for the tiny GPT-J (CPU
backend), then for ``--duration`` seconds runs ``--clients`` clients in a loop
(half streaming, half not) and one client that opens long streams
(``--disconnect-tokens``) and hangs up after the first line. It reports every error, latency percentiles, the server's
resident memory over time, and whether the server still answers normally after
all the disconnects. Loopback only; bounded in clients (64) and time (600 s).

Checks (exit 1 when one fails):
- zero errors: every answer is 200 with LMI JSON (or JSON lines ending in generated_text);
- resident memory of the server grows by at most ``--max-rss-growth-mib`` from warm-up to the end;
- after the disconnects, /ping is 200 and, once one request has waited out any generation
  still running for a hung-up stream, sequential requests take at most 3x their warm-up median
  (+0.25 s for a shared host): no wedged batcher, no leaked generation slot.

Run: ``make soak`` or ``.venv/bin/python benchmarks/soak.py --duration 60 --clients 8``.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

MAX_CLIENTS = 64
# Slack for a shared host; a wedged batcher shows up as timeouts or tens of seconds, not this.
HOST_NOISE_S = 0.25
MAX_DURATION_S = 600
SERVING_PROPERTIES = (
    "engine=Python\noption.entryPoint=model.py\noption.backend=cpu\noption.n_positions=256\n"
    "option.batch_size=4\noption.dtype=fp32\noption.max_batch_delay=20\n"
)
PROMPTS = ("The capital of France is", "Once upon a time", "def fibonacci(n):", "Hello, my name is",
           "In 1969 the first", "The quick brown fox")


@dataclass
class Tally:
    """Results shared by the client threads."""

    latencies: dict[str, list[float]] = field(default_factory=lambda: {"json": [], "stream": [], "ttft": []})
    errors: list[str] = field(default_factory=list)
    disconnects: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, kind: str, seconds: float) -> None:
        with self.lock:
            self.latencies[kind].append(seconds)

    def error(self, text: str) -> None:
        with self.lock:
            self.errors.append(text[:300])


def rss_mib(pid: int) -> float:
    """Resident set size of ``pid`` in MiB (Linux /proc)."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))] if ordered else 0.0


def request_body(index: int, stream: bool, max_new_tokens: int) -> dict[str, Any]:
    return {"inputs": PROMPTS[index % len(PROMPTS)], "stream": stream,
            "parameters": {"max_new_tokens": max_new_tokens}}


def one_json(client: httpx.Client, index: int, max_new_tokens: int, tally: Tally) -> None:
    start = time.perf_counter()
    response = client.post("/invocations", json=request_body(index, False, max_new_tokens))
    elapsed = time.perf_counter() - start
    try:
        ok = response.status_code == 200 and isinstance(response.json()["generated_text"], str)
    except (ValueError, KeyError, TypeError):
        ok = False
    if ok:
        tally.add("json", elapsed)
    else:
        tally.error(f"json {response.status_code}: {response.text}")


def one_stream(client: httpx.Client, index: int, max_new_tokens: int, tally: Tally) -> None:
    start = time.perf_counter()
    first = None
    lines = []
    with client.stream("POST", "/invocations", json=request_body(index, True, max_new_tokens)) as response:
        if response.status_code != 200:
            tally.error(f"stream {response.status_code}: {response.read().decode(errors='replace')}")
            return
        for line in response.iter_lines():
            if line:
                first = first or time.perf_counter() - start
                lines.append(line)
    elapsed = time.perf_counter() - start
    try:
        last = json.loads(lines[-1])
        ok = "error" not in last and isinstance(last["generated_text"], str) and all(
            "token" in json.loads(line) for line in lines)
    except (ValueError, KeyError, IndexError):
        ok = False
    if ok and first is not None:
        tally.add("stream", elapsed)
        tally.add("ttft", first)
    else:
        tally.error(f"stream body: {lines[-2:]}")


def client_loop(url: str, stream: bool, seed: int, deadline: float, max_new_tokens: int, tally: Tally) -> None:
    with httpx.Client(base_url=url, timeout=60) as client:
        index = seed
        while time.monotonic() < deadline:
            try:
                (one_stream if stream else one_json)(client, index, max_new_tokens, tally)
            except httpx.HTTPError as exc:
                tally.error(f"{'stream' if stream else 'json'} transport: {type(exc).__name__}: {exc}")
            index += 1


def disconnect_loop(url: str, deadline: float, max_new_tokens: int, tally: Tally) -> None:
    """Open a stream of ``max_new_tokens``, read one line, and drop the connection; again and again."""
    index = 0
    while time.monotonic() < deadline:
        # A fresh client per stream: closing it closes the socket mid-response.
        client = httpx.Client(base_url=url, timeout=60)
        try:
            with client.stream("POST", "/invocations",
                               json=request_body(index, True, max_new_tokens)) as response:
                for _ in response.iter_lines():
                    break
        except httpx.HTTPError as exc:
            tally.error(f"disconnect client: {type(exc).__name__}: {exc}")
        finally:
            client.close()
        with tally.lock:
            tally.disconnects += 1
        index += 1
        time.sleep(0.2)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_ready(url: str, process: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with code {process.returncode}")
        try:
            if httpx.get(f"{url}/ping", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the server was not ready within {timeout} s")


def sequential_latencies(url: str, count: int, max_new_tokens: int) -> list[float]:
    tally = Tally()
    with httpx.Client(base_url=url, timeout=60) as client:
        for index in range(count):
            one_json(client, index, max_new_tokens, tally)
    if tally.errors:
        raise RuntimeError(f"sequential probe failed: {tally.errors[0]}")
    return tally.latencies["json"]


def soak(artifact: Path, *, clients: int, duration: float, max_new_tokens: int, disconnect_tokens: int,
         max_rss_growth_mib: float) -> dict[str, Any]:
    """Run the soak against a fresh server for ``artifact``; returns the report."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tempfile.TemporaryFile()
    server = subprocess.Popen([sys.executable, "-m", "inf2_deploy.local.server", str(artifact), "--backend", "cpu",
                               "--host", "127.0.0.1", "--port", str(port)], stdout=log, stderr=log)
    try:
        wait_ready(url, server, 180)
        warmup = sequential_latencies(url, 20, max_new_tokens)
        rss_start = rss_mib(server.pid)
        tally = Tally()
        load_before = os.getloadavg()[0]
        deadline = time.monotonic() + duration
        threads = [threading.Thread(target=client_loop, args=(url, i % 2 == 0, i, deadline, max_new_tokens, tally))
                   for i in range(clients)]
        if disconnect_tokens:
            threads.append(threading.Thread(target=disconnect_loop, args=(url, deadline, disconnect_tokens, tally)))
        for thread in threads:
            thread.start()
        rss_samples = []
        while time.monotonic() < deadline:
            rss_samples.append(round(rss_mib(server.pid), 1))
            time.sleep(1)
        for thread in threads:
            thread.join(timeout=120)
        hung = sum(thread.is_alive() for thread in threads)
        ping = httpx.get(f"{url}/ping", timeout=10).status_code
        # The first request may wait for a hung-up stream's generation still running; then none should.
        (first_after,) = sequential_latencies(url, 1, max_new_tokens)
        after = sequential_latencies(url, 20, max_new_tokens)
        rss_end = rss_mib(server.pid)
        load_after = os.getloadavg()[0]
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=30)
    lat = tally.latencies
    warm_median, after_median = statistics.median(warmup), statistics.median(after)
    report = {
        "clients": clients, "streaming_clients": (clients + 1) // 2, "duration_s": duration,
        "max_new_tokens": max_new_tokens, "disconnect_stream_tokens": disconnect_tokens,
        # the host's 1-minute load average: other work on the machine slows every figure below
        "load_average": {"before": round(load_before, 2), "after": round(load_after, 2), "cpus": os.cpu_count()},
        "requests": {"json": len(lat["json"]), "stream": len(lat["stream"]), "disconnected_streams": tally.disconnects},
        "errors": len(tally.errors), "error_samples": tally.errors[:5], "hung_clients": hung,
        "latency_s": {
            kind: {"p50": round(percentile(v, 50), 4), "p95": round(percentile(v, 95), 4),
                   "p99": round(percentile(v, 99), 4), "max": round(max(v), 4) if v else 0.0}
            for kind, v in lat.items()
        },
        "rss_mib": {"after_warmup": round(rss_start, 1), "end": round(rss_end, 1),
                    "peak": max([*rss_samples, rss_end]), "growth": round(rss_end - rss_start, 1),
                    "samples_every_s": rss_samples},
        "after_disconnects": {"ping": ping, "first_request_s": round(first_after, 4),
                              "median_latency_s": round(after_median, 4),
                              "warmup_median_latency_s": round(warm_median, 4)},
    }
    report["checks"] = {
        "zero_errors": not tally.errors and hung == 0,
        "rss_growth_bounded": rss_end - rss_start <= max_rss_growth_mib,
        "healthy_after_disconnects": ping == 200 and after_median <= 3 * warm_median + HOST_NOISE_S,
    }
    report["ok"] = all(report["checks"].values())
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8,
                        help=f"concurrent clients, half streaming (max {MAX_CLIENTS})")
    parser.add_argument("--duration", type=float, default=60, help=f"seconds of load (max {MAX_DURATION_S})")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--disconnect-tokens", type=int, default=128,
                        help="max_new_tokens of the streams that hang up after one line (0: no such client)")
    parser.add_argument("--max-rss-growth-mib", type=float, default=64)
    parser.add_argument("--artifact", type=Path, help="a packaged artifact folder (default: build tiny-gptj)")
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args()
    if not 1 <= args.clients <= MAX_CLIENTS or not 1 <= args.duration <= MAX_DURATION_S:
        parser.error(f"--clients must be 1..{MAX_CLIENTS} and --duration 1..{MAX_DURATION_S}")
    with tempfile.TemporaryDirectory(prefix="inf2-soak-") as scratch:
        artifact = args.artifact
        if artifact is None:
            from inf2_deploy.artifact.tiny import build_tiny_gptj

            artifact = build_tiny_gptj(Path(scratch) / "tiny-gptj")
            (artifact / "serving.properties").write_text(SERVING_PROPERTIES, encoding="utf-8")
        report = soak(artifact, clients=args.clients, duration=args.duration, max_new_tokens=args.max_new_tokens,
                      disconnect_tokens=args.disconnect_tokens, max_rss_growth_mib=args.max_rss_growth_mib)
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")
    for name, passed in report["checks"].items():
        print(f"{'PASS' if passed else 'FAIL'} {name}", file=sys.stderr)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
