"""Numbers and times for people: thousands separators, amounts in major units with their
currency, RFC 3339 times in the coalition's time zone. Jinja filters (``templates.py``)."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from settlement.money import format_minor


def points(value: int | str | None) -> str:
    """``1234567`` → ``1,234,567`` (Long values arrive as decimal strings)."""
    if value is None or value == "":
        return "—"
    return f"{int(value):,}"


def money(amount_minor: int | str | None, currency: str) -> str:
    """Minor units as major units with separators: ``-123456`` EUR → ``-1,234.56 EUR``."""
    if amount_minor is None:
        return "—"
    text = format_minor(int(amount_minor), currency)
    sign = "-" if text.startswith("-") else ""
    whole, dot, part = text.lstrip("-").partition(".")
    return f"{sign}{int(whole):,}{dot}{part} {currency}"


def local_time(text: str | None, zone: str) -> str:
    """A journal time (``…SS.ffffffZ``) as RFC 3339 in ``zone`` to the second, with its
    offset: ``2026-12-01T21:00:00.5Z`` → ``2026-12-02T00:00:00+03:00`` (Europe/Moscow)."""
    if not text:
        return "—"
    instant = datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)
    return instant.astimezone(ZoneInfo(zone)).replace(microsecond=0).isoformat()
