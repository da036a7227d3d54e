"""A varied settlement scenario run entirely through the production use cases against
PostgreSQL, then recomputed from the export twice: by ``coalition settle from-export``
(a subprocess) and by tests/tools/independent_settlement.py (docs/SETTLEMENT.md alone).

Four partners in three currencies (``air`` and ``cafe`` EUR, ``shop`` GBP, ``sushi``
JPY: no minor unit), rates recorded per run id. January: a December earn that expires in
January (the expiry job), redemptions across issuers, a partial capture of a hold, a
largest-remainder rounding; refunds (of a January redemption and, into debt, of a January
purchase whose points were spent) recorded on 1 February, after the period but before
January's cut. January is settled three times: r1 (multilateral, paid), r2 (sushi's
back-dated terms; approved, not paid) and r3 (the other partners' bilateral terms from
1 February make the mode bilateral, and a new EUR→JPY rate), a correction of the
correction. February, bilateral, carries the refunds and a second expiry. Every figure
asserted below is worked out by hand in the comments."""

from __future__ import annotations

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
from coalition.expiry import expire_points
from coalition.members import enroll_member
from coalition.partners import (
    onboard_partner,
    publish_earning_rules,
    publish_terms,
    set_expiry_policy,
)
from coalition.redeem import authorise, capture, redeem_points
from coalition.refunds import refund_purchase, refund_redemption
from ledger.export import export_journal
from ledger.signed_note import Signer
from ledger.timefmt import parse_time_us
from settlement.terms import PartnerTerms
from tests.integration._world import SteppingClock, balance, ok, pay_all
from tests.tools.independent_settlement import recompute

ROOT = Path(__file__).resolve().parents[2]
DEC_5 = parse_time_us("2026-12-05T10:00:00.000000Z")
JAN_START = parse_time_us("2026-12-31T21:00:00.000000Z")  # 2027-01-01 00:00 Moscow
JAN_2 = parse_time_us("2027-01-02T09:00:00.000000Z")
JAN_20 = parse_time_us("2027-01-20T09:00:00.000000Z")
FEB_START = parse_time_us("2027-01-31T21:00:00.000000Z")  # 2027-02-01 00:00 Moscow
FEB_1 = FEB_START + 3_600_000_000  # 01:00 on 1 February in Moscow
FEB_5 = parse_time_us("2027-02-05T09:00:00.000000Z")
FEB_10 = parse_time_us("2027-02-10T09:00:00.000000Z")
FEB_12 = parse_time_us("2027-02-12T09:00:00.000000Z")
FEB_15 = parse_time_us("2027-02-15T09:00:00.000000Z")
MAR_1 = parse_time_us("2027-02-28T22:00:00.000000Z")  # 01:00 on 1 March in Moscow

CURRENCY = {"air": "EUR", "cafe": "EUR", "shop": "GBP", "sushi": "JPY"}
IBAN = {
    "air": "DE89370400440532013000",
    "cafe": "DE02120300000000202051",
    "shop": "GB29NWBK60161331926819",
    "sushi": "DE44500105175407324931",
}


def _terms(iss: str, red: str, fee_bps: int, brk: str, mode: str) -> PartnerTerms:
    return PartnerTerms(Decimal(iss), Decimal(red), fee_bps, Decimal(brk), "monthly", mode)


# Terms v1, in force from the epoch: prices in minor units of the partner's currency.
TERMS_V1 = {
    "air": _terms("0.5", "0.8", 150, "0.5", "multilateral"),  # fee 0.8 × 1.5% = 0.012
    "shop": _terms("0.3", "0.7", 100, "0.25", "multilateral"),  # fee 0.7 × 1% = 0.007
    "sushi": _terms("1", "1.7", 200, "0.4", "bilateral"),  # fee 1.7 × 2% = 0.034
    "cafe": _terms("0.4", "0.6", 0, "0", "multilateral"),  # no fee, no breakage
}
# Published on 5 February, effective from 1 January: sushi's redemptions are dearer.
SUSHI_V2 = _terms("1", "2.3", 200, "0.4", "bilateral")  # fee 2.3 × 2% = 0.046
# Published on 10 February, effective from 1 February: the same prices, bilateral.
BILATERAL_V2 = {
    "air": _terms("0.5", "0.8", 150, "0.5", "bilateral"),
    "shop": _terms("0.3", "0.7", 100, "0.25", "bilateral"),
    "cafe": _terms("0.4", "0.6", 0, "0", "bilateral"),
}
# 1 base = rate quote, per run id (a correction needs its own).
RATES = {"EUR→GBP": "0.85", "EUR→JPY": "160", "GBP→EUR": "1.17", "JPY→GBP": "0.0049"}


