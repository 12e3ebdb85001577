"""The one JSON-lines encoder: each streamed token line, in the container and in the local server."""
from __future__ import annotations

import json
from typing import Any

__all__ = ["JSONLINES", "encode_line"]

JSONLINES = "application/jsonlines"
"""The media type of a streamed answer: one JSON object a line."""


def encode_line(item: dict[str, Any]) -> bytes:
    """``item`` as one UTF-8 JSON line; non-ASCII text stays as is rather than ``\\u`` escapes."""
    return (json.dumps(item, ensure_ascii=False) + "\n").encode("utf-8")
