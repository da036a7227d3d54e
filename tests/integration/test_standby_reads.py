"""The journal's long reads from a streaming standby (coalition/standby.py), against a real
primary + hot standby pair (tests/_replica_pair.py):

- a settlement run, its statements and an online verification read the standby once it
  holds the prefix they need — the standby's own statistics show the journal read there,
  and the answers are the primary's to the byte;
- a standby that lags behind what a read needs (replay paused) is waited for a bounded
  time, then the primary answers: a verification never verifies less than the primary
  holds, a run never misses an entry of its cut;
- a stopped standby is not missed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest

from coalition import settle, standby
from coalition.context import Coalition
from coalition.earn import earn_points
from coalition.earning import EarningRules
from coalition.members import enroll_member
from coalition.migrate import upgrade_to_head
from coalition.online_verification import VerifyPolicy, verify_online
from coalition.partners import onboard_partner, publish_earning_rules, publish_terms
from coalition.redeem import redeem_points
from ledger import reads
from ledger.signed_note import Signer
from ledger.timefmt import parse_time_us
from settlement.terms import PartnerTerms
from tests._replica_pair import ReplicaPair, start_pair
from tests.integration._world import SteppingClock, ok

T0 = 1_800_000_000_000_000  # 2027-01-15T08:00:00Z
FEB_MOSCOW_US = parse_time_us("2027-01-31T21:00:00.000000Z")  # 2027-02-01 00:00 Moscow
Conn = psycopg.Connection[Any]


@pytest.fixture()
def pair(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ReplicaPair]:
    started = start_pair(tmp_path / "pg")
    try:
        upgrade_to_head(started.primary_url)
        monkeypatch.setenv("DATABASE_REPLICA_URL", started.standby_url)
        monkeypatch.setattr(standby, "STANDBY_WAIT_SECONDS_MAX", 0.5)
        yield started
    finally:
        started.stop()


@pytest.fixture()
def co() -> Coalition:
    return Coalition(clock_us=SteppingClock(T0))


@pytest.fixture()
def conn(pair: ReplicaPair, co: Coalition) -> Iterator[Conn]:
    terms = PartnerTerms(Decimal(50), Decimal(95), 100, Decimal("0.5"), "monthly", "multilateral")
    rules = EarningRules("EUR", 1, 100)
    with psycopg.connect(pair.primary_url, autocommit=True) as c:
        for partner in ("grocer", "airline"):
            ok(onboard_partner(co, c, partner, partner.title(), "EUR"))
            ok(publish_terms(co, c, partner, terms, 0, f"terms-{partner}"))
            ok(publish_earning_rules(co, c, partner, rules, 0, f"rules-{partner}"))
        ok(enroll_member(co, c, "M1"))
        for n in range(3):
            ok(
                earn_points(
                    co,
                    c,
                    partner_id="grocer",
                    ref_key=f"g{n}",
                    purchase_minor=50_000,
                    currency="EUR",
                    member_id="M1",
                )
            )
        ok(redeem_points(co, c, partner_id="airline", ref_key="a1", points=300, member_id="M1"))
        yield c


@pytest.fixture()
def signer() -> Signer:
    return Signer.from_seed("ledger.test.example", bytes(range(32)))


def _entry_reads_on(url: str) -> int:
    """Rows of ``ledger_entry`` (its partitions: the statistics are theirs) this server's
    own statistics say were read on it."""
    with psycopg.connect(url, autocommit=True) as c:
        row = c.execute(
            "SELECT sum(coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0))"
            " FROM pg_stat_user_tables"
            " WHERE relname = 'ledger_entry' OR relname LIKE 'ledger\\_entry\\_\\_%'"
        ).fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def _grew(url: str, before: int, by_at_least: int) -> bool:
    """Whether the standby's count grew; a closed backend's statistics reach the shared
    counters a moment after the client has gone, so this polls briefly."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if _entry_reads_on(url) >= before + by_at_least:
            return True
        time.sleep(0.1)
    return False


def _compute(co: Coalition, conn: Conn, signer: Signer) -> Any:
    co.clock_us.now_us = max(co.clock_us.now_us, FEB_MOSCOW_US)  # type: ignore[attr-defined]
    return ok(settle.compute(co, conn, signer, period="2027-01", computed_by="alice"))