@pytest.fixture()
def clock() -> SteppingClock:
    return SteppingClock(DEC_5)


@pytest.fixture()
def co(clock: SteppingClock) -> Coalition:
    return Coalition(clock_us=clock)


@pytest.fixture()
def signer() -> Signer:
    return Signer.from_seed("ledger.test.example", bytes(range(32)))


@pytest.fixture()
def conn(db_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(db_url, autocommit=True) as c:
        yield c


def _record_rates(co: Coalition, conn: Any, run_id: str, **changed: str) -> None:
    for pair, rate in (RATES | changed).items():
        base, quote = pair.split("→")
        ok(
            settle.record_fx_rate(
                co,
                conn,
                run_id=run_id,
                base=base,
                quote=quote,
                rate=rate,
                source="ECB",
                rate_date="2027-01-29",
                ref_key=f"fx:{run_id}:{base}{quote}",
            )
        )


def _body(conn: Any, run_id: str) -> dict[str, Any]:
    record = settle.get_run(conn, run_id)
    assert record is not None
    parsed: dict[str, Any] = json.loads(record.run_bytes)
    return parsed


def _lines(body: dict[str, Any]) -> list[tuple[str, str, str, str, str, int, int]]:
    return [
        (
            x["reason"],
            x["currency"],
            x["payer"],
            x["payee"],
            x["rate_per_point"],
            x["points"],
            x["amount_minor"],
        )
        for x in body["lines"]
    ]


def _positions(rows: list[dict[str, Any]]) -> dict[tuple[str, str], int]:
    return {(x["party"], x["currency"]): x["net_minor"] for x in rows}


def _payments(body: dict[str, Any]) -> list[tuple[str, str, str, str, int]]:
    return [
        (x["end_to_end_id"], x["payer"], x["payee"], x["currency"], x["amount_minor"])
        for x in body["payments"]
    ]


def _settlement_balances(conn: Any) -> dict[str, int]:
    accounts = [f"partner:{p}:settlement:{c}" for p, c in CURRENCY.items()]
    accounts += [f"coalition:revenue:{c}" for c in ("EUR", "GBP", "JPY")]
    accounts += [f"coalition:clearing:{c}" for c in ("EUR", "GBP", "JPY")]
    return {a: balance(conn, a) for a in accounts}


def _from_export_cli(export: Path, run_id: str, out: Path) -> bytes:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}  # the export alone
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "coalition.cli",
            "settle",
            "from-export",
            "--export",
            str(export),
            "--run",
            run_id,
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr
    return out.read_bytes()


