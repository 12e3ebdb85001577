"""An interactive loop: read a prompt, stream the answer, repeat until ``exit`` or end of input.

    python examples/chat.py NAME            # a local deployment or a SageMaker endpoint
    python examples/chat.py --url http://127.0.0.1:8080

GPT-J is a base model, not a chat model: each line is sent as its own prompt.
"""
from __future__ import annotations

import argparse

from inf2_deploy import connect


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", nargs="?")
    parser.add_argument("--url")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    args = parser.parse_args()
    if not (args.name or args.url):
        parser.error("give a deployment NAME or --url")
    predictor = connect(args.url or args.name)
    while True:
        try:
            prompt = input("> ")
        except EOFError:
            break
        if prompt.strip() in ("exit", "quit"):
            break
        if not prompt.strip():
            continue
        for text in predictor.stream(prompt, max_new_tokens=args.max_new_tokens):
            print(text, end="", flush=True)
        print()


if __name__ == "__main__":
    main()
