"""The write path's one-pass encoding: ``check_json`` refuses exactly what
``canonical_bytes`` refuses, and ``encode_checked`` then gives the same bytes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.canonical import (
    INTEGER_MAX,
    NotCanonicalizable,
    canonical_bytes,
    check_json,
    encode_checked,
)

anything = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**60), max_value=2**60)
    | st.floats()
    | st.text()
    | st.binary(max_size=3),
    lambda children: (
        st.lists(children, max_size=4)
        | st.tuples(children)
        | st.dictionaries(st.text(max_size=6) | st.integers(0, 3), children, max_size=4)
    ),
    max_leaves=20,
)


def _accepted(check: object, value: object) -> bool:
    try:
        check(value)  # type: ignore[operator]
    except NotCanonicalizable:
        return False
    return True


@settings(max_examples=1500)
@given(anything)
def test_check_refuses_exactly_what_canonical_bytes_refuses(value: object) -> None:
    assert _accepted(check_json, value) == _accepted(canonical_bytes, value)


@settings(max_examples=600)
@given(anything)
def test_encode_checked_equals_canonical_bytes(value: object) -> None:
    if _accepted(check_json, value):
        assert encode_checked(value) == canonical_bytes(value)


@pytest.mark.parametrize(
    "value",
    [
        {"a": "\ud800"},
        {"\udfff": 1},
        ["x", 2**53],
        {"a": -(2**53)},
        {"a": [0.5]},
        {"a": ("t",)},
        {1: "x"},
        {"a": {2}},
    ],
)
def test_refused(value: object) -> None:
    with pytest.raises(NotCanonicalizable):
        check_json(value)


def test_deep_nesting_is_refused_not_a_crash() -> None:
    deep: object = 1
    for _ in range(100_000):
        deep = {"a": [deep]}
    with pytest.raises(NotCanonicalizable):
        check_json(deep)


def test_bounds_are_inclusive() -> None:
    check_json({"a": INTEGER_MAX, "b": [-INTEGER_MAX], "c": True, "d": None})
