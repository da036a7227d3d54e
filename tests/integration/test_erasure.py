"""Erasure of a member's personal data (docs/PRIVACY.md) against PostgreSQL: cards named
by keyed pseudonyms only, then erased; the journal still verifies (export and online),
settlement recomputes from the export to the same bytes, and no card number is left in
the export, a receipt or any table."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest

from coalition import settle
from coalition.context import Coalition
from coalition.earn import earn_points
from coalition.earning import EarningRules
from coalition.members import enroll_member, erase_member, link_card, set_member_status
from coalition.outcomes import Recorded, RefusalCode
from coalition.partners import onboard_partner, publish_earning_rules, publish_terms
from coalition.redeem import authorise, redeem_points
from ledger import checkpoint_log, proofs, reads
from ledger.export import export_journal
from ledger.receipt import format_receipt
from ledger.signed_note import Signer
from ledger.timefmt import parse_time_us
from ledger.verify_db import verify_database
from settlement.terms import PartnerTerms
from tests.integration._world import SteppingClock, ok, refused

ROOT = Path(__file__).resolve().parents[2]
T0 = 1_800_000_000_000_000  # 2027-01-15T08:00:00Z
FEB_MOSCOW_US = parse_time_us("2027-01-31T21:00:00.000000Z")
GROCER_CARD = "4000-1234-5678-9010"
AIRLINE_CARD = "AF-77719-ROSSI"


@pytest.fixture()
def signer() -> Signer:
    return Signer.from_seed("ledger.test.example", bytes(range(32)))


@pytest.fixture()
def co() -> Coalition:
    return Coalition(clock_us=SteppingClock(T0))


@pytest.fixture()
def conn(db_url: str, co: Coalition) -> Iterator[psycopg.Connection[Any]]:
    terms = PartnerTerms(Decimal(50), Decimal(95), 100, Decimal("0.5"), "monthly", "multilateral")
    rules = EarningRules("EUR", 1, 100)
    with psycopg.connect(db_url, autocommit=True) as c:
        for partner in ("grocer", "airline"):
            ok(onboard_partner(co, c, partner, partner.title(), "EUR"))
            ok(publish_terms(co, c, partner, terms, 0, f"terms-{partner}"))
            ok(publish_earning_rules(co, c, partner, rules, 0, f"rules-{partner}"))
            ok(
                settle.set_bank_account(
                    co,
                    c,
                    partner,
                    iban="DE89370400440532013000",
                    bic="COBADEFFXXX",
                    name=partner.title(),
                    ref_key=f"bank-{partner}",
                )
            )
        for member in ("M1", "M2"):
            ok(enroll_member(co, c, member))
        yield c


def _size(conn: Any) -> int:
    return reads.head(conn).tree_size


def _canonical(conn: Any, seq: int) -> bytes:
    stored = reads.entry(conn, seq)
    assert stored is not None
    return stored.canonical


def _secret(conn: Any, member: str) -> bytes | None:
    row = conn.execute(
        "SELECT secret FROM coalition_member_secret WHERE member_id = %s", (member,)
    ).fetchone()
    return None if row is None else bytes(row[0])


def _entries(conn: Any, kind: str) -> list[dict[str, Any]]:
    rows = conn.execute("SELECT canonical FROM ledger_entry ORDER BY seq").fetchall()
    return [e for e in (json.loads(bytes(r[0])) for r in rows) if e["kind"] == kind]


def _till(co: Coalition, conn: Any, card: str, key: str) -> Any:
    return earn_points(
        co,
        conn,
        partner_id="grocer",
        ref_key=key,
        purchase_minor=1_000,
        currency="EUR",
        card_number=card,
    )


def _copy_common_columns(source: Any, target: Any) -> None:
    """Every row of ``source`` into the same tables of ``target`` (an older schema), with
    the columns both have; foreign keys and triggers skipped (the copy is whole)."""
    columns = (
        "SELECT table_name, array_agg(column_name::text ORDER BY ordinal_position)"
        " FROM information_schema.columns WHERE table_schema = 'public'"
        " AND table_name <> 'alembic_version' GROUP BY 1"
    )
    have = dict(source.execute(columns).fetchall())
    target.execute("SET session_replication_role = replica")
    for table, wanted in target.execute(columns).fetchall():
        common = [c for c in wanted if c in have.get(table, ())]
        if not common:
            continue
        listed = ", ".join(common)
        target.execute(f"DELETE FROM {table}")  # rows a migration seeded, copied again
        with (
            source.cursor().copy(f"COPY (SELECT {listed} FROM {table}) TO STDOUT") as out,
            target.cursor().copy(f"COPY {table} ({listed}) FROM STDIN") as into,
        ):
            for data in out:
                into.write(data)
    target.execute("SET session_replication_role = origin")


def _all_table_text(conn: Any) -> str:
    """Every row of every table of the database, as text (bytea as hex)."""
    tables = [
        r[0]
        for r in conn.execute(
            "SELECT quote_ident(schemaname) || '.' || quote_ident(tablename) FROM pg_tables t"
            " WHERE schemaname NOT IN ('pg_catalog', 'information_schema') AND NOT EXISTS ("
            "  SELECT 1 FROM pg_inherits i WHERE i.inhrelid ="
            "  (quote_ident(t.schemaname) || '.' || quote_ident(t.tablename))::regclass)"
            # a partition's rows are its parent's: read once, through the parent
        )
    ]
    assert "public.ledger_entry" in tables and "public.coalition_card_index" in tables
    return "\n".join(
        str(row[0]) for table in tables for row in conn.execute(f"SELECT t::text FROM {table} t")
    )


def _nowhere(card: str, text: str, raw: bytes) -> None:
    for form in (card, card.encode().hex()):
        assert form not in text
        assert form.encode() not in raw


def test_a_card_is_in_the_journal_only_as_a_pseudonym_under_the_members_secret(
    co: Coalition, conn: Any
) -> None:
    linked = ok(link_card(co, conn, "M1", "grocer", GROCER_CARD))
    [entry] = _entries(conn, "card_linked")
    secret = _secret(conn, "M1")
    assert secret is not None and len(secret) == 32
    expected = hmac.new(secret, f"card\ngrocer\n{GROCER_CARD}".encode(), hashlib.sha256).hexdigest()
    assert entry["seq"] == linked.seq
    assert entry["meta"] == {"member": "M1", "partner": "grocer", "card_pseudonym": expected}
    assert entry["ref"] == {"scope": "partner:grocer", "key": f"card:{expected}"}
    canonical = _canonical(conn, linked.seq)
    assert GROCER_CARD.encode() not in canonical and secret.hex().encode() not in canonical
    # Idempotent: the same link again is the same entry; another member can't take it.
    assert ok(link_card(co, conn, "M1", "grocer", GROCER_CARD)) == Recorded(linked.seq, True)
    before = _size(conn)
    refused(link_card(co, conn, "M2", "grocer", GROCER_CARD), RefusalCode.CARD_TAKEN)
    assert _size(conn) == before and _secret(conn, "M2") is None  # nothing written
    # The till finds the member by the card; another partner's till does not.
    assert ok(_till(co, conn, GROCER_CARD, "till-1")).points == 10
    refused(
        redeem_points(
            co, conn, partner_id="airline", ref_key="a0", points=1, card_number=GROCER_CARD
        ),
        RefusalCode.UNKNOWN_MEMBER,
    )


def test_erasure_keeps_the_journal_verifiable_and_settlement_stable_and_forgets_the_cards(
    co: Coalition, conn: Any, signer: Signer, tmp_path: Path
) -> None:
    ok(link_card(co, conn, "M1", "grocer", GROCER_CARD))
    ok(link_card(co, conn, "M1", "airline", AIRLINE_CARD))
    ok(_till(co, conn, GROCER_CARD, "g1"))  # 10 points
    ok(
        earn_points(
            co,
            conn,
            partner_id="grocer",
            ref_key="g2",
            purchase_minor=50_000,
            currency="EUR",
            card_number=GROCER_CARD,
        )
    )  # 500 points issued by grocer
    ok(
        redeem_points(
            co, conn, partner_id="airline", ref_key="a1", points=300, card_number=AIRLINE_CARD
        )
    )
    co.clock_us.now_us = max(co.clock_us.now_us, FEB_MOSCOW_US)  # type: ignore[attr-defined]
    run = ok(settle.compute(co, conn, signer, period="2027-01", computed_by="alice"))
    linked_seq = _entries(conn, "card_linked")[0]["seq"]

    # Bad input is refused with a type and writes nothing.
    before = _size(conn)
    refused(erase_member(co, conn, "NOBODY", "erase-x"), RefusalCode.UNKNOWN_MEMBER)
    refused(erase_member(co, conn, "M 1", "erase-x"), RefusalCode.INVALID_REQUEST)
    refused(erase_member(co, conn, "M1", ""), RefusalCode.INVALID_REQUEST)
    refused(erase_member(co, conn, "M1", "x" * 129), RefusalCode.INVALID_REQUEST)
    assert _size(conn) == before and _secret(conn, "M1") is not None

    erased = ok(erase_member(co, conn, "M1", "gdpr-2027-0042"))
    assert erased.replayed is False
    [fact] = _entries(conn, "member_erased")
    assert fact["meta"] == {"member": "M1"} and fact["postings"] == []
    assert _secret(conn, "M1") is None
    assert conn.execute(
        "SELECT count(*) FROM coalition_card_index WHERE member_id = 'M1'"
    ).fetchone() == (0,)
    # A retry is the same answer; another erasure, a status change or a link is refused.
    assert ok(erase_member(co, conn, "M1", "gdpr-2027-0042")) == Recorded(erased.seq, True)
    size = _size(conn)
    refused(erase_member(co, conn, "M1", "gdpr-again"), RefusalCode.MEMBER_ERASED)
    refused(set_member_status(co, conn, "M1", "active", "st-1"), RefusalCode.MEMBER_ERASED)
    refused(link_card(co, conn, "M1", "grocer", "NEW-CARD"), RefusalCode.MEMBER_ERASED)
    # Tills: the card names nobody now; the member id names an erased member.
    refused(_till(co, conn, GROCER_CARD, "g3"), RefusalCode.UNKNOWN_MEMBER)
    refused(
        redeem_points(
            co, conn, partner_id="airline", ref_key="a2", points=1, card_number=AIRLINE_CARD
        ),
        RefusalCode.UNKNOWN_MEMBER,
    )
    refused(
        authorise(co, conn, partner_id="airline", ref_key="h1", points=1, member_id="M1"),
        RefusalCode.MEMBER_ERASED,
    )
    assert _size(conn) == size

    # The journal verifies, online and exported; the run recomputes to its bytes.
    verify_database(conn)
    export = tmp_path / "journal.jsonl"
    export_journal(conn, export)
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    done = _cli(env, "verify", "--export", str(export))
    assert done.returncode == 0 and done.stdout.startswith("OK "), done.stderr
    out = tmp_path / "run.json"
    done = _cli(
        env,
        "settle",
        "from-export",
        "--export",
        str(export),
        "--run",
        run.run_id,
        "--period",
        "2027-01",
        "--start-seq",
        str(run.start_seq),
        "--end-seq",
        str(run.end_seq),
        "--out",
        str(out),
    )
    assert done.returncode == 0, done.stderr
    assert out.read_bytes() == run.run_bytes

    # Nothing left names the cards: not the export, a receipt, or any table.
    covering = checkpoint_log.sign_now(conn, signer, co.clock_us())
    receipt = format_receipt(
        linked_seq,
        proofs.inclusion_proof(conn, linked_seq, covering.tree_size),
        covering.signed_note,
        _canonical(conn, linked_seq),
    )
    text, raw = _all_table_text(conn), export.read_bytes() + receipt
    for card in (GROCER_CARD, AIRLINE_CARD):
        _nowhere(card, text, raw)

    # The card is free again: another member links it under a pseudonym of their own.
    ok(link_card(co, conn, "M2", "grocer", GROCER_CARD))
    old, new = (e["meta"]["card_pseudonym"] for e in _entries(conn, "card_linked")[::2])
    assert old != new
    assert ok(_till(co, conn, GROCER_CARD, "g4")).points == 10


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "coalition.cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=120,
    )


def test_the_cli_erases_and_says_what_it_refused(co: Coalition, conn: Any, db_url: str) -> None:
    ok(link_card(co, conn, "M2", "grocer", GROCER_CARD))
    env = {**os.environ, "DATABASE_URL": db_url}
    done = _cli(env, "member", "erase", "--member", "NOBODY", "--reference", "cli-1")
    assert done.returncode == 1 and "unknown_member" in done.stderr, done
    done = _cli(env, "member", "erase", "--member", "M2", "--reference", "cli-1")
    assert done.returncode == 0 and "member M2 erased" in done.stdout, done
    done = _cli(env, "member", "erase", "--member", "M2", "--reference", "cli-1")
    assert done.returncode == 0 and "already" in done.stdout, done
    done = _cli(env, "member", "erase", "--member", "M2")
    assert done.returncode == 2, done  # usage: no reference
    assert _secret(conn, "M2") is None
    refused(_till(co, conn, GROCER_CARD, "g-cli"), RefusalCode.UNKNOWN_MEMBER)


def test_an_old_journal_keeps_its_clear_cards_but_the_tables_forget_them(server_url: str) -> None:
    """Migration 0009 on a database whose journal has an old-form ``card_linked``
    (meta.card in clear): the till still finds the member (the index was made from the
    old read model, which is dropped); erasure empties the tables; the old entry keeps
    the number, as PRIVACY.md §3 says, and the journal verifies."""
    from alembic import command
    from sqlalchemy import create_engine

    from coalition.database import sqlalchemy_url
    from coalition.members import resolve_card
    from coalition.migrate import _config, upgrade_to_head
    from ledger.requests import EntryRequest

    names = [f"t_old_{os.urandom(6).hex()}", f"t_new_{os.urandom(6).hex()}"]
    base, sep, query = server_url.partition("?")
    url, written_url = (f"{base.rsplit('/', 1)[0]}/{n}{sep}{query}" for n in names)
    with psycopg.connect(server_url, autocommit=True) as admin:
        for name in names:
            admin.execute(f'CREATE DATABASE "{name}"')
    try:
        engine = create_engine(sqlalchemy_url(url))
        with engine.begin() as sa_conn:
            config = _config()
            config.attributes["connection"] = sa_conn
            command.upgrade(config, "0008")
        engine.dispose()
        # Today's code writes today's schema: the entries are written in a database at
        # head, then their rows copied into the one at 0008, column by common column.
        upgrade_to_head(written_url)
        co = Coalition(clock_us=SteppingClock(T0))
        with psycopg.connect(written_url, autocommit=True) as conn:
            ok(onboard_partner(co, conn, "grocer", "Grocer", "EUR"))
            ok(publish_earning_rules(co, conn, "grocer", EarningRules("EUR", 1, 100), 0, "r"))
            ok(enroll_member(co, conn, "M1"))
            old = EntryRequest(  # as the code before 0009 wrote it, and its read model
                "card_linked",
                "partner:grocer",
                f"card:{GROCER_CARD}",
                meta={"member": "M1", "partner": "grocer", "card": GROCER_CARD},
            )
            seq = ok(co.append(conn, old)).seq
        with (
            psycopg.connect(written_url, autocommit=True) as written,
            psycopg.connect(url, autocommit=True) as conn,
        ):
            _copy_common_columns(written, conn)
            conn.execute(
                "INSERT INTO coalition_card VALUES ('grocer', %s, 'M1', %s)", (GROCER_CARD, seq)
            )
        upgrade_to_head(url)
        with psycopg.connect(url, autocommit=True) as conn:
            assert resolve_card(conn, "grocer", GROCER_CARD) == "M1"
            assert ok(_till(co, conn, GROCER_CARD, "after-0009")).points == 10
            ok(erase_member(co, conn, "M1", "erase-old"))
            refused(_till(co, conn, GROCER_CARD, "after-erase"), RefusalCode.UNKNOWN_MEMBER)
            verify_database(conn)
            journal = b"".join(
                bytes(r[0]) for r in conn.execute("SELECT canonical FROM ledger_entry")
            )
            assert GROCER_CARD.encode() in journal  # the chain cannot forget (PRIVACY.md §3)
            # Only the old entry itself (its bytes and its reference column) keeps it, and
            # the journal's index of references (ledger_ref, append-only since 0021).
            rows = _all_table_text(conn).split("\n")
            keeping = [r for r in rows if GROCER_CARD in r or GROCER_CARD.encode().hex() in r]
            assert len(keeping) == 2, keeping
            assert all(f"card:{GROCER_CARD}" in row for row in keeping), keeping
            [(ref_seq,)] = conn.execute(
                "SELECT seq FROM ledger_ref WHERE ref_key = %s", (f"card:{GROCER_CARD}",)
            ).fetchall()
            assert ref_seq == seq
            assert conn.execute(
                "SELECT count(*) FROM pg_tables WHERE tablename = 'coalition_card'"
            ).fetchone() == (0,)
    finally:
        with psycopg.connect(server_url, autocommit=True) as admin:
            for name in names:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
