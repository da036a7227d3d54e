"""What people type for a time: RFC 3339 with or without fractional seconds, with ``Z``
or an offset, and plain dates (midnight in the coalition's time zone) — and what is
refused. The journal's strict parser (ledger.timefmt) is not this one."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coalition.time_input import (
    InvalidTime,
    execution_date,
    parse_date,
    parse_instant,
    today,
)
from ledger.timefmt import TIME_MAX_US, TIME_MIN_US, format_time_us, parse_time_us

DEC_1_UTC_US = parse_time_us("2026-12-01T00:00:00.000000Z")
MOSCOW = "Europe/Moscow"


@pytest.mark.parametrize(
    "text",
    [
        "2026-12-01T00:00:00Z",
        "2026-12-01T03:00:00+03:00",
        "2026-11-30T19:00:00-05:00",
        "2026-12-01T00:00:00.000000Z",
        "2026-12-01T00:00:00.0Z",
        "2026-12-01t00:00:00z",
        "2026-12-01T00:00:00-00:00",
        "2026-12-01T05:30:00+05:30",
    ],
)
def test_the_same_instant_written_every_rfc_3339_way(text: str) -> None:
    assert parse_instant(text, MOSCOW) == DEC_1_UTC_US


def test_fractional_seconds_of_any_length_up_to_microseconds() -> None:
    assert parse_instant("2026-12-01T00:00:00.5Z") == DEC_1_UTC_US + 500_000
    assert parse_instant("2026-12-01T00:00:00.000001Z") == DEC_1_UTC_US + 1


def test_a_plain_date_is_midnight_in_the_coalition_s_time_zone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert parse_instant("2026-12-01", MOSCOW) == DEC_1_UTC_US - 3 * 3_600_000_000
    assert parse_instant("2026-12-01", "UTC") == DEC_1_UTC_US
    monkeypatch.setenv("COALITION_TIMEZONE", "America/New_York")
    assert format_time_us(parse_instant("2026-07-01")) == "2026-07-01T04:00:00.000000Z"


@pytest.mark.parametrize(
    "text",
    [
        "2026-12-01T00:00:00",  # no offset: a local time names no instant
        "2026-12-01T00:00Z",  # no seconds
        "2026-12-01 00:00:00Z",
        "20261201T000000Z",
        "2026-W48-2",
        "2026-12-01T00:00:00,5Z",
        "2026-12-01T00:00:00.1234567Z",  # finer than the journal keeps
        "2026-12-01T00:00:60Z",  # a leap second
        "2026-12-01T24:00:00Z",
        "2026-12-01T00:00:00+24:00",
        "2026-12-01T00:00:00+0300",
        "2026-02-30T00:00:00Z",
        "2026-02-30",
        "0000-01-01T00:00:00Z",
        "1969-12-31T23:59:59.999999Z",
        "1970-01-01T00:00:00+00:01",  # 1969 in UTC
        "9999-12-31T23:59:59-00:01",  # year 10000 in UTC
        "２０２６-12-01T00:00:00Z",  # fullwidth digits
        "2026-12-01T00:00:00Z\n",
        " 2026-12-01T00:00:00Z",
        "tomorrow",
        "",
    ],
)
def test_what_is_refused(text: str) -> None:
    with pytest.raises(InvalidTime):
        parse_instant(text, MOSCOW)


def test_a_refusal_says_what_to_write() -> None:
    with pytest.raises(InvalidTime, match=r"RFC 3339.*2026-12-01T00:00:00Z"):
        parse_instant("1 December")


def test_the_range_is_1970_to_9999_in_utc() -> None:
    assert parse_instant("1970-01-01T00:00:00Z") == TIME_MIN_US
    assert parse_instant("9999-12-31T23:59:59.999999Z") == TIME_MAX_US
    assert parse_instant("1970-01-01", "UTC") == TIME_MIN_US
    with pytest.raises(InvalidTime, match="1970"):
        parse_instant("1970-01-01", MOSCOW)  # 1969-12-31T21:00Z


instants = st.integers(min_value=TIME_MIN_US, max_value=TIME_MAX_US)
offsets = st.integers(min_value=-(23 * 60 + 59), max_value=23 * 60 + 59)


@given(instants)
def test_the_journal_s_own_form_reads_the_same_as_the_strict_parser(time_us: int) -> None:
    text = format_time_us(time_us)
    assert parse_instant(text) == parse_time_us(text) == time_us


@given(instants, offsets, st.booleans())
def test_any_offset_and_precision_names_the_same_instant(
    time_us: int, offset_minutes: int, whole_seconds: bool
) -> None:
    if whole_seconds:
        time_us -= time_us % 1_000_000
    zone = timezone(timedelta(minutes=offset_minutes))
    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=time_us)
    if moment.date() == date.max:  # an offset east of UTC would be past year 9999
        offset_minutes = min(offset_minutes, 0)
        zone = timezone(timedelta(minutes=offset_minutes))
    local = moment.astimezone(zone)
    text = local.isoformat(timespec="seconds" if whole_seconds else "microseconds")
    assert parse_instant(text) == time_us


@given(st.text(max_size=40))
def test_anything_else_is_refused_cleanly_or_read_as_rfc_3339(text: str) -> None:
    try:
        time_us = parse_instant(text, MOSCOW)
    except InvalidTime:
        return
    assert text.isascii() and TIME_MIN_US <= time_us <= TIME_MAX_US


@given(st.dates(min_value=date(1971, 1, 1)))
def test_a_date_starts_its_day_in_the_zone(day: date) -> None:
    time_us = parse_instant(day.isoformat(), MOSCOW)
    start = datetime.combine(day, datetime.min.time(), ZoneInfo(MOSCOW))
    assert time_us == round(start.timestamp() * 1_000_000)
    assert today(time_us, MOSCOW) == day


# --- dates (the payment file's execution date) ----------------------------------------

NOON_DEC_1_US = DEC_1_UTC_US + 12 * 3_600_000_000
LATE_DEC_1_UTC_US = DEC_1_UTC_US + 22 * 3_600_000_000  # 1 am on 2 December in Moscow


def test_a_date_is_yyyy_mm_dd_of_the_calendar() -> None:
    assert parse_date("2026-12-01") == date(2026, 12, 1)
    for text in ("tomorrow", "2026-12-1", "2026-02-30", "2026-12-01T00:00:00Z", "２０２６-12-01"):
        with pytest.raises(InvalidTime):
            parse_date(text)


def test_an_execution_date_is_today_or_later_in_the_coalition_s_zone() -> None:
    assert execution_date("2026-12-01", NOON_DEC_1_US, MOSCOW) == date(2026, 12, 1)  # today
    assert execution_date("2027-01-31", NOON_DEC_1_US, MOSCOW) == date(2027, 1, 31)
    assert execution_date(None, NOON_DEC_1_US, MOSCOW) == date(2026, 12, 2)
    with pytest.raises(InvalidTime, match="in the past: today is 2026-12-01 in Europe/Moscow"):
        execution_date("2026-11-30", NOON_DEC_1_US, MOSCOW)
    # At 22:00 UTC it is already 2 December in Moscow: the 1st is past there, not in UTC.
    with pytest.raises(InvalidTime, match="past"):
        execution_date("2026-12-01", LATE_DEC_1_UTC_US, MOSCOW)
    assert execution_date("2026-12-01", LATE_DEC_1_UTC_US, "UTC") == date(2026, 12, 1)


def test_tomorrow_is_not_a_date() -> None:
    with pytest.raises(InvalidTime, match="'tomorrow' is not a date"):
        execution_date("tomorrow", NOON_DEC_1_US, MOSCOW)
