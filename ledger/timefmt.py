"""Instants in the journal: integer microseconds since the Unix epoch, UTC.

In canonical bytes they are RFC 3339 strings of fixed width
(``2026-11-23T08:15:00.000000Z``) so that they sort as text and read as dates.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NAIVE_EPOCH = datetime(1970, 1, 1)
_EPOCH_DATE = date(1970, 1, 1)
_DAY_US = 86_400 * 1_000_000
_FORMAT = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z")
TIME_MIN_US = 0
TIME_MAX_US = 253402300799999999  # 9999-12-31T23:59:59.999999Z


@lru_cache(maxsize=1024)  # an entry's time repeats over its batch (every entry's, often)
def format_time_us(time_us: int) -> str:
    assert TIME_MIN_US <= time_us <= TIME_MAX_US, time_us
    moment = _NAIVE_EPOCH + timedelta(microseconds=time_us)
    return moment.isoformat(timespec="microseconds") + "Z"


def parse_time_us(text: str) -> int:
    """Parse the fixed-width form only; anything else is a ValueError.

    Every entry carries a time, and verification and settlement parse each one, so the
    date and minute are looked up in small caches and the rest read by position (a test
    holds this equal to ``datetime.fromisoformat`` on valid and invalid text alike)."""
    if not isinstance(text, str) or not _FORMAT.fullmatch(text):
        raise ValueError(f"time {text!r} is not of the form YYYY-MM-DDTHH:MM:SS.ffffffZ")
    minute_us = _minute_us(text[:16])
    seconds = int(text[17:19])
    if minute_us is None or seconds > 59:
        raise ValueError(f"time {text!r} is not a valid date and time")
    return minute_us + seconds * 1_000_000 + int(text[20:26])


@lru_cache(maxsize=4096)
def _minute_us(text: str) -> int | None:
    """Microseconds from the epoch to the minute ``YYYY-MM-DDTHH:MM``, or None."""
    hours, minutes = int(text[11:13]), int(text[14:16])
    day_us = _day_us(text[:10])
    if day_us is None or hours > 23 or minutes > 59:
        return None
    return day_us + (hours * 60 + minutes) * 60_000_000


# The same bounded cache, for a reader of verified entries that takes the rest of a time
# by position (settlement's streaming read); on text that is no minute: None, or ValueError.
minute_us_cached = _minute_us


@lru_cache(maxsize=1024)
def _day_us(text: str) -> int | None:
    """Microseconds from the epoch to the start of the day ``YYYY-MM-DD``, or None."""
    try:
        return (date.fromisoformat(text) - _EPOCH_DATE).days * _DAY_US
    except ValueError:
        return None


def datetime_to_us(moment: datetime) -> int:
    if moment.tzinfo is None:
        raise ValueError("naive datetime: give a timezone")
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def now_us() -> int:
    return datetime_to_us(datetime.now(UTC))
