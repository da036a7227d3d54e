"""WAL positions as PostgreSQL writes them (``X/Y``, hex) and back: what the
``Coalition-Wal-Lsn`` and ``Coalition-Read-After`` headers carry (coalition/api/replica.py)."""

from hypothesis import given
from hypothesis import strategies as st

from coalition.wal_position import format_lsn, parse_lsn


@given(st.integers(min_value=0, max_value=2**64 - 1))
def test_a_position_survives_its_text(lsn: int) -> None:
    assert parse_lsn(format_lsn(lsn)) == lsn


def test_postgres_spelling_is_read() -> None:
    assert parse_lsn("16/B374D848") == (0x16 << 32) | 0xB374D848
    assert parse_lsn(" 0/0 ") == 0


def test_anything_else_is_no_position() -> None:
    for text in ("", "16", "/1", "1/", "x/1", "1/2/3", "123456789/0", "0/123456789", "-1/0"):
        assert parse_lsn(text) is None, text
