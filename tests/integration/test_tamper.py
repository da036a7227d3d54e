"""Tampering behind the ledger's back is caught, at the right entry, by the right check.

A superuser can bypass the append-only triggers; verification must still name the first
row that no longer agrees with a replay of the chain. An export is checked the same way
offline, and a journal cut short and resealed is caught against a head recorded before.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from _journal_helpers import (
    Clock,
    advance_head,
    earn,
    entry_json,
    expect_appended,
    fact_entry,
    insert_entry,
    rewrite_entry,
    scratch_database,
    stored_leaf,
    tampering,
    truncate_consistently,
    write_varied_journal,
)

from ledger.canonical import canonical_bytes
from ledger.export import export_journal
from ledger.journal import Journal, leaf_hash_of
from ledger.verify import (
    VerificationFailed,
    check_against_known,
    verify_export,
    verify_lines,
)
from ledger.verify_db import verify_database

PROJECT_ROOT = Path(__file__).resolve().parents[2]
ENTRY_COUNT = 13  # write_varied_journal
LAST = ENTRY_COUNT - 1
PAY = 9  # wallet:EUR -1250, cash:EUR +1250
TERMS = 6  # the entry without postings

Conn = psycopg.Connection[Any]


@pytest.fixture()
def conn(db_url: str) -> Iterator[Conn]:
    with psycopg.connect(db_url, autocommit=True) as c:
        yield c


@pytest.fixture()
def seqs(conn: Conn) -> dict[str, int]:
    return write_varied_journal(conn, Journal(clock_us=Clock()), Clock())


def failure_of(conn: Conn) -> VerificationFailed:
    with pytest.raises(VerificationFailed) as caught:
        verify_database(conn)
    return caught.value


def test_untampered_database_verifies(conn: Conn, seqs: dict[str, int]) -> None:
    verified = verify_database(conn)
    assert verified.tree_size == ENTRY_COUNT
    assert verified.head_leaf_hash == stored_leaf(conn, LAST)


# Each tamper gets the superuser connection and returns (check, seq, expected, actual);
# expected/actual are None where the value is not worth pinning down.
Tamper = Callable[[Conn], tuple[str, int | None, Any, Any]]


def _posting_amount(t: Conn) -> tuple[str, int | None, Any, Any]:
    t.execute(
        "UPDATE ledger_posting SET amount = -1251 WHERE seq = %s AND posting_index = 0", (PAY,)
    )
    return (
        "posting_row",
        PAY,
        (PAY, 0, "wallet:EUR", "EUR", -1250, 3750),
        (PAY, 0, "wallet:EUR", "EUR", -1251, 3750),
    )


def _posting_deleted(t: Conn) -> tuple[str, int | None, Any, Any]:
    t.execute("DELETE FROM ledger_posting WHERE seq = %s AND posting_index = 1", (PAY,))
    return "posting_row", PAY, (PAY, 1, "cash:EUR", "EUR", 1250, -3750), None


def _posting_added_after_last(t: Conn) -> tuple[str, int | None, Any, Any]:
    t.execute("INSERT INTO ledger_posting VALUES ('main', %s, 2, 'sink', 'PTS', 1, 1)", (LAST,))
    return "posting_row", LAST, "no such posting", (LAST, 2, "sink", "PTS", 1, 1)


def _canonical_amount(rehash: bool, both: bool) -> Tamper:
    def tamper(t: Conn) -> tuple[str, int | None, Any, Any]:
        entry = entry_json(t, PAY)
        entry["postings"][0]["amount"] = -1251
        if both:
            entry["postings"][1]["amount"] = 1251
        new_leaf = rewrite_entry(t, PAY, entry, rehash=rehash)
        if not rehash:
            return "leaf_hash", PAY, new_leaf.hex(), stored_leaf(t, PAY).hex()
        if not both:
            return "rule:postings_must_balance", PAY, "accepted", None
        # The rules accept the altered entry; the stored posting rows still disagree.
        return (
            "posting_row",
            PAY,
            (PAY, 0, "wallet:EUR", "EUR", -1251, 3749),
            (PAY, 0, "wallet:EUR", "EUR", -1250, 3750),
        )

    return tamper


def _canonical_meta(seq: int, rehash: bool) -> Tamper:
    def tamper(t: Conn) -> tuple[str, int | None, Any, Any]:
        old_leaf = stored_leaf(t, seq)
        entry = entry_json(t, seq)
        entry["meta"]["rate"] = "0.0500"
        new_leaf = rewrite_entry(t, seq, entry, rehash=rehash)
        if not rehash:
            return "leaf_hash", seq, new_leaf.hex(), old_leaf.hex()
        if seq == LAST:  # no next entry links to it; the chain head still does
            return "head_leaf_hash", seq, new_leaf.hex(), old_leaf.hex()
        return "prev_link", seq + 1, new_leaf.hex(), old_leaf.hex()

    return tamper


def _delete_entry(with_postings: bool) -> Tamper:
    seq = 5 if with_postings else TERMS

    def tamper(t: Conn) -> tuple[str, int | None, Any, Any]:
        t.execute("DELETE FROM ledger_entry WHERE seq = %s", (seq,))
        if with_postings:
            t.execute("DELETE FROM ledger_posting WHERE seq = %s", (seq,))
        return "entry_present", seq, f"entry {seq}", f"next stored entry is {seq + 1}"

    return tamper


def _swap_entries(t: Conn) -> tuple[str, int | None, Any, Any]:
    t.execute(
        "UPDATE ledger_entry e SET canonical = o.canonical, leaf_hash = o.leaf_hash"
        " FROM ledger_entry o WHERE (e.seq, o.seq) IN ((3, 4), (4, 3))"
    )
    return "seq", 3, 3, 4


def _forge_in_middle(t: Conn) -> tuple[str, int | None, Any, Any]:
    # Make room at TERMS by moving every later entry (and its postings) up by one.
    for table in ("ledger_entry", "ledger_posting"):
        t.execute(f"UPDATE {table} SET seq = seq + 1000 WHERE seq >= %s", (TERMS,))
        t.execute(f"UPDATE {table} SET seq = seq - 999 WHERE seq >= 1000")
    previous = entry_json(t, TERMS - 1)
    forged = fact_entry(TERMS, stored_leaf(t, TERMS - 1), previous["time"], "forged")
    insert_entry(t, forged, "forged")
    # The forgery itself passes every rule; the entry it displaced still says TERMS.
    return "seq", TERMS + 1, TERMS + 1, TERMS


def _forge_at_end(update_head: bool) -> Tamper:
    def tamper(t: Conn) -> tuple[str, int | None, Any, Any]:
        last = entry_json(t, LAST)
        forged = fact_entry(ENTRY_COUNT, stored_leaf(t, LAST), last["time"], "forged")
        leaf = insert_entry(t, forged, "forged")
        if not update_head:
            return "head_tree_size", ENTRY_COUNT, ENTRY_COUNT + 1, ENTRY_COUNT
        advance_head(t, leaf, with_nodes=False)
        # Leaf 13 completes node (1, 6): the head moved but the node store did not.
        return "merkle_node", ENTRY_COUNT, None, "(1, 6): absent"

    return tamper


def _derived(sql: str, check: str, seq: int | None, expected: Any, actual: Any) -> Tamper:
    def tamper(t: Conn) -> tuple[str, int | None, Any, Any]:
        t.execute(sql)
        return check, seq, expected, actual

    return tamper


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(_posting_amount, id="posting-amount"),
        pytest.param(_posting_deleted, id="posting-deleted"),
        pytest.param(_posting_added_after_last, id="posting-added"),
        pytest.param(_canonical_amount(rehash=False, both=False), id="canonical-amount"),
        pytest.param(_canonical_amount(rehash=True, both=False), id="canonical-amount-rehashed"),
        pytest.param(
            _canonical_amount(rehash=True, both=True), id="canonical-balanced-amounts-rehashed"
        ),
        pytest.param(_canonical_meta(TERMS, rehash=False), id="canonical-meta"),
        pytest.param(_canonical_meta(TERMS, rehash=True), id="canonical-meta-rehashed"),
        pytest.param(_canonical_meta(LAST, rehash=True), id="canonical-meta-rehashed-last"),
        pytest.param(_delete_entry(with_postings=False), id="delete-entry"),
        pytest.param(_delete_entry(with_postings=True), id="delete-entry-and-postings"),
        pytest.param(_swap_entries, id="swap-entries"),
        pytest.param(_forge_in_middle, id="forge-in-middle"),
        pytest.param(_forge_at_end(update_head=False), id="forge-at-end"),
        pytest.param(_forge_at_end(update_head=True), id="forge-at-end-head-moved"),
        pytest.param(
            _derived(
                "UPDATE ledger_entry SET kind = 'earn' WHERE seq = 5",
                "entry_columns",
                5,
                None,
                None,
            ),
            id="entry-kind-column",
        ),
        pytest.param(
            _derived(
                "UPDATE ledger_balance SET balance = balance + 1 WHERE account = 'member:1'",
                "balance",
                None,
                "member:1: (92, 10)",  # (balance, seq of its last posting)
                "member:1: (93, 10)",
            ),
            id="balance",
        ),
        pytest.param(
            _derived(
                "UPDATE ledger_lot SET remaining = remaining - 1 WHERE lot_id = '1:1'",
                "lot_row",
                1,
                None,
                None,
            ),
            id="lot-remaining",
        ),
        pytest.param(
            _derived(
                "UPDATE ledger_hold SET status = 'voided', closed_seq = 12 WHERE hold_seq = 11",
                "hold_row",
                11,
                None,
                None,
            ),
            id="hold-status",
        ),
        pytest.param(
            _derived(
                "UPDATE ledger_account SET overdraft = true WHERE account = 'wallet:EUR'",
                "account_row",
                None,
                None,
                None,
            ),
            id="account-overdraft",
        ),
        pytest.param(
            _derived(
                "UPDATE ledger_merkle_node SET node_hash = sha256(node_hash)"
                " WHERE level = 1 AND node_index = 0",
                "merkle_node",
                1,  # node (1, 0) is complete once leaf 1 is appended
                None,
                None,
            ),
            id="merkle-node",
        ),
        pytest.param(
            _derived(
                "UPDATE ledger_chain SET frontier_hashes = frontier_hashes[2:]",
                "head_frontier",
                LAST,
                None,
                None,
            ),
            id="head-frontier",
        ),
    ],
)
def test_database_tamper_is_caught(
    db_url: str, conn: Conn, seqs: dict[str, int], tamper: Tamper
) -> None:
    with tampering(db_url) as t:
        check, seq, expected, actual = tamper(t)
    failure = failure_of(conn)
    assert (failure.check, failure.seq) == (check, seq), failure
    if expected is not None:
        assert failure.expected == expected
    if actual is not None:
        if isinstance(actual, str):  # a message that names the row
            assert actual in str(failure.actual)
        else:
            assert failure.actual == actual


@pytest.mark.parametrize(
    "sql",
    [
        # The write path stamps every later entry with max(clock, last_time_us).
        pytest.param(
            "UPDATE ledger_chain SET last_time_us = last_time_us + 86400000000", id="head-last-time"
        ),
        # The write path orders lots by (expiry, opened_seq, posting_index) when it picks.
        pytest.param(
            "UPDATE ledger_lot SET opened_seq = 0 WHERE lot_id = '1:1'", id="lot-opened-seq"
        ),
        pytest.param(
            "UPDATE ledger_entry SET corrects_seq = NULL WHERE seq = 10", id="entry-corrects-column"
        ),
        pytest.param(
            "UPDATE ledger_balance SET last_seq = 0 WHERE account = 'member:1'",
            id="balance-last-seq",
        ),
        pytest.param("UPDATE ledger_hold SET unit = 'EUR' WHERE hold_seq = 11", id="hold-unit"),
    ],
)
def test_every_stored_column_is_compared(
    db_url: str, conn: Conn, seqs: dict[str, int], sql: str
) -> None:
    """verify_db promises to compare every stored column with the replay; these columns
    are derived from the journal too, and a superuser's edit of them must not pass."""
    with tampering(db_url) as t:
        t.execute(sql)
    failure_of(conn)


