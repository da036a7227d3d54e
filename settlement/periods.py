"""Settlement periods by cycle, in the coalition's time zone.

A period is named by its cycle: ``2027-01-15`` (daily), ``2027-W03`` (ISO week),
``2027-01`` (monthly). It ends at local midnight after its last day; a run for it may
only be cut after that moment — and then exactly the entries before the cut belong to
it, so a late entry falls into the next period.
"""

from __future__ import annotations

import re
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from ledger.timefmt import datetime_to_us

_DAILY = re.compile(r"(\d{4})-(\d{2})-(\d{2})")
_WEEKLY = re.compile(r"(\d{4})-W(\d{2})")
_MONTHLY = re.compile(r"(\d{4})-(\d{2})")


class InvalidPeriod(ValueError):
    """Not a period name of any cycle (daily YYYY-MM-DD, weekly YYYY-Www, monthly YYYY-MM)."""


def period_bounds(name: str, zone: str) -> tuple[str, int, int]:
    """(cycle, start_us, end_us) of the period ``name`` in time zone ``zone``."""
    tz = ZoneInfo(zone)
    try:
        if match := _DAILY.fullmatch(name):
            first = date(*(int(g) for g in match.groups()))
            cycle, after = "daily", first + timedelta(days=1)
        elif match := _WEEKLY.fullmatch(name):
            first = date.fromisocalendar(int(match[1]), int(match[2]), 1)
            cycle, after = "weekly", first + timedelta(days=7)
        elif match := _MONTHLY.fullmatch(name):
            first = date(int(match[1]), int(match[2]), 1)
            cycle = "monthly"
            after = date(first.year + first.month // 12, first.month % 12 + 1, 1)
        else:
            raise InvalidPeriod(f"{name!r}: use YYYY-MM-DD, YYYY-Www or YYYY-MM")
    except ValueError as exc:
        if isinstance(exc, InvalidPeriod):
            raise
        raise InvalidPeriod(f"{name!r}: {exc}") from None
    start = datetime.combine(first, time(0), tz)
    end = datetime.combine(after, time(0), tz)
    return cycle, datetime_to_us(start), datetime_to_us(end)


CYCLES = ("daily", "weekly", "monthly")


def last_ended(cycle: str, zone: str, now_us: int) -> str:
    """The name of the latest period of ``cycle`` to have ended by ``now_us`` in ``zone``:
    yesterday, last ISO week or last month, counted from the local date now."""
    if cycle not in CYCLES:
        raise InvalidPeriod(f"cycle {cycle!r}: use one of {', '.join(CYCLES)}")
    today = (
        (datetime(1970, 1, 1, tzinfo=ZoneInfo("UTC")) + timedelta(microseconds=now_us))
        .astimezone(ZoneInfo(zone))
        .date()
    )
    if cycle == "daily":
        return (today - timedelta(days=1)).isoformat()
    if cycle == "weekly":
        year, week, _ = (today - timedelta(days=7)).isocalendar()
        return f"{year:04d}-W{week:02d}"
    last_month = today.replace(day=1) - timedelta(days=1)
    return f"{last_month.year:04d}-{last_month.month:02d}"
