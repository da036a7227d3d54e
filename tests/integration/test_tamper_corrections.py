"""An over-refund or an over-clawback written behind the API's back is named by verify.

The forger here has the database as a superuser and the log's signing key: it writes the
entry with the journal's own write path but with the bound on corrections switched off,
so every hash, chain link, posting row, balance, lot, Merkle node and the chain head are
exactly what an honest append would have written, and then signs a checkpoint over it.
Nothing but the rule itself can show the damage — and verify, offline and online, names
the entry and the rule.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from _journal_helpers import Clock, earn, expect_appended, open_accounts, transfer

from ledger import checkpoint_log, rules
from ledger.export import export_journal
from ledger.journal import Journal
from ledger.rejections import Rejection, RejectionCode
from ledger.requests import AccountSpec, EntryRequest, LotTake, PostingRequest
from ledger.signed_note import Signer
from ledger.verify import VerificationFailed, verify_export
from ledger.verify_db import verify_database

Conn = psycopg.Connection[Any]
RULE = "rule:correction_exceeds_original"
OWES = AccountSpec("member:3", "PTS", overdraft=True, lot_tracked=True)  # may carry debt


@pytest.fixture()
def conn(db_url: str) -> Iterator[Conn]:
    with psycopg.connect(db_url, autocommit=True) as c:
        yield c


def _refund(spent_seq: int, key: str, points: int, lot: str) -> EntryRequest:
    """Give ``points`` of spend ``spent_seq`` back from the shop to member:1's lot."""
    return EntryRequest(
        "refund",
        "test",
        key,
        corrects_seq=spent_seq,
        postings=(
            PostingRequest("sink", "PTS", -points),
            PostingRequest("member:1", "PTS", points, lots=(LotTake(lot, points),)),
        ),
    )


def _clawback(earn_seq: int, key: str, points: int) -> EntryRequest:
    """Take ``points`` of earn ``earn_seq`` back from member:3 (as debt where lots lack)."""
    return EntryRequest(
        "clawback",
        "test",
        key,
        corrects_seq=earn_seq,
        postings=(
            PostingRequest("member:3", "PTS", -points, allow_debt=True),
            PostingRequest("issuer:a", "PTS", points),
        ),
    )


def _story(conn: Conn, journal: Journal, clock: Clock) -> dict[str, int]:
    """member:1 earns 100 and spends 60, then 40; 40 of the 60 is refunded (the lot has
    room for all 100, so only the bound on corrections can stop a refund of more).
    member:3 earns 50, spends 30, and 20 of the earn is clawed back: all within bounds."""
    seqs: dict[str, int] = {}
    steps = [
        ("open", open_accounts()),
        ("open3", EntryRequest("open", "test", "o3", open_accounts=(OWES,))),
        ("earn1", earn("member:1", 100, "e1")),
        ("spend1", transfer("member:1", "sink", "PTS", 60, "s1")),
        ("spend1b", transfer("member:1", "sink", "PTS", 40, "s1b")),
        ("earn2", earn("member:3", 50, "e2")),
        ("spend2", transfer("member:3", "sink", "PTS", 30, "s2")),
    ]
    for name, request in steps:
        clock.now_us += 1_000_000
        [result] = journal.append(conn, [request])
        seqs[name] = expect_appended(result).seq
    lot = f"{seqs['earn1']}:1"
    for name, request in [
        ("refund", _refund(seqs["spend1"], "r1", 40, lot)),
        ("clawback", _clawback(seqs["earn2"], "c1", 20)),
    ]:
        [result] = journal.append(conn, [request])
        seqs[name] = expect_appended(result).seq
    return seqs


def test_the_writer_refuses_corrections_beyond_their_original(conn: Conn) -> None:
    journal = Journal(clock_us=Clock())
    seqs = _story(conn, journal, Clock())
    lot = f"{seqs['earn1']}:1"
    # 40 of 60 given back already: 21 more would be 61; 20 is exactly what is left.
    [over, within] = journal.append(
        conn,
        [_refund(seqs["spend1"], "r2", 21, lot), _refund(seqs["spend1"], "r3", 20, lot)],
    )
    assert isinstance(over, Rejection) and over.code is RejectionCode.CORRECTION_EXCEEDS_ORIGINAL
    expect_appended(within)
    [again] = journal.append(conn, [_refund(seqs["spend1"], "r4", 1, lot)])
    assert isinstance(again, Rejection) and again.code is RejectionCode.CORRECTION_EXCEEDS_ORIGINAL
    # Clawed back 20 of 50: 31 more is refused, 30 (into debt: member:3 holds 0) lands.
    [claw_over, claw_within] = journal.append(
        conn, [_clawback(seqs["earn2"], "c2", 31), _clawback(seqs["earn2"], "c3", 30)]
    )
    assert isinstance(claw_over, Rejection)
    assert claw_over.code is RejectionCode.CORRECTION_EXCEEDS_ORIGINAL
    expect_appended(claw_within)
    assert verify_database(conn).tree_size == seqs["clawback"] + 3  # r3, c3 and nothing else


@pytest.mark.parametrize("forgery", ["over_refund", "over_clawback"])
def test_a_forged_correction_with_every_hash_recomputed_is_named_by_verify(
    conn: Conn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, forgery: str
) -> None:
    clock = Clock()
    journal = Journal(clock_us=clock)
    seqs = _story(conn, journal, clock)
    verify_database(conn)  # honest so far
    forged = (
        _refund(seqs["spend1"], "forged", 21, f"{seqs['earn1']}:1")  # 61 back of 60 spent
        if forgery == "over_refund"
        else _clawback(seqs["earn2"], "forged", 31)  # 51 taken of 50 earned
    )
    with monkeypatch.context() as m:  # the forger's writer: the bound switched off
        m.setattr(rules, "_bounded_correction", lambda seq, fx, state: state.correction_bounds(seq))
        [result] = journal.append(conn, [forged])
    forged_seq = expect_appended(result).seq
    signer = Signer.from_seed("forger.example", hashlib.sha256(b"the log's own key").digest())
    checkpoint = checkpoint_log.sign_now(conn, signer, clock.now_us)
    assert checkpoint.tree_size == forged_seq + 1  # the forgery is under a valid signature

    with pytest.raises(VerificationFailed) as online:
        verify_database(conn)
    assert (online.value.seq, online.value.check) == (forged_seq, RULE)

    export = tmp_path / "journal.jsonl"
    export_journal(conn, export)
    with pytest.raises(VerificationFailed) as offline:
        verify_export(str(export))
    assert (offline.value.seq, offline.value.check) == (forged_seq, RULE)
    assert "corrections of entry" in str(offline.value)


def test_a_correction_of_an_entry_in_the_same_batch_is_bounded_by_it(conn: Conn) -> None:
    """The corrected entry is not in the database yet: its moves come from the batch."""
    journal = Journal(clock_us=Clock())
    seqs = _story(conn, journal, Clock())
    spend_seq = seqs["clawback"] + 1  # the next entry: a spend of 10, refunded at once
    lot = f"{seqs['earn1']}:1"
    spend = transfer("member:1", "sink", "PTS", 10, "s-same")
    [spent, within, over] = journal.append(
        conn,
        [spend, _refund(spend_seq, "r-same-1", 10, lot), _refund(spend_seq, "r-same-2", 1, lot)],
    )
    assert expect_appended(spent).seq == spend_seq
    expect_appended(within)
    assert isinstance(over, Rejection) and over.code is RejectionCode.CORRECTION_EXCEEDS_ORIGINAL
    verify_database(conn)
