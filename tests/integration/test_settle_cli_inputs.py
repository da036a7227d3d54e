"""The finance CLI against PostgreSQL, through ``coalition.cli.main``: the payment file's
execution date is a real date not in the past (``tomorrow`` is refused, not written into
the XML), each file has its own message id and is valid against the official XSD, no
file without a configured clearing account; time options take RFC 3339 with offsets and
plain dates; reconciliation exits non-zero when records differ and prints RFC 3339."""

from __future__ import annotations

import importlib.resources
import json
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest
import xmlschema

from coalition import settle
from coalition.cli.main import main
from coalition.context import Coalition
from coalition.earn import earn_points
from coalition.earning import EarningRules
from coalition.members import enroll_member
from coalition.outcomes import Refusal
from coalition.partners import onboard_partner, publish_earning_rules, publish_terms
from coalition.redeem import redeem_points
from ledger.signed_note import Signer
from ledger.timefmt import format_time_us
from settlement.pain001 import NAMESPACE
from settlement.terms import PartnerTerms
from tests.integration._world import SteppingClock, ok

T0 = 1_800_000_000_000_000  # 2027-01-15T08:00:00Z
FEB_2_US = 1_801_526_400_000_000  # 2027-02-02T00:00:00Z
CLEARING_ENV = {
    "COALITION_CLEARING_NAME": "Coalition Clearing AG",
    "COALITION_CLEARING_IBAN": "DE44500105175407324931",
    "COALITION_CLEARING_BIC": "INGDDEFFXXX",
}
NS = {"p": NAMESPACE}


@pytest.fixture()
def co() -> Coalition:
    return Coalition(clock_us=SteppingClock(T0))


@pytest.fixture()
def conn(
    db_url: str, co: Coalition, monkeypatch: pytest.MonkeyPatch
) -> Iterator[psycopg.Connection[Any]]:
    """Grocer issues 500 points, 300 are redeemed at airline; the CLI sees this database."""
    monkeypatch.setenv("DATABASE_URL", db_url)
    for variable in CLEARING_ENV:
        monkeypatch.delenv(variable, raising=False)
    terms = PartnerTerms(Decimal(50), Decimal(95), 100, Decimal("0.5"), "monthly", "multilateral")
    rules = EarningRules("EUR", 1, 100)
    banks = {"grocer": "DE89370400440532013000", "airline": "DE02120300000000202051"}
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
                    iban=banks[partner],
                    bic="COBADEFFXXX",
                    name=partner.title(),
                    ref_key=f"bank-{partner}",
                )
            )
        ok(enroll_member(co, c, "M1"))
        ok(
            earn_points(
                co,
                c,
                partner_id="grocer",
                ref_key="g1",
                purchase_minor=50_000,
                currency="EUR",
                member_id="M1",
            )
        )
        ok(redeem_points(co, c, partner_id="airline", ref_key="a1", points=300, member_id="M1"))
        yield c


@pytest.fixture()
def approved_run(co: Coalition, conn: psycopg.Connection[Any]) -> str:
    signer = Signer.from_seed("ledger.test.example", bytes(range(32)))
    clock = co.clock_us
    assert isinstance(clock, SteppingClock)
    clock.now_us = FEB_2_US  # January has ended: its entries settle in 2027-01
    run = ok(settle.compute(co, conn, signer, period="2027-01", computed_by="alice"))
    ok(settle.approve(co, conn, run.run_id, "bob"))
    return str(run.run_id)


def local_today() -> datetime:
    return datetime.now(ZoneInfo(settle.timezone()))


def pain001(run_id: str, out: Path, *execution_date: str) -> int:
    argv = ["settle", "pain001", "--run", run_id, "--out", str(out)]
    if execution_date:
        argv += ["--execution-date", *execution_date]
    return main(argv)


def official_schema() -> xmlschema.XMLSchema:
    path = importlib.resources.files("sepaxml") / "schemas" / "pain.001.001.09.xsd"
    return xmlschema.XMLSchema(str(path))


# --- the payment file -----------------------------------------------------------------


@pytest.mark.parametrize("text", ["tomorrow", "2027-02-30", "01/02/2027", "2027-02-01T00:00:00Z"])
def test_an_execution_date_that_is_not_a_date_is_refused(
    approved_run: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    text: str,
) -> None:
    for variable, value in CLEARING_ENV.items():
        monkeypatch.setenv(variable, value)
    out = tmp_path / "pain.xml"
    assert pain001(approved_run, out, text) == 2
    err = capsys.readouterr().err
    assert err.startswith("--execution-date: ") and ("YYYY-MM-DD" in err or "calendar" in err)
    assert not out.exists()


