"""Deploy GPT-J-6B to a SageMaker endpoint on Inferentia2 with ``deploy_gptj()``, invoke it, delete it.

Needs AWS credentials, a region with the LMI neuronx image, an execution role and ml.inf2 quota:

    export INF2_ROLE_ARN=arn:aws:iam::123456789012:role/SageMakerInf2
    python examples/deploy_gptj.py

Settings come from the environment so the same script runs against any AWS-compatible
endpoint (AWS_ENDPOINT_URL), e.g. a local emulator in tests:
MODEL (default EleutherAI/gpt-j-6b), ENDPOINT_NAME, INSTANCE_TYPE (ml.inf2.8xlarge), TP_DEGREE (2),
KEEP_ENDPOINT=1 to leave it running.
"""
from __future__ import annotations

import os
import sys

from inf2_deploy import ConfigError, deploy_gptj


def main() -> int:
    role = os.environ.get("INF2_ROLE_ARN")
    if not role:
        print("set INF2_ROLE_ARN to the endpoint's execution role ARN", file=sys.stderr)
        return 2

    def progress(done: int, total: int, label: str) -> None:
        print(f"\r{label}: {done / 1e6:,.1f} / {total / 1e6:,.1f} MB", end="", flush=True)

    try:
        deployment = deploy_gptj(
            os.environ.get("MODEL", "EleutherAI/gpt-j-6b"),
            role=role,
            instance_type=os.environ.get("INSTANCE_TYPE", "ml.inf2.8xlarge"),
            tensor_parallel_degree=int(os.environ.get("TP_DEGREE", "2")),
            n_positions=512,
            endpoint_name=os.environ.get("ENDPOINT_NAME", "gptj-inf2"),
            progress=progress,
        )
    except ConfigError as error:
        print(f"\nnot deployed: {error}", file=sys.stderr)
        return 2
    print(f"\nendpoint {deployment.endpoint_name} is InService; artifact at {deployment.artifact_s3_uri}")
    print("generate:", deployment.predictor.generate("The capital of France is", max_new_tokens=32))
    if os.environ.get("KEEP_ENDPOINT") != "1":
        deployment.delete()
        print("deleted", deployment.endpoint_name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