def _setup_and_january(co: Coalition, conn: Any, clock: SteppingClock) -> dict[str, int]:
    """December's facts and January's activity; the seqs the assertions need."""
    seqs: dict[str, int] = {}
    clock.at(DEC_5)
    for partner, currency in CURRENCY.items():
        ok(onboard_partner(co, conn, partner, partner.title() + " Ltd", currency))
        ok(publish_terms(co, conn, partner, TERMS_V1[partner], 0, f"terms-{partner}-1"))
        if partner != "cafe":  # a point per 100 minor units (per 100 yen at sushi)
            rules = EarningRules(currency, 1, 100)
            ok(publish_earning_rules(co, conn, partner, rules, 0, f"rules-{partner}"))
        ok(
            settle.set_bank_account(
                co,
                conn,
                partner,
                iban=IBAN[partner],
                bic="COBADEFFXXX",
                name=partner.title() + " Ltd",
                ref_key=f"bank-{partner}",
            )
        )
    for member in ("m1", "m2", "m3"):
        ok(enroll_member(co, conn, member))
    # Points of this one earn expire a month on (5 January); later earns never expire.
    ok(set_expiry_policy(co, conn, 1, "expiry-1-month"))
    seqs["dec_earn"] = ok(
        earn_points(
            co,
            conn,
            partner_id="air",
            ref_key="air-dec",
            purchase_minor=90_000,
            currency="EUR",
            member_id="m1",
        )
    ).seq  # 900 air points for m1
    ok(set_expiry_policy(co, conn, None, "expiry-none"))

    clock.at(JAN_2)
    ok(
        earn_points(
            co,
            conn,
            partner_id="shop",
            ref_key="shop-jan",
            purchase_minor=70_000,
            currency="GBP",
            member_id="m2",
        )
    )  # 700 shop points for m2
    earned = ok(
        earn_points(
            co,
            conn,
            partner_id="sushi",
            ref_key="sushi-jan",
            purchase_minor=80_000,
            currency="JPY",
            member_id="m3",
        )
    )
    assert earned.points == 800  # 80,000 yen, a point per 100 yen
    r1 = ok(redeem_points(co, conn, partner_id="shop", ref_key="r1", points=333, member_id="m1"))
    assert r1.points_by_issuer == {"air": 333}
    ok(redeem_points(co, conn, partner_id="cafe", ref_key="c1", points=50, member_id="m1"))
    ok(redeem_points(co, conn, partner_id="sushi", ref_key="s1", points=250, member_id="m2"))
    ok(redeem_points(co, conn, partner_id="air", ref_key="a1", points=159, member_id="m2"))
    hold = ok(authorise(co, conn, partner_id="air", ref_key="h1", points=300, member_id="m3"))
    captured = ok(
        capture(
            co, conn, partner_id="air", ref_key="h1-capture", hold_seq=hold.hold_seq, points=123
        )
    )  # a partial capture: the hold's other 177 points are released
    assert captured.points_by_issuer == {"sushi": 123}
    ok(redeem_points(co, conn, partner_id="air", ref_key="a2", points=600, member_id="m3"))
    # m3 keeps 800 − 123 − 600 = 77 sushi points; m1 keeps 900 − 333 − 50 = 517 expired.
    clock.at(JAN_20)
    expired = expire_points(co, conn, as_of_us=JAN_20)
    assert (expired.points, expired.points_by_issuer) == (517, {"air": 517})
    seqs["jan_expiry"] = conn.execute(
        "SELECT max(seq) FROM ledger_entry WHERE kind = 'expire'"
    ).fetchone()[0]
    return seqs


