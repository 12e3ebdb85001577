"""Incremental JSON-lines parsing for streamed responses.

A streaming endpoint sends ``application/jsonlines``: one JSON document per line.
The transport cuts the byte stream wherever it likes: a SageMaker event part or an
HTTP chunk may hold half a line, several lines, or end inside a multi-byte UTF-8
character. :class:`JsonLinesDecoder` buffers bytes and decodes only whole lines.
Splitting on the byte ``\\n`` is safe because UTF-8 never uses that byte inside a
multi-byte character.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

__all__ = ["JsonLinesDecoder", "JsonLinesError", "iter_json_lines"]


class JsonLinesError(ValueError):
    """A complete line is not UTF-8 or not JSON."""


class JsonLinesDecoder:
    """Turns byte chunks, cut anywhere, into parsed JSON lines.

    Blank lines are skipped and ``\\r\\n`` endings are accepted. Feed every chunk
    with :meth:`feed`, then call :meth:`close` for a last line without a newline.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, chunk: bytes) -> list[Any]:
        """Add ``chunk`` and return the documents of the lines it completed.

        Raises:
            JsonLinesError: a completed line is not UTF-8 or not JSON.
        """
        self._buffer += chunk
        end = self._buffer.rfind(b"\n")
        if end < 0:
            return []
        complete = bytes(self._buffer[: end + 1])
        del self._buffer[: end + 1]
        return [_parse(line) for line in complete.split(b"\n") if line.strip()]

    def close(self) -> list[Any]:
        """Parse what is left (a last line without a newline) and reset.

        Raises:
            JsonLinesError: the leftover bytes are not UTF-8 or not JSON.
        """
        rest = bytes(self._buffer)
        self._buffer.clear()
        return [_parse(rest)] if rest.strip() else []


def _parse(line: bytes) -> Any:
    # Decoded explicitly: json.loads(bytes) would guess UTF-16/32 from leading NULs.
    try:
        return json.loads(line.decode("utf-8"))
    except ValueError as exc:  # UnicodeDecodeError or JSONDecodeError
        raise JsonLinesError(f"{exc}: {line[:200]!r}") from None


def iter_json_lines(chunks: Iterable[bytes]) -> Iterator[Any]:
    """Yield each JSON document of a stream of byte chunks as soon as its line is complete.

    Raises:
        JsonLinesError: a line is not UTF-8 or not JSON.
    """
    decoder = JsonLinesDecoder()
    for chunk in chunks:
        yield from decoder.feed(chunk)
    yield from decoder.close()