# Truncation: internally consistent, so only a head recorded earlier reveals it.


def test_truncated_database_verifies_alone_but_not_against_an_earlier_head(
    db_url: str, conn: Conn, seqs: dict[str, int], tmp_path: Path
) -> None:
    before = tmp_path / "before.jsonl"
    export_journal(conn, before)
    known = verify_export(str(before), sizes_wanted=[ENTRY_COUNT])
    assert known.root_hash == verify_database(conn).root_hash
    check_against_known(known, ENTRY_COUNT, known.root_hash)  # the honest control

    cut = ENTRY_COUNT - 4
    with tampering(db_url) as t:
        truncate_consistently(t, cut)
    truncated = verify_database(conn)
    assert truncated.tree_size == cut

    with pytest.raises(VerificationFailed) as caught:
        check_against_known(truncated, ENTRY_COUNT, known.root_hash)
    assert (caught.value.check, caught.value.seq) == ("truncated", None)
    after = tmp_path / "after.jsonl"
    export_journal(conn, after)
    offline = verify_export(str(after), sizes_wanted=[ENTRY_COUNT])
    with pytest.raises(VerificationFailed, match="truncated"):
        check_against_known(offline, ENTRY_COUNT, known.root_hash)


def test_truncated_and_regrown_database_is_caught_by_the_root(
    db_url: str, conn: Conn, seqs: dict[str, int], tmp_path: Path
) -> None:
    before = tmp_path / "before.jsonl"
    export_journal(conn, before)
    known = verify_export(str(before), sizes_wanted=[ENTRY_COUNT]).root_hash
    cut = ENTRY_COUNT - 4
    with tampering(db_url) as t:
        truncate_consistently(t, cut)
    journal = Journal(clock_us=Clock(2 * 10**15))
    for index in range(ENTRY_COUNT - cut):
        [result] = journal.append(conn, [earn("member:2", 1 + index, f"regrown-{index}")])
        expect_appended(result)
    assert verify_database(conn).tree_size == ENTRY_COUNT
    after = tmp_path / "after.jsonl"
    export_journal(conn, after)
    regrown = verify_export(str(after), sizes_wanted=[ENTRY_COUNT])
    with pytest.raises(VerificationFailed) as caught:
        check_against_known(regrown, ENTRY_COUNT, known)
    failure = caught.value
    assert (failure.check, failure.seq) == ("root_hash", LAST)
    assert (failure.expected, failure.actual) == (known.hex(), regrown.root_hash.hex())


