"""Instants in entries: fixed-width RFC 3339 text, exact to the microsecond, both ways."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.timefmt import TIME_MAX_US, format_time_us, parse_time_us


def test_known_instant() -> None:
    assert format_time_us(0) == "1970-01-01T00:00:00.000000Z"
    assert format_time_us(1_800_000_000_123_456) == "2027-01-15T08:00:00.123456Z"
    assert parse_time_us("2027-01-15T08:00:00.123456Z") == 1_800_000_000_123_456


@given(st.integers(min_value=0, max_value=TIME_MAX_US))
def test_round_trip_and_fixed_width(time_us: int) -> None:
    text = format_time_us(time_us)
    assert len(text) == 27
    assert parse_time_us(text) == time_us


@pytest.mark.parametrize(
    "text",
    [
        "2027-01-15T08:00:00Z",
        "2027-01-15T08:00:00.123456+00:00",
        "2027-01-15 08:00:00.123456Z",
        "2027-02-30T08:00:00.000000Z",
        "2027-01-15T08:00:00.1234567Z",
        "",
    ],
)
def test_other_spellings_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_time_us(text)
