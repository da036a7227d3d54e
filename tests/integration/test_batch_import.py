"""Batch import (docs/BATCH.md) against PostgreSQL: records through the single call's use
cases, a result per line, a re-submission that writes nothing, totals refused whole."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest

from coalition.batch_format import Batch, format_batch, parse_batch, write_results
from coalition.batch_import import _use_case as batch_use_case
from coalition.batch_import import import_batch
from coalition.cli.main import main
from coalition.context import Coalition
from coalition.earn import earn_points
from coalition.earning import EarningRules
from coalition.members import enroll_member
from coalition.outcomes import Refusal, RefusalCode
from coalition.partners import (
    onboard_partner,
    publish_earning_rules,
    publish_terms,
    set_tier_policy,
)
from coalition.redeem import redeem_points
from coalition.tiers import Tier, TierPolicy
from ledger import reads
from ledger.verify_db import verify_database
from settlement.terms import PartnerTerms

T0 = 1_800_000_000_000_000
EFFECTIVE_US = 1_600_000_000_000_000  # 2020: in force for the CLI's real clock too
TERMS = PartnerTerms(
    Decimal("0.01"), Decimal("0.008"), 50, Decimal("0.5"), "monthly", "multilateral"
)
RULES = EarningRules("RUB", 1, 100, {})  # a point per 1 RUB
MEMBERS = 50


@pytest.fixture()
def co() -> Coalition:
    return Coalition(clock_us=lambda: T0)


@pytest.fixture()
def conn(db_url: str, co: Coalition) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(db_url, autocommit=True) as c:
        for partner in ("grocer", "fuel"):
            ok(onboard_partner(co, c, partner, f"{partner.title()} Ltd", "RUB"))
            ok(publish_terms(co, c, partner, TERMS, EFFECTIVE_US, f"terms-{partner}"))
            ok(publish_earning_rules(co, c, partner, RULES, EFFECTIVE_US, f"rules-{partner}"))
        for m in range(MEMBERS):
            ok(enroll_member(co, c, f"M{m}"))
        yield c


def ok(outcome: Any) -> Any:
    assert not isinstance(outcome, Refusal), outcome
    return outcome


def earn_row(ref: str, member: str, minor: int) -> dict[str, Any]:
    return {"type": "earn", "ref": ref, "member": member, "amount": minor, "currency": "RUB"}


def mixed_rows(
    n: int, distance_blocks: int, prefix: str = "", members: int = MEMBERS
) -> list[dict[str, Any]]:
    """Blocks of ten lines, one member each: six earns, two redemptions, a refund of an
    earn and of a redemption ``distance_blocks`` blocks back (earns before there are).
    Members are ``{prefix or 'M'}0…``; references start with ``prefix`` then the kind."""
    rows: list[dict[str, Any]] = []
    for i in range(n):
        block, step = divmod(i, 10)
        member, back = f"{prefix or 'M'}{block % members}", (block - distance_blocks) * 10
        if step < 6 or (step >= 8 and back < 0):
            rows.append(earn_row(f"{prefix}e{i}", member, 10_000))  # 100 points
        elif step < 8:
            rows.append({"type": "redeem", "ref": f"{prefix}r{i}", "member": member, "amount": 30})
        elif step == 8:
            refund = {"type": "refund_purchase", "ref": f"{prefix}f{i}"}
            rows.append({**refund, "target_ref": f"{prefix}e{back}", "amount": 5_000})
        else:
            refund = {"type": "refund_redemption", "ref": f"{prefix}g{i}"}
            rows.append({**refund, "target_ref": f"{prefix}r{back + 6}", "amount": 10})
    return rows


def enroll_many(co: Coalition, conn: Any, count: int, prefix: str = "L") -> None:
    for m in range(count):
        ok(enroll_member(co, conn, f"{prefix}{m}"))


def parsed(text: str, fmt: str, partner: str = "grocer") -> Batch:
    batch = parse_batch(text.encode(), fmt, partner)
    assert isinstance(batch, Batch), batch
    return batch


def run(
    co: Coalition, conn: Any, text: str, fmt: str, append_conn: Any = None
) -> tuple[str, dict[str, int]]:
    batch = parsed(text, fmt)
    return write_results(fmt, batch.batch_id, import_batch(co, conn, batch, append_conn))


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_a_batch_imports_each_line_as_the_single_call_would(
    co: Coalition, conn: Any, fmt: str
) -> None:
    rows = mixed_rows(1_000, 1)  # refunds of the chunk before theirs
    size_before = reads.head(conn).tree_size
    _, totals = run(co, conn, format_batch(fmt, "B1", "grocer", rows), fmt)
    assert totals == {"lines": 1_000, "accepted": 1_000, "replayed": 0, "refused": 0}
    assert reads.head(conn).tree_size == size_before + 1_000
    # The same records as single calls give the same answers: replays of the batch's.
    earned = ok(
        earn_points(
            co,
            conn,
            partner_id="grocer",
            ref_key="e0",
            purchase_minor=10_000,
            currency="RUB",
            member_id="M0",
        )
    )
    assert earned.replayed and earned.points == 100
    redeemed = ok(
        redeem_points(co, conn, partner_id="grocer", ref_key="r6", points=30, member_id="M0")
    )
    assert redeemed.replayed
    verify_database(conn)  # raises on any failure


def test_a_bad_line_is_refused_alone(co: Coalition, conn: Any) -> None:
    rows = [
        earn_row("a", "M1", 10_000),
        earn_row("b", "NOBODY", 10_000),  # unknown member: the use case refuses
        {"type": "redeem", "ref": "c", "member": "M2", "amount": 1},  # M2 has nothing
        {"type": "earn", "ref": "d", "member": "M1", "amount": 100},  # no currency
        earn_row("a", "M3", 10_000),  # a reference used on an earlier line
        {"type": "refund_purchase", "ref": "e", "target_ref": "a", "amount": 20_000},  # too much
        earn_row("f", "M1", 200),
    ]
    text, totals = run(co, conn, format_batch("jsonl", "B2", "grocer", rows), "jsonl")
    assert totals == {"lines": 7, "accepted": 2, "replayed": 0, "refused": 5}
    lines = [json.loads(line) for line in text.splitlines()]
    by_ref_line = {(r["line"], r["ref"]): r for r in lines if "line" in r}
    codes = {k: r["code"] for k, r in by_ref_line.items()}
    assert codes == {
        (2, "a"): None,
        (3, "b"): "unknown_member",
        (4, "c"): "insufficient_points",
        (5, "d"): "invalid_request",
        (6, "a"): "duplicate_reference",
        (7, "e"): "refund_exceeds_original",
        (8, "f"): None,
    }
    assert by_ref_line[(2, "a")]["seq"] is not None and by_ref_line[(8, "f")]["points"] == 2
    assert lines[-1] == {"type": "totals", "batch_id": "B2", **totals}


def test_control_totals_that_do_not_add_up_refuse_the_batch_whole(conn: Any) -> None:
    text = format_batch("jsonl", "B3", "grocer", [earn_row("a", "M1", 100)])
    tampered = text.replace('"purchase_minor": 100', '"purchase_minor": 101')
    assert tampered != text
    refused = parse_batch(tampered.encode(), "jsonl", "grocer")
    assert isinstance(refused, Refusal) and refused.code is RefusalCode.CONTROL_TOTALS_MISMATCH
    short = text.replace('"record_count": 1', '"record_count": 2')
    refused = parse_batch(short.encode(), "jsonl", "grocer")
    assert isinstance(refused, Refusal) and refused.code is RefusalCode.CONTROL_TOTALS_MISMATCH
    truncated = "".join(text.splitlines(keepends=True)[:-1])  # the trailer lost
    refused = parse_batch(truncated.encode(), "jsonl", "grocer")
    assert isinstance(refused, Refusal) and refused.code is RefusalCode.INVALID_REQUEST
    other = parse_batch(text.encode(), "jsonl", "fuel")  # the header names grocer
    assert isinstance(other, Refusal) and other.code is RefusalCode.INVALID_REQUEST


@pytest.mark.parametrize(
    "lines",
    [10_000, pytest.param(100_000, marks=pytest.mark.large)],  # docs/BATCH.md §6: why
)
def test_a_large_batch_imports_with_its_result_file_and_a_resubmission_writes_nothing(
    co: Coalition,
    conn: Any,
    db_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    lines: int,
) -> None:
    """Issue 14's "done means", through the CLI: 100,000 lines (``-m large``; 10,000 in
    the normal run) of earns, redemptions and refunds (of lines 1,500 back, in other
    chunks) import, and the result file answers every line accepted, in file order, with
    its own journal entry and its points, and the totals; the same file again writes
    nothing (journal length unchanged) and answers every line replayed, with the same
    seq and points. Fails if a line is lost, refused, written twice or re-written."""
    monkeypatch.setenv("DATABASE_URL", db_url)
    enroll_many(co, conn, lines // 100)  # ten blocks of ten lines each: few open lots
    path = tmp_path / "big.csv"
    rows_in = mixed_rows(lines, 150, "L", members=lines // 100)
    path.write_text(format_batch("csv", "BIG", "grocer", rows_in))
    size_before = reads.head(conn).tree_size
    assert main(["batch", "import", str(path), "--partner", "grocer"]) == 0
    assert f"{lines:,} accepted (0 replayed), 0 refused" in capsys.readouterr().out
    first = (tmp_path / "big.results.csv").read_text().splitlines()
    assert first[0] == "line,ref,status,seq,replayed,points,code,message"
    assert first[-1] == f"totals,BIG,{lines},{lines},0,0,,"
    rows = list(csv.reader(first[1:-1]))
    assert [int(r[0]) for r in rows] == list(range(2, lines + 2))  # file order
    assert {(r[2], r[4], r[6]) for r in rows} == {("accepted", "false", "")}
    seqs = [int(r[3]) for r in rows]
    size = reads.head(conn).tree_size
    assert size == size_before + lines  # one entry per line, nothing else
    assert sorted(seqs) == list(range(size_before, size))  # each its own
    expected_points = {"e": "100", "r": "30", "f": "50", "g": "10"}  # by the ref's kind
    assert all(r[5] == expected_points[r[1][1]] for r in rows)

    assert main(["batch", "import", str(path), "--partner", "grocer"]) == 0
    assert f"{lines:,} accepted ({lines:,} replayed)" in capsys.readouterr().out
    assert reads.head(conn).tree_size == size
    again = (tmp_path / "big.results.csv").read_text().splitlines()
    assert again[-1] == f"totals,BIG,{lines},{lines},{lines},0,,"
    # Same seq and points per line; only the replayed flag differs.
    assert [r.replace(",true,", ",false,") for r in again[1:-1]] == first[1:-1]


BOTH = {"member": "L1", "card": "L-CARD"}  # a record names exactly one of them


@pytest.mark.parametrize(
    ("bad", "code"),
    [
        ({"type": "earn", "ref": "X", **BOTH, "amount": 1, "currency": "RUB"}, "invalid_request"),
        (earn_row("X", "NOBODY", 10_000), "unknown_member"),
        ({"type": "redeem", "ref": "X", "member": "L1", "amount": 10**6}, "insufficient_points"),
        (
            {"type": "refund_purchase", "ref": "X", "target_ref": "Le0", "amount": 20_000},
            "refund_exceeds_original",
        ),
    ],
    ids=["not-a-record", "use-case", "ledger-in-the-chunk", "refund"],
)
def test_one_bad_line_among_thousands_is_refused_alone(
    co: Coalition, conn: Any, db_url: str, bad: dict[str, Any], code: str
) -> None:
    """One bad line in the middle of a 3,001-line batch — refused by the file check, by
    the use case before its append, or by the ledger inside the transaction of the chunk
    it is in — is refused alone, with the single call's code: the other 3,000 lines
    (three chunks) are each written once (exact journal growth)."""
    enroll_many(co, conn, 100, "L")
    rows = mixed_rows(3_000, 20, "L", members=100)
    rows.insert(1_500, bad)
    append_conn = psycopg.connect(db_url, autocommit=True)
    size = reads.head(conn).tree_size
    text, totals = run(co, conn, format_batch("jsonl", "ONE", "grocer", rows), "jsonl", append_conn)
    append_conn.close()
    assert totals == {"lines": 3_001, "accepted": 3_000, "replayed": 0, "refused": 1}
    assert reads.head(conn).tree_size == size + 3_000
    refused = [r for r in map(json.loads, text.splitlines()) if r.get("status") == "refused"]
    assert [(r["line"], r["ref"], r["code"]) for r in refused] == [(1_502, "X", code)]


def test_the_cli_imports_with_progress_and_writes_the_result_file(
    conn: Any,
    db_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("DATABASE_URL", db_url)
    rows = [earn_row("c1", "M1", 10_000), earn_row("c2", "NOBODY", 100)]
    path = tmp_path / "eod.csv"
    path.write_text(format_batch("csv", "EOD-1", "grocer", rows))
    assert main(["batch", "import", str(path), "--partner", "grocer"]) == 1  # a line refused
    captured = capsys.readouterr()
    assert "batch EOD-1: 2 lines, 1 accepted (0 replayed), 1 refused" in captured.out
    assert "batch EOD-1: 2/2" in captured.err  # the progress line
    results = (tmp_path / "eod.results.csv").read_text().splitlines()
    assert results[0] == "line,ref,status,seq,replayed,points,code,message"
    assert results[1].startswith("2,c1,accepted,") and ",false,100,," in results[1]
    assert results[2].startswith("3,c2,refused,,false,,unknown_member,")
    assert results[3] == "totals,EOD-1,2,1,0,1,,"
    size = reads.head(conn).tree_size
    tampered = path.read_text().replace("trailer,2,10100", "trailer,2,10101")
    path.write_text(tampered)
    assert main(["batch", "import", str(path), "--partner", "grocer"]) == 1
    assert "control_totals_mismatch" in capsys.readouterr().err
    assert reads.head(conn).tree_size == size


@pytest.mark.parametrize("pipelined", [False, True], ids=["one-connection", "two-connections"])
def test_tier_pricing_in_a_batch_is_the_single_calls_in_file_order(
    co: Coalition, conn: Any, db_url: str, pipelined: bool
) -> None:
    """A member's tier depends on their rolling spend, which the earlier lines of the
    same file (and of the same chunk) change: earns raise it, purchase refunds lower it.
    Every line's points in a batch equal the points the single calls give for the same
    file, one after the other in file order (on other members, same clock). Fails if an
    earn is priced without the earns or refunds before it in its chunk."""
    gold = TierPolicy("RUB", 30, (Tier("base", 0, Decimal(1)), Tier("gold", 25_000, Decimal(2))))
    ok(set_tier_policy(co, conn, gold, "tiers-1"))
    enroll_many(co, conn, 6, "A")
    enroll_many(co, conn, 6, "S")
    # Refunds of the block before, so some land in the chunk of the earns they lower.
    rows = mixed_rows(240, 1, "A", members=6)
    singles = parsed(
        format_batch("jsonl", "S", "grocer", mixed_rows(240, 1, "S", members=6)), "jsonl"
    )
    expected = [_single_points(co, conn, record) for record in singles.records]
    assert len(set(expected)) > 4  # base and gold earns, refunds of each: the test can fail
    append_conn = psycopg.connect(db_url, autocommit=True) if pipelined else None
    batch = parsed(format_batch("jsonl", "A", "grocer", rows), "jsonl")
    results = import_batch(co, conn, batch, append_conn, entries_per_chunk=40)
    if append_conn is not None:
        append_conn.close()
    assert all(r.refusal is None for r in results), [r for r in results if r.refusal][:3]
    assert [r.points for r in sorted(results, key=lambda r: r.line)] == expected


def _single_points(co: Coalition, conn: Any, record: Any) -> int:
    outcome = ok(batch_use_case(co, conn, "grocer", record))
    return int(outcome.points)


def test_an_earn_priced_before_a_racing_earn_commits_is_priced_again(
    co: Coalition, conn: Any
) -> None:
    """The tier is judged inside the append: a till's earn that read the member's spend
    before another till's earn of the same member committed (which lifts the member to
    gold) is refused BUSY by the guard and priced again — at gold. Fails if the guard
    lets the stale tier through (the earn would be written at base: 100 points)."""
    gold = TierPolicy("RUB", 30, (Tier("base", 0, Decimal(1)), Tier("gold", 15_000, Decimal(2))))
    ok(set_tier_policy(co, conn, gold, "tiers-1"))
    ok(
        earn_points(
            co,
            conn,
            partner_id="grocer",
            ref_key="t1",
            purchase_minor=10_000,
            currency="RUB",
            member_id="M1",
        )
    )
    raced: list[str] = []

    class RacedCoalition(Coalition):
        def append(self, c: Any, request: Any) -> Any:
            if not raced:  # the other till commits between this one's reads and append
                raced.append(request.meta["tier"])
                ok(
                    earn_points(
                        co,
                        c,
                        partner_id="fuel",
                        ref_key="t2",
                        purchase_minor=10_000,
                        currency="RUB",
                        member_id="M1",
                    )
                )
            return super().append(c, request)

    earned = ok(
        earn_points(
            RacedCoalition(clock_us=co.clock_us),
            conn,
            partner_id="grocer",
            ref_key="t3",
            purchase_minor=10_000,
            currency="RUB",
            member_id="M1",
        )
    )
    assert raced == ["base"]  # priced at base first, on the spend it read
    assert (earned.tier, earned.points) == ("gold", 200)
