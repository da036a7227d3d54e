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


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE coalition_api_key SET secret_sha256 = secret_sha256",
        "UPDATE coalition_api_key SET role = 'operator'",
        "ALTER TABLE coalition_api_key ADD COLUMN planted text",
        "ALTER TABLE coalition_api_key DISABLE TRIGGER ALL",
        "DROP TABLE coalition_event",
        "CREATE TABLE planted (x int)",
    ],
)
def test_app_role_cannot_rewrite_keys_or_the_schema(app_conn, statement):
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        app_conn.execute(statement)


def test_a_real_login_in_coalition_app_is_held_the_same(db_url: str) -> None:
    """Not SET ROLE from the owner's session: a role that logs in (as compose's
    coalition_service does), member of coalition_app and nothing else. It may revoke a
    key, and a revocation once made cannot be lifted."""
    import uuid

    from coalition.api_keys import create_key
    from ledger.timefmt import now_us

    login = f"svc_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(db_url, autocommit=True) as owner:
        owner.execute(f'CREATE ROLE "{login}" LOGIN IN ROLE coalition_app')
        _key, info = create_key(owner, "auditor", None, "login test", now_us())
    try:
        base, _, rest = db_url.partition("://")
        host_part = rest.split("@", 1)[-1]
        with psycopg.connect(f"{base}://{login}@{host_part}", autocommit=True) as svc:
            for statement in (
                "ALTER TABLE ledger_entry DISABLE TRIGGER ledger_entry_append_only",
                "UPDATE ledger_entry SET kind = 'x'",
                "UPDATE coalition_api_key SET secret_sha256 = secret_sha256",
            ):
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    svc.execute(statement)
            svc.execute(
                "UPDATE coalition_api_key SET revoked_at_us = %s WHERE key_id = %s",
                (now_us(), info.key_id),
            )
            with pytest.raises(psycopg.errors.Error):
                svc.execute(
                    "UPDATE coalition_api_key SET revoked_at_us = NULL WHERE key_id = %s",
                    (info.key_id,),
                )
    finally:
        with psycopg.connect(db_url, autocommit=True) as owner:
            owner.execute(f'DROP OWNED BY "{login}"')
            owner.execute(f'DROP ROLE "{login}"')
