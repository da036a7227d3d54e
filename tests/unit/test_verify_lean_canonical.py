"""The lean canonical check (orjson's round trip, ``ledger._lean_canonical``) accepts
exactly the bytes the reference's ``parse_canonical`` accepts, with the same value.

Floats are the one exception the module states (the round trip writes ``1.5`` back as
``1.5``): the lean rules and ``meta_has_float`` refuse them, so here a float is allowed
to pass the lean check only where the reference refuses it as a float."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger._lean_canonical import canonical_value
from ledger.canonical import canonical_bytes, parse_canonical

SPECIAL = [0x7F, 0x2028, 0x2029, 0xD7FF, 0xE000, 0xE001, 0xFEFF, 0xFFFD, 0xFFFF]
SPECIAL += [0x10000, 0x1F600, 0x10FFFF]
CODE_POINTS = [*range(0x800), *SPECIAL]


def _reference(body: bytes) -> tuple[str, Any]:
    try:
        return "ok", parse_canonical(body)
    except ValueError:
        return "refused", None


def _lean(body: bytes) -> tuple[str, Any]:
    value = canonical_value(body)
    return ("refused", None) if value is None else ("ok", value)


def _spellings(text: str) -> list[bytes]:
    """``{"k": text}`` and ``{text: 1}`` canonical, escaped as ASCII, and both keys."""
    out = []
    for value in ({"k": text}, {text: 1}, {"k": 1, text: 2}, {text: 1, "\U0001f600": 2}):
        out.append(canonical_bytes(value))
        out.append(json.dumps(value, separators=(",", ":")).encode())  # \\uXXXX escapes
        out.append(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())
    return out


@pytest.mark.parametrize("first", range(0, len(CODE_POINTS), 64))
def test_every_code_point_below_u0800_and_the_special_ones(first: int) -> None:
    for code_point in CODE_POINTS[first : first + 64]:
        if 0xD800 <= code_point <= 0xDFFF:
            continue
        for body in _spellings(chr(code_point)):
            assert _lean(body) == _reference(body), (hex(code_point), body)


@pytest.mark.parametrize(
    "body",
    [
        b'{"a":1}',
        b'{"a":1} ',
        b' {"a":1}',
        b'{"a":1}\n',
        b'{"a":1,"a":1}',
        b'{"b":1,"a":2}',
        b'{"a":-0}',
        b'{"a":01}',
        b'{"a":9007199254740991}',
        b'{"a":9007199254740992}',
        b'{"a":-9007199254740992}',
        b'{"a":123456789012345678901234567890}',
        b'{"a":1e2}',
        b'{"a":NaN}',
        b'{"a":"\\u0041"}',
        b'{"a":"\\/"}',
        b'{"a":"\\u001F"}',
        b'{"a":"\\u001f"}',
        b'{"a":"\\ud800"}',
        b'{"a":"\xff"}',
        b'{"\xee\x80\x80":1,"\xf0\x9f\x98\x80":2}',
        b'{"\xf0\x9f\x98\x80":2,"\xee\x80\x80":1}',
        b"[1,2]",
        b"",
    ],
)
def test_edge_cases_agree(body: bytes) -> None:
    assert _lean(body) == _reference(body)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**54), 2**54) | st.text(max_size=6),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=4), children, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(st.text(max_size=4), json_values, max_size=5),
    st.sampled_from(["canonical", "ascii", "spaced", "unsorted"]),
)
def test_generated_values_agree(value: Any, spelling: str) -> None:
    """(An entry is an object; the lean check's None means refused, so no top-level null.)"""
    if spelling == "canonical":
        try:
            body = canonical_bytes(value)
        except ValueError:
            return  # out of range: nothing canonical to write
    elif spelling == "ascii":
        body = json.dumps(value, separators=(",", ":")).encode()
    elif spelling == "spaced":
        body = json.dumps(value, ensure_ascii=False).encode()
    else:
        body = json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
    assert _lean(body) == _reference(body)