def test_a_run_and_its_statements_read_the_standby_and_match_the_primary(
    pair: ReplicaPair,
    co: Coalition,
    conn: Conn,
    signer: Signer,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(standby, "STANDBY_WAIT_SECONDS_MAX", 30.0)  # the cut is new
    before = _entry_reads_on(pair.standby_url)
    with caplog.at_level(logging.INFO, logger="coalition.standby"):
        record = _compute(co, conn, signer)
    assert "settlement 2027-01: read on the standby" in caplog.text
    tree_size = standby.chain_tree_size(conn)
    assert _grew(pair.standby_url, before, tree_size - 1)
    # The same run again from the primary alone: the bytes the standby gave.
    monkeypatch.delenv("DATABASE_REPLICA_URL")
    assert settle.rebuild(conn, record).to_bytes() == record.run_bytes
    monkeypatch.setenv("DATABASE_REPLICA_URL", pair.standby_url)
    run = settle.rebuild(conn, record)  # on the standby (its bytes are checked there too)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="coalition.standby"):
        facts_standby = settle.statement_facts(conn, run)
    assert "statements of 2027-01: read on the standby" in caplog.text
    monkeypatch.delenv("DATABASE_REPLICA_URL")
    assert settle.statement_facts(conn, run) == facts_standby


def test_a_lagging_standby_is_waited_for_then_the_primary_reads(
    pair: ReplicaPair,
    co: Coalition,
    conn: Conn,
    signer: Signer,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pair.wait_replayed()
    pair.pause_replay()  # the standby stops before the entries and cut that follow
    try:
        ok(redeem_points(co, conn, partner_id="airline", ref_key="a2", points=200, member_id="M1"))
        started = time.monotonic()
        with caplog.at_level(logging.INFO, logger="coalition.standby"):
            record = _compute(co, conn, signer)
        assert time.monotonic() - started >= 0.5  # it waited, as long as it was told
        assert "has not replayed" in caplog.text
        late = reads.entry_by_ref(conn, "partner:airline", "a2")
        assert late is not None and record.end_seq > late.seq  # in the run's cut
        monkeypatch.delenv("DATABASE_REPLICA_URL")  # the primary alone: the same bytes
        assert settle.rebuild(conn, record).to_bytes() == record.run_bytes
        # A verification reaches what the primary holds, never the standby's shorter tree.
        monkeypatch.setenv("DATABASE_REPLICA_URL", pair.standby_url)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="coalition.standby"):
            last = verify_online(conn, VerifyPolicy(), co.clock_us(), by="test")
        assert last is not None and last.ok, last
        assert last.tree_size == standby.chain_tree_size(conn)
        assert "full verification: the standby has not replayed" in caplog.text
    finally:
        pair.resume_replay()


def test_verification_reads_the_standby_when_it_holds_the_tree(
    pair: ReplicaPair, co: Coalition, conn: Conn, caplog: pytest.LogCaptureFixture
) -> None:
    pair.wait_replayed()
    before = _entry_reads_on(pair.standby_url)
    with caplog.at_level(logging.INFO, logger="coalition.standby"):
        full = verify_online(conn, VerifyPolicy(), co.clock_us(), by="test")
        ok(
            earn_points(
                co,
                conn,
                partner_id="grocer",
                ref_key="g9",
                purchase_minor=10_000,
                currency="EUR",
                member_id="M1",
            )
        )
        pair.wait_replayed()
        incremental = verify_online(conn, VerifyPolicy(), co.clock_us(), by="test")
    assert full is not None and full.ok and full.kind == "full", full
    assert incremental is not None and incremental.ok and incremental.kind == "incremental"
    assert incremental.tree_size == standby.chain_tree_size(conn) == full.tree_size + 1
    assert "full verification: read on the standby" in caplog.text
    assert "incremental verification: read on the standby" in caplog.text
    assert _grew(pair.standby_url, before, full.tree_size)


def test_a_stopped_standby_is_not_missed(
    pair: ReplicaPair,
    co: Coalition,
    conn: Conn,
    signer: Signer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    pair.stop_standby()
    with caplog.at_level(logging.INFO, logger="coalition.standby"):
        record = _compute(co, conn, signer)
        last = verify_online(conn, VerifyPolicy(), co.clock_us(), by="test")
    assert settle.rebuild(conn, record).to_bytes() == record.run_bytes
    assert last is not None and last.ok and last.tree_size == standby.chain_tree_size(conn)
    assert "the standby cannot answer" in caplog.text
