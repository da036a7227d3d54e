"""Instants in entries: fixed-width RFC 3339 text, exact to the microsecond, both ways."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
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


def _reference(text: str) -> int | None:
    """The plain way: datetime's own parser (what parse_time_us did before its fast path)."""
    from datetime import UTC, datetime

    try:
        moment = datetime.fromisoformat(text[:-1]).replace(tzinfo=UTC)
    except ValueError:
        return None
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


@settings(max_examples=1000)
@given(
    st.tuples(
        st.integers(0, 9999),
        st.integers(0, 19),
        st.integers(0, 39),
        st.integers(0, 29),
        st.integers(0, 69),
        st.integers(0, 69),
        st.integers(0, 999_999),
    )
)
def test_the_fast_parse_agrees_with_datetime_on_valid_and_invalid_fields(
    fields: tuple[int, int, int, int, int, int, int],
) -> None:
    year, month, day, hour, minute, second, micros = fields
    text = f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}.{micros:06d}Z"
    expected = _reference(text)
    if expected is None:
        with pytest.raises(ValueError):
            parse_time_us(text)
    else:
        assert parse_time_us(text) == expected
