"""Times and dates as people type them — CLI options and GraphQL arguments — read into
the journal's instants (integer microseconds since the epoch, UTC).

An instant is either

- an RFC 3339 ``date-time`` (section 5.6) with its offset: ``2026-12-01T00:00:00Z``,
  ``2026-12-01T03:00:00+03:00``, ``2026-12-01T00:00:00.5Z``; fractional seconds are
  optional, up to 6 digits (the journal keeps microseconds); ``T`` and ``Z`` may be
  lower case; ``-00:00`` is UTC. The offset is required: a local time without one names
  no instant. No leap second (``:60``), no other ISO 8601 form (week dates, ``20261201``,
  missing seconds, a comma before the fraction);
- or a plain date ``2026-09-01``, meaning midnight at the start of that day in the
  coalition's time zone (``COALITION_TIMEZONE``, coalition.settle.timezone) — the moment
  a period of that day starts.

Either way the instant is from ``1970-01-01T00:00:00Z`` to ``9999-12-31T23:59:59.999999Z``,
written in ASCII digits. A date (an execution date) is a plain ``YYYY-MM-DD``.

The journal's own fixed form (``…SS.ffffffZ``) is one of these. This module reads input
only: canonical bytes are read by ledger.timefmt.parse_time_us, which stays strict.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from ledger.timefmt import TIME_MAX_US, TIME_MIN_US, datetime_to_us

FRACTION_DIGITS_MAX = 6
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", re.ASCII)
_DATE_TIME = re.compile(
    r"(?P<date>[0-9]{4}-[0-9]{2}-[0-9]{2})[Tt]"
    r"(?P<time>[0-9]{2}:[0-9]{2}:(?P<second>[0-9]{2}))(?:\.(?P<fraction>[0-9]+))?"
    r"(?P<offset>[Zz]|[+-][0-9]{2}:[0-9]{2})",
    re.ASCII,
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
INSTANT_HELP = (
    "RFC 3339 with an offset (2026-12-01T00:00:00Z, 2026-12-01T03:00:00+03:00, "
    "fractional seconds optional) or a date 2026-12-01 (midnight in the coalition's "
    "time zone)"
)
DATE_HELP = "a date YYYY-MM-DD"


class InvalidTime(ValueError):
    """Text that is not a time (or date) this module reads; the message says what is."""


def parse_instant(text: object, zone: str | None = None) -> int:
    """Microseconds since the epoch of an RFC 3339 date-time or a plain date (midnight in
    ``zone``, by default the coalition's time zone). Raises InvalidTime."""
    if not isinstance(text, str):
        raise InvalidTime(f"{text!r} is not a time: give {INSTANT_HELP}")
    if _DATE.fullmatch(text):
        day = _calendar_date(text)
        start = datetime.combine(day, time(0), ZoneInfo(zone or _coalition_zone()))
        return _in_range(text, datetime_to_us(start))
    match = _DATE_TIME.fullmatch(text)
    if match is None:
        raise InvalidTime(f"{text!r} is not a time: give {INSTANT_HELP}")
    fraction = match["fraction"] or ""
    if len(fraction) > FRACTION_DIGITS_MAX:
        raise InvalidTime(
            f"{text!r}: at most {FRACTION_DIGITS_MAX} fractional digits (microseconds)"
        )
    if match["second"] == "60":
        raise InvalidTime(f"{text!r}: a leap second (:60) is not an instant the journal keeps")
    offset = match["offset"].upper()
    normal = f"{match['date']}T{match['time']}{'.' + fraction if fraction else ''}"
    normal += "+00:00" if offset == "Z" else offset
    try:
        moment = datetime.fromisoformat(normal)
    except ValueError as exc:
        raise InvalidTime(f"{text!r} is not a valid date and time: {exc}") from None
    assert moment.tzinfo is not None, normal
    return _in_range(text, datetime_to_us(moment))


def parse_date(text: object) -> date:
    """A calendar date written ``YYYY-MM-DD``. Raises InvalidTime."""
    if not isinstance(text, str) or not _DATE.fullmatch(text):
        raise InvalidTime(f"{text!r} is not a date: give {DATE_HELP}")
    return _calendar_date(text)


def today(now_us: int, zone: str | None = None) -> date:
    """The date at ``now_us`` in ``zone`` (by default the coalition's time zone)."""
    moment = _EPOCH + timedelta(microseconds=now_us)
    return moment.astimezone(ZoneInfo(zone or _coalition_zone())).date()


def execution_date(text: str | None, now_us: int, zone: str | None = None) -> date:
    """A payment's requested execution date: ``text`` as YYYY-MM-DD, not before today in
    ``zone`` (today allowed); None means tomorrow there. Raises InvalidTime."""
    zone = zone or _coalition_zone()
    current = today(now_us, zone)
    if text is None:
        return current + timedelta(days=1)
    day = parse_date(text)
    if day < current:
        raise InvalidTime(f"{text} is in the past: today is {current.isoformat()} in {zone}")
    return day


def _calendar_date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise InvalidTime(f"{text!r} is not a date of the calendar: {exc}") from None


def _in_range(text: str, time_us: int) -> int:
    if not TIME_MIN_US <= time_us <= TIME_MAX_US:
        raise InvalidTime(
            f"{text!r} is outside 1970-01-01T00:00:00Z to 9999-12-31T23:59:59.999999Z"
        )
    return time_us


def _coalition_zone() -> str:
    from coalition.settle import timezone

    return timezone()
