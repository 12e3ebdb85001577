"""The Inferentia2 section of docs/performance.md: GPT-J's analytic decode floor and how to measure an endpoint.

Nothing here runs on Inferentia2: the floor is computed from the catalog (GPT-J's
tensor shapes and the chips' HBM bandwidth), and published figures are quoted with
their source. Run: ``.venv/bin/python benchmarks/inferentia2.py``.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from report import append_section  # noqa: E402

# (instance type, tensor parallel degree): the configurations GPT-J is usually served with
CONFIGURATIONS = (("ml.inf2.xlarge", 2), ("ml.inf2.8xlarge", 2), ("ml.inf2.24xlarge", 4),
                  ("ml.inf2.24xlarge", 8), ("ml.inf2.48xlarge", 8))
BYTES_FP16 = 2
CONTEXT = 1024  # tokens in the KV cache for the KV-read term

# Neuron SDK's own published decoder results: aws-neuron/aws-neuron-sdk,
# general/benchmarks/inf2/latency_data_decoder.csv at commit 23da8895c65c3d4daed321e0684a98f0545885fc,
# rows labelled Neuron 2.18.0; inf2.48xlarge, transformers-neuronx, tp 24, batch 1, FP16 (matmul BF16).
PUBLISHED = (
    ("Llama-2-7b", 4096, 128, 3968, 27.6, 6.47, 156.1),
    ("Mistral-7B-Instruct-v0.2", 4096, 128, 3968, 27.3, 6.86, 149.7),
)


def decode_floor_table() -> tuple[str, float]:
    """Markdown rows of the batch-1 decode floor per configuration, and the one-chip floor in ms."""
    from inf2_deploy.spec.catalog import GPTJ_6B_CONFIG, INSTANCES, gptj_tensor_shapes

    parameters = sum(math.prod(shape) for shape in gptj_tensor_shapes(GPTJ_6B_CONFIG).values())
    weights = parameters * BYTES_FP16
    kv_bytes = 2 * GPTJ_6B_CONFIG["n_layer"] * CONTEXT * GPTJ_6B_CONFIG["n_embd"] * BYTES_FP16
    rows = [f"GPT-J-6B has {parameters / 1e9:.3f} B parameters (summed from its tensor shapes): "
            f"**{weights / 1e9:.2f} GB in fp16**. At batch 1 every generated token reads all weights once, so "
            f"the decode step can be no faster than weight bytes / HBM bandwidth of the chips the model is "
            f"sharded over (each Inferentia2 chip has 2 NeuronCores). A {CONTEXT}-token KV cache adds "
            f"{kv_bytes / 1e9:.2f} GB per sequence per step.", "",
            "| instance | tp | chips used | HBM GB/s | floor ms/token (batch 1) | + KV at 1024 ctx | "
            "ceiling tok/s at batch 4 | $/1M tokens at that ceiling |",
            "|---|---|---|---|---|---|---|---|"]
    one_chip = None
    for name, tp in CONFIGURATIONS:
        entry = INSTANCES[name]
        cores_per_chip = entry.neuron_cores // entry.chips
        chips = math.ceil(tp / cores_per_chip)
        bandwidth = chips * entry.hbm_bandwidth / entry.chips
        floor = weights / bandwidth
        with_kv = (weights + kv_bytes) / bandwidth
        # batch 4: one weight read per step serves 4 sequences, each with its own KV cache
        ceiling = 4 / ((weights + 4 * kv_bytes) / bandwidth)
        cost = entry.reference_price_per_hour / (ceiling * 3600) * 1e6
        one_chip = floor if chips == 1 and one_chip is None else one_chip
        rows.append(f"| {name} | {tp} | {chips} | {bandwidth / 1e9:.0f} | {floor * 1000:.1f} | "
                    f"{with_kv * 1000:.1f} | {ceiling:.0f} | {cost:.2f} |")
    rows += ["", "Floors are lower bounds: real steps add collectives between cores, kernel launch and "
             "sampling, so expect several times the floor (the published figures below run at about a "
             "fifth of the bandwidth bound). Prices are the catalog's reference prices "
             f"({INSTANCES['ml.inf2.8xlarge'].price_source}); pass `--price-per-hour` for yours."]
    return "\n".join(rows), (one_chip or 0.0) * 1000


def body() -> str:
    table, one_chip_ms = decode_floor_table()
    published = ["| model | seq len | in | out | TTFT p50 ms | TPOT p50 ms | output tok/s |",
                 "|---|---|---|---|---|---|---|"]
    published += [f"| {m} | {s} | {i} | {o} | {t:.1f} | {p:.2f} | {r:.1f} |" for m, s, i, o, t, p, r in PUBLISHED]
    return "\n".join([
        table, "",
        f"The headline number: **{one_chip_ms:.1f} ms/token at batch 1 on one chip** (tp 2 on ml.inf2.xlarge or "
        "ml.inf2.8xlarge), i.e. at most about {:.0f} tokens/s for one stream.".format(1000 / one_chip_ms), "",
        "### Published 7B-class figures", "",
        "From the Neuron SDK's own benchmark table (aws-neuron/aws-neuron-sdk, "
        "`general/benchmarks/inf2/latency_data_decoder.csv`, commit 23da889, rows labelled Neuron SDK 2.18.0, "
        "the 2024 release): inf2.48xlarge, transformers-neuronx, tp 24 (12 chips), batch 1, FP16 with BF16 "
        "matmuls.", "",
        *published, "",
        "Llama-2-7b's 13.5 GB of fp16 weights over 12 chips (9.8 TB/s) give a 1.4 ms floor; 6.5 ms measured is "
        "about 21% of the bandwidth bound. No GPT-J figure on inf2 is published there, and we have measured "
        "none: these rows are for scale, not a claim about this toolkit.", "",
        "### Measuring a real endpoint", "",
        "```bash",
        "inf2-deploy deploy --model EleutherAI/gpt-j-6b --instance-type ml.inf2.8xlarge --endpoint-name gptj-inf2",
        "inf2-deploy bench gptj-inf2 --concurrency 1,2,4,8 --prompt-tokens 128 --max-new-tokens 128 \\",
        "    --out gptj-inf2.json --plot gptj-inf2.png",
        "```", "",
        "`bench` describes the endpoint to find its instance type (for the catalog price) and its model data "
        "on S3, reads only the tokenizer files from there to build prompts of exactly `--prompt-tokens` "
        "tokens, streams every request with `InvokeEndpointWithResponseStream` and timestamps each token on "
        "arrival. Pass `--tokenizer PATH_OR_ID` to skip the S3 read and `--price-per-hour` for your rate. "
        "Compare TPOT p50 at concurrency 1 with the floor above; concurrency beyond the compiled "
        "`batch_size` queues in the container, which shows as rising TTFT with flat output tok/s.",
    ])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-record", action="store_true", help="print only; do not append to docs")
    args = parser.parse_args()
    text = body()
    print(text)
    if not args.no_record:
        append_section("Inferentia2: decode floor and published figures", text, "python benchmarks/inferentia2.py")
    return 0


if __name__ == "__main__":
    sys.exit(main())