def test_check_against_known_accepts_an_honest_database(conn: Conn, seqs: dict[str, int]) -> None:
    """The online verification result must be usable with check_against_known: an
    untouched database agrees with its own earlier head."""
    earlier = verify_database(conn)
    [later] = Journal(clock_us=Clock(2 * 10**15)).append(conn, [earn("member:2", 1, "later")])
    expect_appended(later)
    check_against_known(
        verify_database(conn, sizes_wanted=[earlier.tree_size]),
        earlier.tree_size,
        earlier.root_hash,
    )


# The export file, tampered with offline.


@pytest.fixture(scope="module")
def export_lines(
    server_url: str, template_name: str, tmp_path_factory: pytest.TempPathFactory
) -> list[bytes]:
    path = tmp_path_factory.mktemp("export") / "journal.jsonl"
    with (
        scratch_database(server_url, template_name) as url,
        psycopg.connect(url, autocommit=True) as c,
    ):
        write_varied_journal(c, Journal(clock_us=Clock()), Clock())
        export_journal(c, path)
    lines = path.read_bytes().splitlines(keepends=True)
    assert len(lines) == ENTRY_COUNT
    return lines


def _replace(seq: int, old: bytes, new: bytes) -> Callable[[list[bytes]], list[bytes]]:
    def edit(lines: list[bytes]) -> list[bytes]:
        assert lines[seq].count(old) == 1, (old, lines[seq])
        return [*lines[:seq], lines[seq].replace(old, new), *lines[seq + 1 :]]

    return edit


