"""Invoke an LMI endpoint with plain boto3, without inf2-deploy's Predictor.

    python examples/invoke_boto3.py ENDPOINT_NAME ["prompt"] [--no-stream]

Region and credentials come from the standard AWS resolution; AWS_ENDPOINT_URL points boto3 at
another endpoint (e.g. a local emulator in tests).

To run it against a local deployment (``inf2-deploy deploy --local`` or ``inf2-deploy serve``),
whose server speaks the SageMaker runtime API, streaming included::

    AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME=http://127.0.0.1:PORT AWS_DEFAULT_REGION=us-east-1 \\
    AWS_ACCESS_KEY_ID=local AWS_SECRET_ACCESS_KEY=local python examples/invoke_boto3.py any-name

Any credentials do (the local server does not check signatures) and any endpoint name reaches its model.
"""
from __future__ import annotations

import argparse
import json

import boto3


def invoke(runtime, endpoint: str, prompt: str) -> str:
    """One request, the whole answer at once."""
    body = {"inputs": prompt, "parameters": {"max_new_tokens": 32, "details": True}}
    response = runtime.invoke_endpoint(EndpointName=endpoint, ContentType="application/json",
                                       Body=json.dumps(body))
    return json.loads(response["Body"].read())["generated_text"]


def stream(runtime, endpoint: str, prompt: str):
    """Yield token texts as they arrive.

    The response is an event stream of ``PayloadPart`` chunks holding JSON lines; a line may be
    split across chunks, so bytes are buffered until a newline ends it.
    """
    body = {"inputs": prompt, "parameters": {"max_new_tokens": 32}, "stream": True}
    response = runtime.invoke_endpoint_with_response_stream(
        EndpointName=endpoint, ContentType="application/json", Body=json.dumps(body))
    buffer = b""
    for event in response["Body"]:
        buffer += event.get("PayloadPart", {}).get("Bytes", b"")
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            if line.strip():
                token = json.loads(line).get("token")
                if token:
                    yield token["text"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("endpoint")
    parser.add_argument("prompt", nargs="?", default="The capital of France is")
    parser.add_argument("--no-stream", action="store_true", help="skip the streaming call")
    args = parser.parse_args()
    runtime = boto3.client("sagemaker-runtime")
    print("invoke_endpoint:", invoke(runtime, args.endpoint, args.prompt))
    if not args.no_stream:
        print("invoke_endpoint_with_response_stream: ", end="")
        for text in stream(runtime, args.endpoint, args.prompt):
            print(text, end="", flush=True)
        print()


if __name__ == "__main__":
    main()
