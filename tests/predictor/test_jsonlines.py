"""The incremental JSON-lines decoder: documents survive any cut of the byte stream."""
from __future__ import annotations

import json

import pytest
from fuzz_budget import examples
from hypothesis import given, settings
from hypothesis import strategies as st
from inf2_deploy.client.jsonlines import JsonLinesDecoder, JsonLinesError, iter_json_lines

# Multi-byte characters of every UTF-8 length: 2 (é), 3 (€, 漢) and 4 (🙂) bytes.
LINES = [
    {"token": {"id": 1, "text": "caf\u00e9"}},
    {"token": {"id": 2, "text": " \u20ac\u6f22"}},
    {"token": {"id": 3, "text": "\U0001f642"}, "generated_text": "caf\u00e9 \u20ac\u6f22\U0001f642"},
]
WIRE = "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in LINES).encode("utf-8")


@pytest.mark.parametrize("cut", range(1, len(WIRE)))
def test_every_single_cut_position(cut: int) -> None:
    assert list(iter_json_lines([WIRE[:cut], WIRE[cut:]])) == LINES


@pytest.mark.parametrize("char", ["\u00e9", "\u20ac", "\U0001f642"])
def test_a_cut_inside_a_multibyte_character(char: str) -> None:
    encoded = char.encode("utf-8")
    wire = (json.dumps({"text": char}, ensure_ascii=False) + "\n").encode("utf-8")
    cut = wire.index(encoded) + 1  # after the first byte of the character
    decoder = JsonLinesDecoder()
    assert decoder.feed(wire[:cut]) == []
    assert decoder.feed(wire[cut:]) == [{"text": char}]


def test_one_byte_at_a_time_yields_each_line_as_soon_as_complete() -> None:
    decoder = JsonLinesDecoder()
    seen = []
    for index in range(len(WIRE)):
        seen.extend(decoder.feed(WIRE[index:index + 1]))
        if WIRE[index:index + 1] == b"\n":
            assert len(seen) == WIRE[: index + 1].count(b"\n")
    assert seen == LINES and decoder.close() == []


@settings(max_examples=examples(200), deadline=None)
@given(
    docs=st.lists(st.dictionaries(st.text(max_size=5), st.one_of(st.text(), st.integers(), st.booleans()),
                                  max_size=3), min_size=1, max_size=5),
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=12),
    crlf=st.booleans(),
    trailing_newline=st.booleans(),
)
def test_any_cuts_of_any_documents(docs: list, cuts: list[int], crlf: bool, trailing_newline: bool) -> None:
    end = "\r\n" if crlf else "\n"
    text = end.join(json.dumps(doc, ensure_ascii=False) for doc in docs) + (end if trailing_newline else "")
    wire = text.encode("utf-8")
    points = sorted({0, len(wire), *(c % (len(wire) + 1) for c in cuts)})
    chunks = [wire[a:b] for a, b in zip(points[:-1], points[1:], strict=True)]
    assert list(iter_json_lines(chunks)) == docs


def test_several_lines_in_one_chunk_and_blank_lines() -> None:
    decoder = JsonLinesDecoder()
    assert decoder.feed(b'{"a": 1}\n\n  \n{"b": 2}\n{"c"') == [{"a": 1}, {"b": 2}]
    assert decoder.feed(b": 3}") == []
    assert decoder.close() == [{"c": 3}]


def test_bad_lines_raise_a_value_error() -> None:
    with pytest.raises(JsonLinesError, match="not-json"):
        JsonLinesDecoder().feed(b"not-json\n")
    with pytest.raises(JsonLinesError):
        JsonLinesDecoder().feed(b'{"text": "\xff"}\n')  # invalid UTF-8
    assert issubclass(JsonLinesError, ValueError)
