"""Instants in the journal: integer microseconds since the Unix epoch, UTC.

In canonical bytes they are RFC 3339 strings of fixed width
(``2026-11-23T08:15:00.000000Z``) so that they sort as text and read as dates.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NAIVE_EPOCH = datetime(1970, 1, 1)
_FORMAT = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z")
TIME_MIN_US = 0
TIME_MAX_US = 253402300799999999  # 9999-12-31T23:59:59.999999Z


def format_time_us(time_us: int) -> str:
    assert TIME_MIN_US <= time_us <= TIME_MAX_US, time_us
    moment = _NAIVE_EPOCH + timedelta(microseconds=time_us)
    return moment.isoformat(timespec="microseconds") + "Z"


def parse_time_us(text: str) -> int:
    """Parse the fixed-width form only; anything else is a ValueError."""
    if not isinstance(text, str) or not _FORMAT.fullmatch(text):
        raise ValueError(f"time {text!r} is not of the form YYYY-MM-DDTHH:MM:SS.ffffffZ")
    try:
        moment = datetime.fromisoformat(text[:-1]).replace(tzinfo=UTC)
    except ValueError:
        raise ValueError(f"time {text!r} is not a valid date and time") from None
    return datetime_to_us(moment)


def datetime_to_us(moment: datetime) -> int:
    if moment.tzinfo is None:
        raise ValueError("naive datetime: give a timezone")
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def now_us() -> int:
    return datetime_to_us(datetime.now(UTC))