def _forged_line(lines: list[bytes], seq: int) -> bytes:
    previous = json.loads(lines[seq - 1])
    prev_leaf = leaf_hash_of(lines[seq - 1][:-1])
    return canonical_bytes(fact_entry(seq, prev_leaf, previous["time"], "forged")) + b"\n"


ExportEdit = Callable[[list[bytes]], list[bytes]]
AMOUNT_BYTE = _replace(PAY, b"-1250", b"-1251")
WHITESPACE = _replace(TERMS, b'"kind":', b'"kind": ')


def _swap_lines(lines: list[bytes]) -> list[bytes]:
    return [*lines[:3], lines[4], lines[3], *lines[5:]]


EXPORT_TAMPERS = [
    pytest.param(AMOUNT_BYTE, "rule:postings_must_balance", PAY, id="amount-byte"),
    pytest.param(_replace(TERMS, b"0.0125", b"0.0126"), "prev_link", TERMS + 1, id="meta-byte"),
    pytest.param(lambda ls: ls[:TERMS] + ls[TERMS + 1 :], "seq", TERMS, id="removed-line"),
    pytest.param(_swap_lines, "seq", 3, id="swapped-lines"),
    pytest.param(
        lambda ls: [*ls[: TERMS + 1], ls[TERMS], *ls[TERMS + 1 :]],
        "seq",
        TERMS + 1,
        id="duplicated-line",
    ),
    pytest.param(
        lambda ls: [*ls[:TERMS], _forged_line(ls, TERMS), *ls[TERMS:]],
        "seq",
        TERMS + 1,
        id="forged-line",
    ),
    pytest.param(lambda ls: [*ls, ls[0]], "seq", ENTRY_COUNT, id="foreign-line-at-end"),
    pytest.param(WHITESPACE, "canonical", TERMS, id="whitespace"),
    pytest.param(
        _replace(TERMS, b'"kind":"terms",', b""), "rule:invalid_entry", TERMS, id="field-removed"
    ),
    pytest.param(_replace(PAY, b"-1250", b"-1250.0"), "canonical", PAY, id="float-amount"),
    pytest.param(_replace(PAY, b"-1250", b"-1.25e3"), "canonical", PAY, id="exponent-amount"),
    pytest.param(
        _replace(TERMS, b'"meta":{', b'"meta":{"x":0.5,'), "canonical", TERMS, id="float-meta"
    ),
    pytest.param(
        _replace(TERMS, b'"kind":"terms"', b'"kind":"\\u0074erms"'),
        "canonical",
        TERMS,
        id="escaped-char",
    ),
    pytest.param(_replace(TERMS, b"}\n", b"}\r\n"), "canonical", TERMS, id="crlf"),
    pytest.param(lambda ls: [*ls[:-1], ls[-1][:-1]], "line_end", LAST, id="no-final-newline"),
    pytest.param(_replace(TERMS, b'"meta":{', b'"meta":['), "canonical", TERMS, id="not-json"),
    pytest.param(
        lambda ls: [*ls[:TERMS], b"[]\n", *ls[TERMS + 1 :]], "json", TERMS, id="not-an-object"
    ),
]


