"""Migration 0021 carries a journal written under the unpartitioned schema: the rows are
copied into the partitioned tables, references into ``ledger_ref``, every account row
gets the chain, and the result verifies, proves and takes further appends."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from alembic import command
from sqlalchemy import create_engine

from coalition.database import sqlalchemy_url
from coalition.migrate import _config
from ledger import proofs, reads
from ledger.journal import Journal
from ledger.verify_db import verify_database
from tests.conftest import _with_database, psycopg_url
from tests.integration._journal_helpers import (
    DAY_US,
    T0_US,
    Clock,
    earn,
    expect_appended,
    write_varied_journal,
)

Conn = psycopg.Connection[Any]
# The unpartitioned schema's columns (0001): what a journal written before 0021 holds.
OLD_COLUMNS = {
    "ledger_chain": "chain_id, tree_size, head_leaf_hash, last_time_us, frontier_hashes",
    "ledger_account": "account, unit, overdraft, lot_tracked, opened_seq",
    "ledger_entry": "chain_id, seq, time_us, kind, ref_scope, ref_key, request_hash, canonical,"
    " leaf_hash, corrects_seq",
    "ledger_posting": "chain_id, seq, posting_index, account, unit, amount, balance_after",
    "ledger_balance": "account, balance, last_seq",
    "ledger_lot": "lot_id, account, origin, expires_us, opened_seq, posting_index,"
    " amount_opened, remaining",
    "ledger_hold": "hold_seq, account, unit, amount, expires_us, status, closed_seq",
    "ledger_merkle_node": "chain_id, level, node_index, node_hash",
}


def _migrate(url: str, revision: str) -> None:
    engine = create_engine(sqlalchemy_url(url))
    try:
        with engine.begin() as conn:
            config = _config()
            config.attributes["connection"] = conn
            command.upgrade(config, revision)
    finally:
        engine.dispose()


@pytest.fixture()
def old_db_url(server_url: str) -> Iterator[str]:
    name = f"t_old_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = psycopg_url(_with_database(server_url, name))
    try:
        _migrate(url, "0017")
        yield url
    finally:
        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _rows(conn: Conn, table: str) -> list[tuple[Any, ...]]:
    return [
        tuple(r) for r in conn.execute(f"SELECT {OLD_COLUMNS[table]} FROM {table} ORDER BY 1, 2")
    ]


def test_migration_0021_carries_an_unpartitioned_journal(db_url: str, old_db_url: str) -> None:
    clock = Clock()
    with psycopg.connect(db_url, autocommit=True) as source:
        write_varied_journal(source, Journal(clock_us=clock), clock)
        rows = {table: _rows(source, table) for table in OLD_COLUMNS}
        root = proofs.root_hash_at(source, 13)
    with psycopg.connect(old_db_url, autocommit=True) as old:
        for table, columns in OLD_COLUMNS.items():  # in foreign-key order
            marks = ", ".join(["%s"] * len(columns.split(",")))
            with old.cursor() as cur:
                cur.executemany(f"INSERT INTO {table} ({columns}) VALUES ({marks})", rows[table])
    _migrate(old_db_url, "head")
    with psycopg.connect(old_db_url, autocommit=True) as conn:
        assert {table: _rows(conn, table) for table in OLD_COLUMNS} == rows
        assert conn.execute("SELECT DISTINCT chain_id FROM ledger_account").fetchall() == [
            ("main",)
        ]
        assert conn.execute("SELECT count(*) FROM ledger_ref").fetchone() == (13,)
        assert verify_database(conn).tree_size == 13
        assert proofs.root_hash_at(conn, 13) == root
        journal = Journal(clock_us=clock)
        clock.now_us += 1
        replay = earn("member:1", 100, "earn-a", "a", T0_US + 30 * DAY_US)
        [again] = journal.append(conn, [replay])
        assert expect_appended(again).replayed and again.seq == 1
        [more] = journal.append(conn, [earn("member:1", 5, "earn-after")])
        assert expect_appended(more).seq == 13
        assert reads.balance(conn, "member:1", clock.now_us) is not None
        assert verify_database(conn).tree_size == 14
