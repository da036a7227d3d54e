"""Canonical bytes: our fast encoder must equal the RFC 8785 reference on every value."""

from __future__ import annotations

import json

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.canonical import INTEGER_MAX, NotCanonicalizable, canonical_bytes, parse_canonical

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-INTEGER_MAX, max_value=INTEGER_MAX)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=600)
@given(json_values)
def test_matches_the_reference_implementation(value: object) -> None:
    try:
        reference = rfc8785.dumps(value)
    except Exception:  # the reference refuses lone surrogates too
        with pytest.raises(NotCanonicalizable):
            canonical_bytes(value)
        return
    assert canonical_bytes(value) == reference


def test_keys_sort_by_utf16_code_units_not_code_points() -> None:
    # U+E000 sorts after U+10000 by code point, before it in UTF-16 (surrogates D800–DFFF).
    value = {"\ue000": 1, "\U00010000": 2}
    assert canonical_bytes(value) == rfc8785.dumps(value)
    assert canonical_bytes(value).decode().index("\U00010000") < canonical_bytes(
        value
    ).decode().index("\ue000")


def test_escapes_like_ecmascript() -> None:
    assert canonical_bytes({"a": '\u0001\n"\\é'}) == '{"a":"\\u0001\\n\\"\\\\é"}'.encode()


@pytest.mark.parametrize(
    "value",
    [1.5, float("nan"), 2**53, -(2**53), {"a": [0.0]}, {1: "x"}, b"bytes", ("t",), {"a": {2}}],
)
def test_refuses_what_jcs_cannot_encode_exactly(value: object) -> None:
    with pytest.raises(NotCanonicalizable):
        canonical_bytes(value)


def test_absurd_nesting_is_refused_not_a_crash() -> None:
    deep: object = 1
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(NotCanonicalizable):
        canonical_bytes(deep)


@pytest.mark.parametrize(
    "data",
    [
        b'{"b":1,"a":2}',  # keys out of order
        b'{"a": 1}',  # whitespace
        b'{"a":1,"a":1}',  # duplicate key
        b'{"a":1.0}',  # float
        b'{"a":9007199254740992}',  # beyond 2^53-1
        b'{"a":"\\u0041"}',  # needless escape
        b'{"a":NaN}',
    ],
)
def test_parse_canonical_refuses_other_spellings(data: bytes) -> None:
    with pytest.raises(NotCanonicalizable):
        parse_canonical(data)


@settings(max_examples=300)
@given(json_values)
def test_parse_canonical_accepts_exactly_canonical_bytes(value: object) -> None:
    try:
        encoded = canonical_bytes(value)
    except NotCanonicalizable:
        return
    assert parse_canonical(encoded) == value


def test_round_trip_through_json_loads_is_stable() -> None:
    value = {"seq": 3, "b": [True, None, "x"], "a": {"z": -1}}
    once = canonical_bytes(value)
    assert canonical_bytes(json.loads(once)) == once
