"""Positions in PostgreSQL's write-ahead log: how far the primary has written and how far
a streaming standby has replayed (the API's read-your-writes and the standby's long
reads compare the two)."""

from __future__ import annotations

import re
from typing import Any

_HEX_1_TO_8 = re.compile(r"[0-9A-Fa-f]{1,8}")


def parse_lsn(text: str) -> int | None:
    """``'16/B374D848'`` → its 64-bit position; None if it is not an LSN."""
    high, sep, low = text.strip().partition("/")
    if not (sep and _HEX_1_TO_8.fullmatch(high) and _HEX_1_TO_8.fullmatch(low)):
        return None
    return (int(high, 16) << 32) | int(low, 16)


def format_lsn(lsn: int) -> str:
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def written_lsn(conn: Any) -> int:
    """The primary's current write position: at or past every commit it has answered."""
    row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
    assert row is not None
    lsn = parse_lsn(row[0])
    assert lsn is not None, row
    return lsn


def replayed_lsn(conn: Any) -> int | None:
    """How far the standby has replayed; None if it is not in recovery (a primary, or a
    promoted standby: whatever it holds is current)."""
    row = conn.execute(
        "SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()::text END"
    ).fetchone()
    return None if row is None or row[0] is None else parse_lsn(row[0])
