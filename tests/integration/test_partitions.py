"""The journal partitioned by chain and seq range (migration 0021, ledger/partitions.py):
ranges made ahead, an append that outruns them still succeeding, every partition
append-only, and the proofs and verification unchanged across range boundaries."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from ledger import partitions, proofs, reads
from ledger.journal import Journal
from ledger.merkle_verify import verify_inclusion
from ledger.verify import VerificationFailed
from ledger.verify_db import verify_database
from tests.integration._journal_helpers import (
    Clock,
    earn,
    expect_appended,
    open_accounts,
    write_varied_journal,
)

Conn = psycopg.Connection[Any]
RANGE_ENTRIES = 4  # small ranges, so a short journal crosses several


@pytest.fixture()
def conn(db_url: str) -> Iterator[Conn]:
    with psycopg.connect(db_url, autocommit=True) as c:
        c.execute("UPDATE ledger_partition_plan SET entries_per_partition = %s", (RANGE_ENTRIES,))
        # The default chain's first range came with the schema, at the schema's size: it
        # is made afresh here, as a chain's first append makes it, at the tests' size.
        for parent in ("ledger_entry", "ledger_posting", "ledger_merkle_node"):
            c.execute(f"DROP TABLE {parent}__main")
        c.execute("DELETE FROM ledger_partition WHERE chain_id = 'main'")
        yield c


def _where(conn: Conn, table: str) -> dict[int, str]:
    """The partition each row of ``table`` is stored in, by seq."""
    key = "sealed_seq" if table == "ledger_merkle_node" else "seq"
    rows = conn.execute(f"SELECT {key}, tableoid::regclass::text FROM {table}").fetchall()
    return {int(seq): name for seq, name in rows}


def _check_proofs(conn: Conn) -> None:
    size = reads.head(conn).tree_size
    root = proofs.root_hash_at(conn, size)
    for seq in range(size):
        stored = reads.entry(conn, seq)
        assert stored is not None
        verify_inclusion(stored.leaf_hash, seq, size, proofs.inclusion_proof(conn, seq, size), root)


def test_an_append_past_the_ranges_made_lands_in_the_default_and_the_next_range_follows(
    conn: Conn,
) -> None:
    clock = Clock()
    journal = Journal(clock_us=clock)
    write_varied_journal(conn, journal, clock)  # 13 entries; only [0, 4) was made ahead
    assert partitions.ranges(conn, "main") == [(0, 4)]
    where = _where(conn, "ledger_entry")
    assert {where[s] for s in range(4)} == {"ledger_entry__main_000000000000"}
    assert {where[s] for s in range(4, 13)} == {"ledger_entry__main_default"}
    verify_database(conn)
    _check_proofs(conn)

    [made] = partitions.ensure_ahead(conn)
    # The next range starts after the rows the default holds, and one whole range is made
    # past the head (13 + 4).
    assert (made.ranges_made, made.through_seq) == (2, 21)
    assert partitions.ranges(conn, "main") == [(0, 4), (13, 17), (17, 21)]
    for n in range(6):
        clock.now_us += 1
        expect_appended(journal.append(conn, [earn("member:1", 1, f"more-{n}")])[0])
    where = _where(conn, "ledger_entry")
    assert {where[s] for s in range(13, 17)} == {"ledger_entry__main_000000000013"}
    assert {where[s] for s in range(17, 19)} == {"ledger_entry__main_000000000017"}
    postings = _where(conn, "ledger_posting")
    assert postings[18] == "ledger_posting__main_000000000017"
    nodes = _where(conn, "ledger_merkle_node")
    assert nodes[15] == "ledger_merkle_node__main_000000000013"  # the node (4, 0) ends at 15
    verify_database(conn)
    _check_proofs(conn)


def test_ranges_made_ahead_keep_every_row_out_of_the_default(conn: Conn) -> None:
    clock = Clock()
    journal = Journal(clock_us=clock)
    expect_appended(journal.append(conn, [open_accounts()])[0])
    for n in range(5):
        partitions.ensure_ahead(conn)
        batch = [earn("member:1", 1, f"e-{n}-{i}") for i in range(3)]
        for result in journal.append(conn, batch):
            expect_appended(result)
    for table in ("ledger_entry", "ledger_posting", "ledger_merkle_node"):
        assert not [s for s, name in _where(conn, table).items() if name.endswith("_default")]
    assert partitions.ranges(conn, "main") == [(n, n + 4) for n in range(0, 20, 4)]
    verify_database(conn)


def test_a_new_chain_gets_its_partitions_with_its_first_append(conn: Conn) -> None:
    clock = Clock()
    other = Journal(clock_us=clock, chain_id="Other chain")  # not a plain word: a digest
    expect_appended(other.append(conn, [open_accounts()])[0])
    [(name,)] = conn.execute(
        "SELECT DISTINCT tableoid::regclass::text FROM ledger_entry"
    ).fetchall()
    assert name.startswith("ledger_entry__h") and name.endswith("_000000000000")
    assert partitions.ranges(conn, "Other chain") == [(0, 4)]
    verify_database(conn, chain_id="Other chain")


def _leaves(conn: Conn) -> list[str]:
    rows = conn.execute(
        "SELECT c.relname FROM pg_class c WHERE c.relispartition AND c.relkind IN ('r', 'p')"
        " AND c.relname ~ '^ledger_'"
        " ORDER BY 1"
    ).fetchall()
    return [r[0] for r in rows]


def test_every_partition_is_append_only(conn: Conn) -> None:
    clock = Clock()
    write_varied_journal(conn, Journal(clock_us=clock), clock)
    partitions.ensure_ahead(conn)
    leaves = _leaves(conn)
    assert "ledger_entry__main_default" in leaves and len(leaves) >= 3 * 4
    for leaf in leaves:
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
            conn.execute(f"TRUNCATE {leaf}")
    holding = [leaf for leaf in leaves if conn.execute(f"SELECT 1 FROM {leaf} LIMIT 1").fetchone()]
    assert len(holding) >= 6  # ranges and defaults of the three tables
    for leaf in holding:  # a row trigger fires only on a row
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
            conn.execute(f"DELETE FROM {leaf}")
    for table in ("ledger_ref", "ledger_entry", "ledger_posting", "ledger_merkle_node"):
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
            conn.execute(f"UPDATE {table} SET chain_id = 'x'")


def test_verification_finds_a_reference_that_names_another_entry(conn: Conn) -> None:
    clock = Clock()
    write_varied_journal(conn, Journal(clock_us=clock), clock)
    conn.execute("SET session_replication_role = replica")  # an owner skipping the triggers
    conn.execute("UPDATE ledger_ref SET seq = 3 WHERE ref_key = 'spend'")
    with pytest.raises(VerificationFailed, match="ref_row"):
        verify_database(conn)
