"""``settlement.periods.last_ended``: the period the scheduler's period close computes —
ended by now in the coalition's time zone, and the latest such of its cycle."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from ledger.timefmt import datetime_to_us
from settlement.periods import InvalidPeriod, last_ended, period_bounds

ZONE = "Europe/Moscow"


def _at(text: str) -> int:
    return datetime_to_us(datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(ZONE)))


@pytest.mark.parametrize(
    ("now", "cycle", "expected"),
    [
        ("2027-03-01T00:30", "monthly", "2027-02"),
        ("2027-03-01T00:30", "daily", "2027-02-28"),
        ("2027-03-01T00:30", "weekly", "2027-W08"),  # a Monday: last week just ended
        ("2027-01-01T00:00", "monthly", "2026-12"),
        ("2027-01-03T23:59", "weekly", "2026-W52"),  # a Sunday: 2026-W53 is still on
        ("2026-12-31T23:59", "daily", "2026-12-30"),
    ],
)
def test_the_latest_ended_period(now: str, cycle: str, expected: str) -> None:
    assert last_ended(cycle, ZONE, _at(now)) == expected


@pytest.mark.parametrize("cycle", ["daily", "weekly", "monthly"])
def test_it_has_ended_and_the_next_has_not(cycle: str) -> None:
    for now in ("2027-03-01T00:00", "2027-06-15T12:00", "2028-02-29T23:59:59"):
        now_us = _at(now)
        _, _, end_us = period_bounds(last_ended(cycle, ZONE, now_us), ZONE)
        assert end_us <= now_us
        _, _, next_end_us = period_bounds(last_ended(cycle, ZONE, end_us - 1), ZONE)
        assert next_end_us < end_us  # one instant earlier, the latest ended was another


def test_an_unknown_cycle_is_refused() -> None:
    with pytest.raises(InvalidPeriod):
        last_ended("yearly", ZONE, 0)