@pytest.mark.parametrize(("edit", "check", "seq"), EXPORT_TAMPERS)
def test_export_tamper_is_caught(
    export_lines: list[bytes], edit: ExportEdit, check: str, seq: int
) -> None:
    verify_lines(export_lines)  # the honest control
    with pytest.raises(VerificationFailed) as caught:
        verify_lines(edit(list(export_lines)))
    assert (caught.value.check, caught.value.seq) == (check, seq), caught.value


def test_export_cut_short_is_caught_only_against_a_known_head(export_lines: list[bytes]) -> None:
    known = verify_lines(export_lines, sizes_wanted=[ENTRY_COUNT])
    cut = verify_lines(export_lines[:-2], sizes_wanted=[ENTRY_COUNT])
    assert cut.tree_size == ENTRY_COUNT - 2
    with pytest.raises(VerificationFailed, match="truncated"):
        check_against_known(cut, ENTRY_COUNT, known.root_hash)


def test_last_line_altered_is_caught_only_against_a_known_head(export_lines: list[bytes]) -> None:
    known = verify_lines(export_lines, sizes_wanted=[ENTRY_COUNT])
    edited = _replace(LAST, b'"spend-2"', b'"spend-3"')(list(export_lines))
    altered = verify_lines(edited, sizes_wanted=[ENTRY_COUNT])
    with pytest.raises(VerificationFailed) as caught:
        check_against_known(altered, ENTRY_COUNT, known.root_hash)
    assert (caught.value.check, caught.value.seq) == ("root_hash", LAST)


