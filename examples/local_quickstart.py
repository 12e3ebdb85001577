"""Deploy tiny-gptj to a local endpoint, invoke it, stream from it, and delete it.

Runs anywhere, no AWS account: the artifact is the one that would go to SageMaker and the
server speaks the LMI container's HTTP contract. Swap the model for ``EleutherAI/gpt-j-6b``
(about 24 GB to download) to try the real one on a big enough machine.

    python examples/local_quickstart.py
"""
from __future__ import annotations

import os

from inf2_deploy import deploy_gptj


def main() -> None:
    deployment = deploy_gptj(
        os.environ.get("MODEL", "tiny-gptj"),
        local=True,
        endpoint_name="quickstart-local",
        tensor_parallel_degree=2,
        batch_size=4,
        n_positions=512,
        region="us-east-1",  # only used to look up the image URI written into the plan
    )
    try:
        predictor = deployment.predictor
        print("endpoint:", deployment.endpoint_name, deployment.url)
        print("generate:", predictor.generate("The capital of France is", max_new_tokens=16))
        response = predictor.generate("Hello", max_new_tokens=8, details=True)
        print("details: ", response["details"])
        print("stream:  ", end="")
        for text in predictor.stream("Once upon a time", max_new_tokens=16):
            print(text, end="", flush=True)
        print()
    finally:
        deployment.delete()


if __name__ == "__main__":
    main()