def test_an_execution_date_in_the_past_is_refused_today_is_allowed(
    approved_run: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for variable, value in CLEARING_ENV.items():
        monkeypatch.setenv(variable, value)
    yesterday = (local_today() - timedelta(days=1)).date().isoformat()
    out = tmp_path / "pain.xml"
    assert pain001(approved_run, out, yesterday) == 2
    assert "in the past" in capsys.readouterr().err and not out.exists()
    today = local_today().date().isoformat()
    assert pain001(approved_run, out, today) == 0
    document = ET.fromstring(out.read_bytes())
    assert {d.text for d in document.findall(".//p:ReqdExctnDt/p:Dt", NS)} == {today}


def test_each_file_has_its_own_message_id_and_is_valid_against_the_xsd(
    approved_run: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for variable, value in CLEARING_ENV.items():
        monkeypatch.setenv(variable, value)
    first, second = tmp_path / "first.xml", tmp_path / "second.xml"
    assert pain001(approved_run, first) == 0  # default: the next day in the coalition's zone
    assert pain001(approved_run, second) == 0
    schema = official_schema()
    ids = []
    for path in (first, second):
        schema.validate(path.read_text())
        root = ET.fromstring(path.read_bytes())
        ids.append(root.findtext("p:CstmrCdtTrfInitn/p:GrpHdr/p:MsgId", namespaces=NS))
        tomorrow = (local_today() + timedelta(days=1)).date().isoformat()
        assert root.findtext(".//p:ReqdExctnDt/p:Dt", namespaces=NS) == tomorrow
        debtor = root.findtext(".//p:DbtrAcct/p:Id/p:IBAN", namespaces=NS)
        assert debtor == CLEARING_ENV["COALITION_CLEARING_IBAN"]
    assert ids[0] != ids[1] and all(i and i.startswith(f"{approved_run}-") for i in ids)
    assert f"MsgId {ids[1]}" in capsys.readouterr().out


def test_no_payment_file_without_a_configured_clearing_account(
    approved_run: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "pain.xml"
    assert pain001(approved_run, out) == 1
    err = capsys.readouterr().err
    assert "no clearing account is configured" in err and "COALITION_CLEARING_IBAN" in err
    assert not out.exists()


def test_an_invalid_clearing_iban_is_refused(
    approved_run: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for variable, value in CLEARING_ENV.items():
        monkeypatch.setenv(variable, value)
    monkeypatch.setenv("COALITION_CLEARING_IBAN", "DE4450010517540")  # 15 characters
    out = tmp_path / "pain.xml"
    assert pain001(approved_run, out) == 1
    assert "invalid IBAN length" in capsys.readouterr().err and not out.exists()


def test_partner_bank_accounts_are_checked_the_same_way(
    co: Coalition, conn: psycopg.Connection[Any]
) -> None:
    from coalition.banking import make_iban

    for iban in (make_iban("DE", "37040044053"), make_iban("XQ", "370400440532013000")):
        refused = settle.set_bank_account(
            co, conn, "grocer", iban=iban, bic="COBADEFFXXX", name="Grocer", ref_key=iban
        )
        assert isinstance(refused, Refusal), iban


# --- reconciliation -------------------------------------------------------------------


def their_records(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    """Grocer's own record of its calls, exactly as the journal has them."""
    return [
        {
            "ref": r.ref,
            "kind": r.kind,
            "member": r.member,
            "points": r.points,
            "amount_minor": r.amount_minor,
            "time": format_time_us(r.time_us),
        }
        for r in settle.our_records(conn, "grocer", 0, 2**62)
    ]


def reconcile(path: Path, start: str, end: str, *more: str) -> int:
    argv = ["reconcile", "--partner", "grocer", "--file", str(path), "--format", "json"]
    return main([*argv, "--from", start, "--to", end, *more])


def test_reconcile_exits_0_only_when_everything_matched(
    conn: psycopg.Connection[Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    records = their_records(conn)
    assert [r["ref"] for r in records] == ["g1"]
    path = tmp_path / "records.json"
    path.write_text(json.dumps(records))
    # A plain date (midnight in the coalition's zone) and an offset are both accepted.
    assert reconcile(path, "2027-01-01", "2027-02-01T03:00:00+03:00") == 0
    out = capsys.readouterr().out
    assert "1 matched, 0 missing on our side, 0 missing on theirs, 0 mismatched" in out
    assert "2026-12-31T21:00:00.000000Z to 2027-02-01T00:00:00.000000Z" in out


def test_reconcile_exits_non_zero_when_records_differ_and_prints_rfc_3339(
    conn: psycopg.Connection[Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    [record] = their_records(conn)
    path = tmp_path / "records.json"
    late = {**record, "time": "2027-01-15T10:00:00.000000Z"}
    path.write_text(json.dumps([late]))
    assert reconcile(path, "2027-01-01T00:00:00Z", "2027-02-01T00:00:00Z") == 3
    out = capsys.readouterr().out
    assert f"g1: time ours={record['time']} theirs=2027-01-15T10:00:00.000000Z" in out
    extra = {**record, "ref": "g-unknown"}
    path.write_text(json.dumps([record, extra]))
    assert reconcile(path, "2027-01-01T00:00:00.5Z", "2027-02-01T00:00:00Z") == 3
    assert "g-unknown: only in theirs" in capsys.readouterr().out
    path.write_text("[]")
    assert reconcile(path, "2027-01-01T00:00:00Z", "2027-02-01T00:00:00Z") == 3
    assert "g1: only in ours" in capsys.readouterr().out


@pytest.mark.parametrize("start", ["2027-01-01T00:00:00", "1 January", "２０２７-01-01"])
def test_reconcile_refuses_a_time_that_is_not_one(
    conn: psycopg.Connection[Any],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    start: str,
) -> None:
    path = tmp_path / "records.json"
    path.write_text("[]")
    assert reconcile(path, start, "2027-02-01T00:00:00Z") == 2
    err = capsys.readouterr().err
    assert err.startswith("--from: ") and "RFC 3339" in err


def test_kpis_take_dates_and_offsets(
    conn: psycopg.Connection[Any], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["kpis", "--from", "2027-01-01", "--to", "2027-02-01T03:00:00+03:00"]) == 0
    out = capsys.readouterr().out
    assert "2026-12-31T21:00:00.000000Z → 2027-02-01T00:00:00.000000Z" in out
    assert "points issued     500" in out
