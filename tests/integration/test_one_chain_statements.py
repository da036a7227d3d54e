"""Every statement an append sends touches one chain — what a distributed database needs
to route it to the one node holding that chain (docs/CITUS.md).

The statements are recorded as psycopg sends them (a cursor factory on the connection:
``Connection.execute`` goes through it too), then each is planned by the server with its
own parameters (EXPLAIN VERBOSE, which plans without running). In every plan, each ledger
table is reached only under a condition ``chain_id = <the chain>``, through partitions of
that chain alone, or, for an insert, with the chain as the rows' chain_id — and never a
partition of another chain, though a second chain with the same account names,
references and hold seqs sits in the same tables.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, ClassVar

import psycopg
import pytest

from ledger.journal import Journal
from ledger.requests import AccountSpec, EntryRequest, LotTake, PostingRequest
from tests.integration._journal_helpers import (
    T0_US,
    Clock,
    earn,
    expect_appended,
    hold,
    open_accounts,
    transfer,
)

Conn = psycopg.Connection[Any]
CHAIN = "main"
OTHER = "other"
DAY_US = 86_400_000_000
CONDITIONS = ("Index Cond", "Filter", "Recheck Cond", "Join Filter", "Hash Cond", "Merge Cond")


class Recording(psycopg.Cursor[Any]):
    sent: ClassVar[list[tuple[str, Any]]] = []

    def execute(self, query: Any, params: Any = None, **kw: Any) -> Any:  # type: ignore[override]
        Recording.sent.append((str(query), params))
        return super().execute(query, params, **kw)


@pytest.fixture()
def conn(db_url: str) -> Iterator[Conn]:
    with psycopg.connect(db_url, autocommit=True) as c:
        yield c


def _journal_of(conn: Conn, chain_id: str) -> tuple[Journal, Clock]:
    clock = Clock()
    journal = Journal(clock_us=clock, chain_id=chain_id)
    steps = [
        open_accounts(),
        earn("member:1", 100, "earn-a", "a", T0_US + 30 * DAY_US),
        earn("member:2", 40, "earn-b", "b", None),
        hold("member:2", 30, T0_US + DAY_US, "hold"),
        transfer("member:1", "sink", "PTS", 70, "spend"),
    ]
    for request in steps:
        clock.now_us += 1
        expect_appended(journal.append(conn, [request])[0])
    return journal, clock


def _batch() -> list[EntryRequest]:
    """A batch that reads and writes every table an append can: a replayed reference, new
    accounts, lots taken by name, a hold captured, a correction (its two extra reads)."""
    return [
        earn("member:1", 100, "earn-a", "a", T0_US + 30 * DAY_US),  # replayed
        EntryRequest("open", "test", "open-more", open_accounts=(AccountSpec("member:3", "PTS"),)),
        earn("member:2", 7, "earn-c", "a", None),
        EntryRequest(
            "capture",
            "test",
            "capture",
            capture_hold_seq=3,
            capture_amount=20,
            postings=(PostingRequest("member:2", "PTS", -20), PostingRequest("sink", "PTS", 20)),
        ),
        EntryRequest(
            "reversal",
            "test",
            "reversal",
            corrects_seq=4,
            postings=(
                PostingRequest("sink", "PTS", -12),
                PostingRequest("member:1", "PTS", 12, lots=(LotTake("1:1", 12),)),
            ),
        ),
        transfer("member:1", "sink", "PTS", 5, "spend-2"),
    ]


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", ()):
        yield from _nodes(child)


def _chain_columns(conn: Conn) -> dict[str, int]:
    """Each ledger table's chain_id: its place among the table's columns."""
    rows = conn.execute(
        "SELECT c.relname, (SELECT count(*) FROM pg_attribute b WHERE b.attrelid = c.oid"
        "  AND b.attnum > 0 AND NOT b.attisdropped AND b.attnum < a.attnum)"
        " FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'chain_id'"
        " WHERE c.relname ~ '^ledger_' AND c.relkind IN ('r', 'p')"
    ).fetchall()
    return {name: int(at) for name, at in rows}


def _problems(plan: dict[str, Any], chain: str, chain_column: dict[str, int]) -> list[str]:
    found = []
    const = f"'{chain}'::text"
    for node in _nodes(plan):
        relation = node.get("Relation Name", "")
        if not relation.startswith("ledger_"):
            continue
        if "__" in relation:  # a partition: of this chain, by its name
            if not relation.split("__", 1)[1].startswith(f"{chain}_"):
                found.append(f"{node['Node Type']} on {relation}")
            continue
        if node["Node Type"] == "ModifyTable" and node.get("Operation") == "Insert":
            # The rows' columns come in the table's order: the chain's place holds it.
            source = node["Plans"][0].get("Output", [])
            at = chain_column[relation]
            if len(source) <= at or source[at] != const:
                found.append(f"insert into {relation}: chain_id from {source[at : at + 1]}")
            continue
        if node["Node Type"] == "ModifyTable":
            continue  # an update: its scans below are checked
        conditions = " ".join(str(node.get(c, "")) for c in CONDITIONS)
        if f"chain_id = {const}" not in conditions:
            found.append(f"{node['Node Type']} on {relation}: {conditions or 'no condition'}")
    return found


def test_every_statement_of_an_append_batch_touches_one_chain(conn: Conn) -> None:
    _journal_of(conn, OTHER)  # the same names, references and seqs, in another chain
    journal, clock = _journal_of(conn, CHAIN)
    with psycopg.connect(conn.info.dsn, autocommit=True, cursor_factory=Recording) as recorded:
        Recording.sent.clear()
        clock.now_us += 1
        results = journal.append(recorded, _batch())
        sent = list(Recording.sent)
    assert results[0].replayed and all(not r.replayed for r in results[1:])  # type: ignore[union-attr]
    planned = 0
    chain_column = _chain_columns(conn)
    for query, params in sent:
        words = query.split()
        if words[0] in ("BEGIN", "COMMIT", "ROLLBACK") or "pg_advisory_xact_lock" in query:
            assert "ledger_" not in query
            continue
        with conn.transaction(force_rollback=True):
            [[plan]] = conn.execute("EXPLAIN (VERBOSE, FORMAT JSON) " + query, params).fetchone()
        problems = _problems(plan["Plan"], CHAIN, chain_column)
        assert not problems, (query, problems, json.dumps(plan)[:3000])
        assert f"'{OTHER}'" not in json.dumps(plan)
        planned += 1
    # The head, references, holds, accounts, lots, the two correction reads, the write.
    assert planned == 8, [q[:60] for q, _ in sent]
