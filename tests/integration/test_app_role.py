"""The application's database role can append and read but cannot get around the
append-only triggers: not by UPDATE/DELETE, not by disabling triggers, not by replica mode."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from ledger.journal import Appended, Journal
from ledger.requests import AccountSpec, EntryRequest, PostingRequest


@pytest.fixture()
def app_conn(db_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("SET ROLE coalition_app")
        yield conn


def test_app_role_appends_through_the_write_path(app_conn):
    opened = EntryRequest(
        "open",
        "t",
        "open",
        open_accounts=(
            AccountSpec("a", "EUR", overdraft=True),
            AccountSpec("b", "EUR"),
        ),
    )
    move = EntryRequest(
        "move",
        "t",
        "m1",
        postings=(
            PostingRequest("a", "EUR", -5),
            PostingRequest("b", "EUR", 5),
        ),
    )
    results = Journal().append(app_conn, [opened, move])
    assert all(isinstance(r, Appended) for r in results)


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE ledger_entry SET kind = 'x'",
        "DELETE FROM ledger_posting",
        "TRUNCATE ledger_entry",
        "ALTER TABLE ledger_entry DISABLE TRIGGER ledger_entry_append_only",
        "SET session_replication_role = replica",
        "DROP TRIGGER ledger_entry_append_only ON ledger_entry",
        "UPDATE ledger_checkpoint SET tree_size = 0",
    ],
)
def test_app_role_cannot_rewrite_or_unguard_the_journal(app_conn, statement):
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        app_conn.execute(statement)