def test_a_varied_scenario_settles_and_recomputes_from_the_export(
    co: Coalition, conn: Any, clock: SteppingClock, signer: Signer, tmp_path: Path
) -> None:
    seqs = _setup_and_january(co, conn, clock)

    # 1 February (Moscow), after January ended and before it is cut: a refund of 100 of
    # r1's 333 points, and half of sushi's purchase refunded after m3 spent 723 of its
    # 800 points: 400 clawed back, 77 from the earn's lot and 323 as debt.
    clock.at(FEB_1)
    rr = ok(
        refund_redemption(
            co, conn, partner_id="shop", ref_key="r1-refund", redemption_ref_key="r1", points=100
        )
    )
    clawed = ok(
        refund_purchase(
            co,
            conn,
            partner_id="sushi",
            ref_key="sushi-jan-refund",
            earn_ref_key="sushi-jan",
            refund_minor=40_000,
        )
    )
    assert (clawed.points, clawed.debt_points) == (400, 323)
    _record_rates(co, conn, "2027-01")

    # ---- January r1: multilateral (air, shop, cafe say so; sushi's bilateral alone not).
    r1 = ok(settle.compute(co, conn, signer, period="2027-01", computed_by="alice"))
    body1 = json.loads(r1.run_bytes)
    assert body1["mode"] == "multilateral"
    tree_size = body1["cut"]["checkpoint"]["tree_size"]
    assert r1.start_seq == 0 and r1.end_seq == rr.seq < clawed.seq < tree_size
    bounds = body1["period_bounds"]
    assert bounds["start"] == "2026-12-31T21:00:00.000000Z"
    assert bounds["end"] == "2027-01-31T21:00:00.000000Z"
    assert bounds["entries_before_start"] > 0  # December's setup and earn, settled here
    assert _lines(body1) == [
        # expiry of m1's 517 air points, priced at air v1 then: 0.5 × 0.5 = 0.25 a point;
        # 517 × 0.25 = 129.25 → 129 (half-even)
        ("breakage", "EUR", "coalition", "air", "0.25", 517, 129),
        ("issuance", "EUR", "air", "coalition", "0.5", 900, 450),  # December's earn
        ("issuance", "GBP", "shop", "coalition", "0.3", 700, 210),
        # 800 issued, not 400: the refund of 1 February is February's
        ("issuance", "JPY", "sushi", "coalition", "1", 800, 800),
        # air's fee on 159 + 123 + 600 = 882 points: 882 × 0.012 = 10.584 → 11
        ("operator_fee", "EUR", "air", "coalition", "0.012", 882, 11),
        ("operator_fee", "GBP", "shop", "coalition", "0.007", 333, 2),  # 2.331 → 2
        ("operator_fee", "JPY", "sushi", "coalition", "0.034", 250, 8),  # 8.5 → 8 (even)
        ("redemption", "EUR", "air", "cafe", "0.6", 50, 30),
        # group redemption/EUR: 30 + 127.2 + 578.4 = 735.6 → 736; floors 30 + 127 + 578
        # = 735, the unit left goes to the largest remainder (0.4): 578.4 → 579
        ("redemption", "EUR", "shop", "air", "0.8", 159, 127),
        ("redemption", "EUR", "sushi", "air", "0.8", 723, 579),  # capture 123 + 600
        # 333 points, not 233: the refund of 1 February is February's; 233.1 → 233
        ("redemption", "GBP", "air", "shop", "0.7", 333, 233),
        ("redemption", "JPY", "shop", "sushi", "1.7", 250, 425),
    ]
    assert body1["lines"][1]["first_seq"] == seqs["dec_earn"]
    assert body1["lines"][0]["first_seq"] == seqs["jan_expiry"]
    conversions = [
        (c["party"], c["line"], c["from"], c["to"], c["rate"], c["from_minor"], c["to_minor"])
        for c in body1["conversions"]
    ]
    assert conversions == [
        ("shop", 8, "EUR", "GBP", "0.85", 127, 108),  # 107.95 → 108
        ("sushi", 9, "EUR", "JPY", "160", 579, 926),  # 579 × 160 × 10^(0−2) = 926.4 → 926
        ("air", 10, "GBP", "EUR", "1.17", 233, 273),  # 272.61 → 273
        ("shop", 11, "JPY", "GBP", "0.0049", 425, 208),  # 425 × 0.0049 × 10^2 = 208.25
    ]
    # air EUR: +129 − 450 − 11 − 30 + 127 + 579 − 273 = +71; cafe +30;
    # shop GBP: −210 − 2 − 108 + 233 − 208 = −295; sushi JPY: −800 − 8 − 926 + 425 = −1309
    assert _positions(body1["positions"]) == {
        ("air", "EUR"): 71,
        ("cafe", "EUR"): 30,
        ("coalition", "EUR"): -101,
        ("coalition", "GBP"): 295,
        ("coalition", "JPY"): 1_309,
        ("shop", "GBP"): -295,
        ("sushi", "JPY"): -1_309,
    }
    assert _payments(body1) == [
        ("2027-01-00001", "coalition", "air", "EUR", 71),
        ("2027-01-00002", "coalition", "cafe", "EUR", 30),
        ("2027-01-00003", "shop", "coalition", "GBP", 295),
        ("2027-01-00004", "sushi", "coalition", "JPY", 1_309),
    ]
    assert body1["gross_minor"] == {"EUR": 1_326, "GBP": 445, "JPY": 1_233}
    notes = json.loads(settle.statement(conn, "2027-01", "shop", "json") or b"{}")["notes"]
    rolled = f"Entries {r1.end_seq} <= seq < {tree_size}"
    assert any(rolled in n and "belong to the next period" in n for n in notes), notes
    ok(settle.approve(co, conn, "2027-01", "bob"))
    pay_all(co, conn, "2027-01", "dave")
    assert settle.get_run(conn, "2027-01").status == "paid"  # type: ignore[union-attr]
    assert set(_settlement_balances(conn).values()) == {0}

    # ---- January r2: sushi's v2, back-dated to 1 January, reaches January by correction.
    clock.at(FEB_5)
    ok(publish_terms(co, conn, "sushi", SUSHI_V2, JAN_START, "terms-sushi-2"))
    _record_rates(co, conn, "2027-01-r2")
    r2 = ok(
        settle.compute(co, conn, signer, period="2027-01", computed_by="alice", correction=True)
    )
    body2 = json.loads(r2.run_bytes)
    assert r2.run_id == "2027-01-r2" and body2["mode"] == "multilateral"
    assert (r2.start_seq, r2.end_seq) == (r1.start_seq, r1.end_seq)
    assert body2["supersedes"]["run"] == "2027-01"
    changed = {x[0:4]: x[4:] for x in _lines(body2)}
    assert changed[("operator_fee", "JPY", "sushi", "coalition")] == ("0.046", 250, 12)  # 11.5
    assert changed[("redemption", "JPY", "shop", "sushi")] == ("2.3", 250, 575)
    # shop converts 575 yen: 575 × 0.0049 × 10^2 = 281.75 → 282 GBP;
    # shop GBP −210 − 2 − 108 + 233 − 282 = −369; sushi JPY −800 − 12 − 926 + 575 = −1163
    assert _positions(body2["position_changes"]) == {
        ("coalition", "GBP"): 74,
        ("coalition", "JPY"): -146,
        ("shop", "GBP"): -74,
        ("sushi", "JPY"): 146,
    }
    assert _payments(body2) == [  # the difference only: r1's payments were made
        ("2027-01-r2-00001", "coalition", "sushi", "JPY", 146),
        ("2027-01-r2-00002", "shop", "coalition", "GBP", 74),
    ]
    ok(settle.approve(co, conn, "2027-01-r2", "bob"))  # approved, not paid

    # ---- January r3: a correction of the approved-not-paid correction. air, shop and
    # cafe are bilateral from 1 February, so at r3's cut every partner is: bilateral; and
    # r3 has its own EUR→JPY rate, 165.
    clock.at(FEB_10)
    for partner, terms in BILATERAL_V2.items():
        ok(publish_terms(co, conn, partner, terms, FEB_START, f"terms-{partner}-2"))
    _record_rates(co, conn, "2027-01-r3", **{"EUR→JPY": "165"})
    r3 = ok(settle.compute(co, conn, signer, period="2027-01", computed_by="erin", correction=True))
    body3 = json.loads(r3.run_bytes)
    assert r3.run_id == "2027-01-r3" and body3["mode"] == "bilateral"
    assert body3["supersedes"]["run"] == "2027-01-r2" and body3["revision"] == 3
    assert _lines(body3) == _lines(body2)  # January's entries are priced by v1 still
    # sushi converts 579 EUR at 165: 955.35 → 955 (926 before): sushi JPY −1163 − 29
    assert _positions(body3["position_changes"]) == {
        ("coalition", "JPY"): 29,
        ("sushi", "JPY"): -29,
    }
    # Bilateral flows: air pays cafe 30 itself; coalition → air 129 + 127 + 579 − 450 −
    # 11 − 273 = 101; shop → coalition 210 + 2 + 108 + 282 − 233 = 369; sushi →
    # coalition 800 + 12 + 955 − 575 = 1192. r2's (multilateral) were coalition → air 71,
    # coalition → cafe 30, shop → coalition 369, sushi → coalition 1163.
    assert [(f["payer"], f["payee"], f["currency"], f["amount_minor"]) for f in body3["flows"]] == [
        ("air", "cafe", "EUR", 30),
        ("coalition", "air", "EUR", 101),
        ("shop", "coalition", "GBP", 369),
        ("sushi", "coalition", "JPY", 1_192),
    ]
    assert _payments(body3) == [
        ("2027-01-r3-00001", "air", "cafe", "EUR", 30),
        ("2027-01-r3-00002", "cafe", "coalition", "EUR", 30),
        ("2027-01-r3-00003", "coalition", "air", "EUR", 30),
        ("2027-01-r3-00004", "sushi", "coalition", "JPY", 29),
    ]
    ok(settle.approve(co, conn, "2027-01-r3", "carol"))
    # What is still due is r2's and r3's payments: sushi is owed 146 − 29 = 117 yen, shop
    # owes 74 pence, coalition's GBP revenue 74, its JPY −117.
    due = _settlement_balances(conn)
    assert due["partner:sushi:settlement:JPY"] == 117
    assert due["partner:shop:settlement:GBP"] == -74
    assert due["partner:cafe:settlement:EUR"] == 0 and due["partner:air:settlement:EUR"] == 0
    pay_all(co, conn, "2027-01-r2", "dave")
    pay_all(co, conn, "2027-01-r3", "dave")
    # Over all revisions each party is posted and paid exactly what r3 says.
    assert set(_settlement_balances(conn).values()) == {0}
    posted: dict[tuple[str, str], int] = {}
    for rows in (body1["positions"], body2["position_changes"], body3["position_changes"]):
        for (party, currency), net in _positions(rows).items():
            posted[(party, currency)] = posted.get((party, currency), 0) + net
    assert {k: v for k, v in posted.items() if v} == _positions(body3["positions"])
    paid: dict[tuple[str, str, str], int] = {}
    for body in (body1, body2, body3):
        for _, payer, payee, currency, amount in _payments(body):
            low, high = sorted((payer, payee))
            key = (low, high, currency)
            paid[key] = paid.get(key, 0) + (amount if payer == low else -amount)
    final = {}
    for f in body3["flows"]:
        low, high = sorted((f["payer"], f["payee"]))
        final[(low, high, f["currency"])] = f["amount_minor"] * (1 if f["payer"] == low else -1)
    assert {k: v for k, v in paid.items() if v} == final
    statuses = [settle.get_run(conn, r).status for r in ("2027-01", "2027-01-r2", "2027-01-r3")]  # type: ignore[union-attr]
    assert statuses == ["superseded", "superseded", "paid"]

    # ---- February: a new earn, the expiry of the 100 points refunded to m1's expired lot.
    clock.at(FEB_12)
    ok(
        earn_points(
            co,
            conn,
            partner_id="shop",
            ref_key="shop-feb",
            purchase_minor=10_000,
            currency="GBP",
            member_id="m2",
        )
    )  # 100 shop points
    clock.at(FEB_15)
    again = expire_points(co, conn, as_of_us=FEB_15)
    assert (again.points, again.points_by_issuer) == (100, {"air": 100})
    clock.at(MAR_1)
    _record_rates(co, conn, "2027-02")
    feb = ok(settle.compute(co, conn, signer, period="2027-02", computed_by="alice"))
    body_feb = json.loads(feb.run_bytes)
    assert feb.start_seq == r1.end_seq and body_feb["mode"] == "bilateral"
    assert _lines(body_feb) == [
        # air v2 at expiry (same prices): 100 × 0.25 = 25
        ("breakage", "EUR", "coalition", "air", "0.25", 100, 25),
        ("issuance", "GBP", "shop", "coalition", "0.3", 100, 30),
        # the clawback of 400 (323 of them debt), priced at the earn's time by sushi v2:
        # issuance −400 turns the line round, the coalition pays sushi 400 yen
        ("issuance", "JPY", "coalition", "sushi", "1", 400, 400),
        # the January redemption refunded, priced at r1's time by shop v1: −100 points
        ("operator_fee", "GBP", "coalition", "shop", "0.007", 100, 1),  # 0.7 → 1
        ("redemption", "GBP", "shop", "air", "0.7", 100, 70),
    ]
    by_reason = {(x["reason"], x["currency"]): x for x in body_feb["lines"]}
    assert by_reason[("redemption", "GBP")]["first_seq"] == rr.seq
    assert by_reason[("issuance", "JPY")]["terms_versions"] == [["sushi", 2]]
    assert by_reason[("issuance", "GBP")]["terms_versions"] == [["shop", 2]]
    # air receives 70 GBP as 70 × 1.17 = 81.9 → 82 EUR: air +25 + 82 = 107;
    # shop −30 + 1 − 70 = −99; sushi +400
    assert _positions(body_feb["positions"]) == {
        ("air", "EUR"): 107,
        ("coalition", "EUR"): -107,
        ("coalition", "GBP"): 99,
        ("coalition", "JPY"): -400,
        ("shop", "GBP"): -99,
        ("sushi", "JPY"): 400,
    }
    assert _payments(body_feb) == [
        ("2027-02-00001", "coalition", "air", "EUR", 107),
        ("2027-02-00002", "coalition", "sushi", "JPY", 400),
        ("2027-02-00003", "shop", "coalition", "GBP", 99),
    ]
    ok(settle.approve(co, conn, "2027-02", "bob"))
    pay_all(co, conn, "2027-02", "dave")
    assert set(_settlement_balances(conn).values()) == {0}

    # ---- Every run, from the export: the CLI and the independent implementation.
    export = tmp_path / "journal.jsonl"
    export_journal(conn, export)
    for run_id in ("2027-01", "2027-01-r2", "2027-01-r3", "2027-02"):
        stored = settle.get_run(conn, run_id)
        assert stored is not None
        cli = _from_export_cli(export, run_id, tmp_path / f"{run_id}.json")
        assert cli == stored.run_bytes, run_id
        assert recompute(str(export), run_id) == stored.run_bytes, run_id