# The CLI, offline: no database is configured or needed.


def run_cli(
    *args: str, env_extra: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"} | (env_extra or {})
    return subprocess.run(
        [sys.executable, "-m", "coalition.cli", *args],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        pytest.param(None, None, id="good"),
        pytest.param(AMOUNT_BYTE, "seq 9: rule:postings_must_balance failed", id="amount"),
        pytest.param(_swap_lines, "seq 3: seq failed", id="swapped"),
        pytest.param(WHITESPACE, "seq 6: canonical failed", id="whitespace"),
    ],
)
def test_cli_verify_export(
    export_lines: list[bytes], tmp_path: Path, edit: ExportEdit | None, message: str | None
) -> None:
    path = tmp_path / "checked.jsonl"
    path.write_bytes(b"".join(edit(list(export_lines)) if edit else export_lines))
    done = run_cli("verify", "--export", str(path))
    if message is None:
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith(f"OK {ENTRY_COUNT} entries")
    else:
        assert done.returncode == 1, (done.stdout, done.stderr)
        assert message in done.stderr


def test_cli_verify_export_against_expected_head(export_lines: list[bytes], tmp_path: Path) -> None:
    root = verify_lines(export_lines).root_hash.hex()
    path = tmp_path / "cut.jsonl"
    path.write_bytes(b"".join(export_lines))
    expect = ("--expect-size", str(ENTRY_COUNT), "--expect-root", root)
    assert run_cli("verify", "--export", str(path), *expect).returncode == 0
    path.write_bytes(b"".join(export_lines[:-1]))
    done = run_cli("verify", "--export", str(path), *expect)
    assert done.returncode == 1
    assert "truncated" in done.stderr


@pytest.mark.parametrize(("kept", "exit_code"), [(ENTRY_COUNT, 0), (ENTRY_COUNT - 1, 1)])
def test_cli_online_verify_against_expected_head(
    db_url: str, conn: Conn, seqs: dict[str, int], kept: int, exit_code: int
) -> None:
    """--expect-size/--expect-root hold the database to a head recorded earlier: an
    honest database passes, one cut short and resealed fails."""
    known = verify_database(conn)
    if kept < ENTRY_COUNT:
        with tampering(db_url) as t:
            truncate_consistently(t, kept)
    expect = ("--expect-size", str(ENTRY_COUNT), "--expect-root", known.root_hash.hex())
    done = run_cli("verify", *expect, env_extra={"DATABASE_URL": db_url})
    assert done.returncode == exit_code, (done.stdout, done.stderr)
    if exit_code:
        assert "truncated" in done.stderr
