"""Partners payable from the API alone, approvals by principals, and partners' own runs.

A partner onboarded through the API in another currency is paid from API calls only:
terms, earning rules and its bank account (checked), activity, a compute that names every
rate missing, the rate recorded with its source and date, a compute without warnings, an
approval by a second finance key (the computing key is refused), and the payment file
holds the partner. A partner without a bank account is named by compute's warnings and
approval is refused (PARTY_NOT_PAYABLE). Partners list their own runs, never others'.

Periods mean their label: a run is cut only after its period ended, which the tests
cannot wait for, so the period's end is moved to "now" (``settle.period_bounds``, in this
process, where the server runs) just before each compute.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import psycopg
import pytest

from coalition import settle
from coalition.context import Coalition
from coalition.outcomes import Refusal, RefusalCode
from ledger.timefmt import format_time_us, now_us
from settlement import periods
from settlement.pain001 import Clearing

if TYPE_CHECKING:
    from tests.e2e.conftest import Seeded

ROOT = Path(__file__).resolve().parents[2]
OPERATIONS = ROOT / "graphql" / "operations"
PHARMACY_IBAN, PHARMACY_BIC = "DE02120300000000202051", "BYLADEM1001"
CLEARING = Clearing("Coalition Clearing", "DE89370400440532013000", "COBADEFFXXX")


class Api:
    """Published operation documents, sent with a named seeded (or given) key."""

    def __init__(self, url: str, keys: dict[str, str]) -> None:
        self.client = httpx.Client(base_url=url, timeout=60)
        self.keys = dict(keys)

    def raw(self, who: str, operation: str, **variables: Any) -> dict[str, Any]:
        document = (OPERATIONS / f"{operation}.graphql").read_text()
        response = self.client.post(
            "/graphql",
            json={"query": document, "variables": variables},
            headers={"Authorization": f"Bearer {self.keys[who]}"},
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def __call__(self, who: str, operation: str, **variables: Any) -> dict[str, Any]:
        body = self.raw(who, operation, **variables)
        assert "errors" not in body, body
        data: dict[str, Any] = body["data"]
        return data


@pytest.fixture()
def call(api: str, seeded: Seeded) -> Iterator[Api]:
    caller = Api(api, seeded.keys)
    yield caller
    caller.client.close()


@pytest.fixture()
def period_ends_now(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Make period ``label`` end at this moment (it has then ended, and every entry so far
    is before its end)."""
    real = periods.period_bounds

    def end_now(label: str) -> None:
        end_us = now_us()

        def bounds(name: str, zone: str) -> tuple[str, int, int]:
            if name == label:
                return "daily", real(name, zone)[1], end_us
            return real(name, zone)

        monkeypatch.setattr(settle, "period_bounds", bounds)

    return end_now


def answer(data: dict[str, Any], field: str, typename: str) -> dict[str, Any]:
    found: dict[str, Any] = data[field]
    assert found["__typename"] == typename, found
    return found


def onboard(call: Api, partner: str, name: str, currency: str) -> None:
    since = format_time_us(now_us())
    answer(
        call(
            "operator",
            "operator/OnboardPartner",
            partnerId=partner,
            legalName=name,
            settlementCurrency=currency,
        ),
        "onboardPartner",
        "Recorded",
    )
    answer(
        call(
            "operator",
            "operator/PublishTerms",
            reference=f"terms:{partner}",
            partnerId=partner,
            effectiveFrom=since,
            issuancePricePerPoint="50",
            redemptionRatePerPoint="1",
            operatorFeeBps=150,
            breakageShare="0.5",
            cycle="daily",
            mode="multilateral",
        ),
        "publishTerms",
        "Recorded",
    )
    answer(
        call(
            "operator",
            "operator/PublishEarningRules",
            reference=f"rules:{partner}",
            partnerId=partner,
            effectiveFrom=since,
            currency=currency,
            pointsPerStep=1,
            stepMinor=100,
            capPoints=None,
        ),
        "publishEarningRules",
        "Recorded",
    )
    created = call(
        "operator", "operator/CreateApiKey", role="PARTNER", label=partner, partnerId=partner
    )
    call.keys[partner] = created["createApiKey"]["key"]


def redeem(call: Api, partner: str, reference: str, member: str, points: int) -> None:
    answer(
        call(
            partner,
            "partner/RedeemAtTill",
            reference=reference,
            member={"memberId": member},
            points=str(points),
        ),
        "redeem",
        "Redeemed",
    )


def compute(call: Api, period: str) -> dict[str, Any]:
    run: dict[str, Any] = call("finance", "finance/ComputeSettlement", period=period)[
        "computeSettlement"
    ]
    return run


def test_a_new_partner_is_paid_from_api_calls_alone(
    call: Api, seeded: Seeded, period_ends_now: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    onboard(call, "pharmacy", "Pharmacy GmbH", "EUR")
    bank = {"partnerId": "pharmacy", "legalName": "Pharmacy GmbH", "bic": PHARMACY_BIC}
    wrong = call(
        "operator", "operator/SetBankAccount", reference="b0", iban="DE02120300000000202052", **bank
    )
    assert answer(wrong, "setBankAccount", "InvalidRequest")["code"] == "INVALID_REQUEST"
    answer(
        call("operator", "operator/SetBankAccount", reference="b1", iban=PHARMACY_IBAN, **bank),
        "setBankAccount",
        "Recorded",
    )
    # Points the grocer issued (RUB), spent at the pharmacy (EUR): grocer owes it in EUR.
    redeem(call, "pharmacy", "ph-1", "M003", 40)
    redeem(call, "pharmacy", "ph-2", "M004", 25)

    period = "2031-01-01"
    period_ends_now(period)
    refused = call.raw("finance", "finance/ComputeSettlement", period=period)
    [error] = refused["errors"]
    assert error["extensions"]["code"] == "BAD_USER_INPUT", refused
    assert "settlement_input_missing" in error["message"]
    missing = error["extensions"]["problems"]
    assert missing and all(
        (p["code"], p["currency"], p["quoteCurrency"]) == ("FX_RATE_MISSING", "EUR", "RUB")
        for p in missing
    ), missing
    assert "grocer" in {p["party"] for p in missing}

    rate = {"runId": period, "baseCurrency": "EUR", "quoteCurrency": "RUB", "rate": "98.25"}
    bad_date = call(
        "finance",
        "finance/RecordFxRate",
        reference="fx0",
        source="CBR",
        rateDate="2030-02-30",
        **rate,
    )
    answer(bad_date, "recordFxRate", "InvalidRequest")
    answer(
        call(
            "finance",
            "finance/RecordFxRate",
            reference="fx1",
            source="CBR",
            rateDate="2030-12-31",
            **rate,
        ),
        "recordFxRate",
        "Recorded",
    )
    period_ends_now(period)
    run = compute(call, period)
    assert run["warnings"] == [], run
    assert run["computedBy"].startswith("key:")
    # A rate recorded once the run is cut would not be read: refused, said why.
    late = call(
        "finance",
        "finance/RecordFxRate",
        reference="fx2",
        source="CBR",
        rateDate="2031-01-01",
        **rate,
    )
    answer(late, "recordFxRate", "PeriodSettled")

    # Four eyes by principals: the computing key may not approve; another finance key may.
    same = call("finance", "finance/ApproveSettlement", runId=run["runId"])
    answer(same, "approveSettlement", "SameApprover")
    approved = call("finance2", "finance/ApproveSettlement", runId=run["runId"])
    answer(approved, "approveSettlement", "Recorded")
    runs = call("finance", "finance/SettlementRuns")["settlementRuns"]
    [stored] = [r for r in runs if r["runId"] == run["runId"]]
    assert stored["approvedBy"].startswith("key:") and stored["approvedBy"] != run["computedBy"]

    # The payment file, from the API too: refused until the clearing account is set, and
    # for a past date; then valid, holding the pharmacy, a new message id each time.
    tomorrow = (date.today() + timedelta(days=1)).isoformat()
    for name in ("NAME", "IBAN", "BIC"):
        monkeypatch.delenv(f"COALITION_CLEARING_{name}", raising=False)
    unset = call("finance", "finance/PaymentFile", runId=run["runId"], executionDate=tomorrow)
    assert "COALITION_CLEARING" in answer(unset, "paymentFile", "SettlementInputMissing")["message"]
    monkeypatch.setenv("COALITION_CLEARING_NAME", CLEARING.name)
    monkeypatch.setenv("COALITION_CLEARING_IBAN", CLEARING.iban)
    monkeypatch.setenv("COALITION_CLEARING_BIC", CLEARING.bic)
    past = call("finance", "finance/PaymentFile", runId=run["runId"], executionDate="2020-01-01")
    assert "in the past" in answer(past, "paymentFile", "InvalidRequest")["message"]
    foreign = call.raw("pharmacy", "finance/PaymentFile", runId=run["runId"])
    assert foreign["errors"] and not (foreign.get("data") or {}).get("paymentFile"), foreign
    first = answer(
        call("finance", "finance/PaymentFile", runId=run["runId"], executionDate=tomorrow),
        "paymentFile",
        "PaymentFile",
    )
    again = answer(
        call("finance", "finance/PaymentFile", runId=run["runId"]), "paymentFile", "PaymentFile"
    )
    assert first["messageId"] != again["messageId"]
    assert first["endToEndIds"] == again["endToEndIds"] and first["endToEndIds"]
    assert first["executionDate"] == tomorrow == again["executionDate"]
    document = first["content"].encode()
    assert PHARMACY_IBAN.encode() in document and b"Pharmacy GmbH" in document
    assert b"<Ccy>EUR</Ccy>" in document or b'Ccy="EUR"' in document

    # Each payment confirmed by its end-to-end id (the file's and the payers' own): paid.
    payments = json.loads(run["runJson"])["payments"]
    assert set(first["endToEndIds"]) <= {p["end_to_end_id"] for p in payments}
    for payment in payments:
        confirmed = call(
            "finance",
            "finance/ConfirmPayment",
            runId=run["runId"],
            endToEndId=payment["end_to_end_id"],
        )
        answer(confirmed, "confirmPayment", "Recorded")
    runs = call("finance", "finance/SettlementRuns")["settlementRuns"]
    assert {r["runId"]: r["status"] for r in runs}[run["runId"]] == "paid"

    mine = call("pharmacy", "partner/MyRuns")["myRuns"]
    assert [(r["runId"], r["status"]) for r in mine] == [(run["runId"], "paid")]
    assert sorted(mine[0]["statementFormats"]) == ["csv", "json", "pdf"]


def test_a_party_without_a_bank_account_is_named_and_approval_refused(
    call: Api, seeded: Seeded, period_ends_now: Any
) -> None:
    onboard(call, "bakery", "Bakery LLC", "RUB")
    redeem(call, "bakery", "bk-1", "M002", 30)  # the coalition owes the bakery: to be paid
    period = "2031-02-01"
    period_ends_now(period)
    run = compute(call, period)
    assert [(w["code"], w["party"], w["currency"]) for w in run["warnings"]] == [
        ("NO_BANK_ACCOUNT", "bakery", "RUB")
    ], run
    assert "bakery" in run["warnings"][0]["message"]
    refused = answer(
        call("finance2", "finance/ApproveSettlement", runId=run["runId"]),
        "approveSettlement",
        "PartyNotPayable",
    )
    assert refused["code"] == "PARTY_NOT_PAYABLE" and "bakery" in refused["message"]
    assert [(p["code"], p["party"]) for p in refused["problems"]] == [("NO_BANK_ACCOUNT", "bakery")]
    [stored] = [
        r
        for r in call("finance", "finance/SettlementRuns")["settlementRuns"]
        if r["runId"] == run["runId"]
    ]
    assert stored["status"] == "computed"
    # The use case itself refuses, not only the mutation that asks first.
    with psycopg.connect(seeded.db_url, autocommit=True) as conn:
        direct = settle.approve(Coalition(), conn, run["runId"], "key:someone-else")
    assert isinstance(direct, Refusal) and direct.code is RefusalCode.PARTY_NOT_PAYABLE, direct

    # Recorded now, the account is after the run's cut: a plain recompute keeps the cut,
    # a correction withdraws the unapproved run and computes it again at a new one.
    answer(
        call(
            "operator",
            "operator/SetBankAccount",
            reference="bank:bakery",
            partnerId="bakery",
            legalName="Bakery LLC",
            iban="DE89370400440532013000",
            bic="COBADEFFXXX",
        ),
        "setBankAccount",
        "Recorded",
    )
    assert compute(call, period)["warnings"], "the same cut: still without the account"
    recut: dict[str, Any] = call(
        "finance", "finance/ComputeSettlement", period=period, correction=True
    )["computeSettlement"]
    assert (recut["runId"], recut["revision"], recut["warnings"]) == (f"{period}-r2", 2, [])
    assert json.loads(recut["runJson"])["positions"] == json.loads(run["runJson"])["positions"]
    answer(
        call("finance2", "finance/ApproveSettlement", runId=recut["runId"]),
        "approveSettlement",
        "Recorded",
    )
    statuses = {
        r["runId"]: r["status"] for r in call("finance", "finance/SettlementRuns")["settlementRuns"]
    }
    assert (statuses[run["runId"]], statuses[recut["runId"]]) == ("superseded", "approved")


def test_partners_list_only_their_own_runs_and_statements(
    call: Api, seeded: Seeded, period_ends_now: Any
) -> None:
    onboard(call, "pharmacy", "Pharmacy GmbH", "RUB")
    bank = {"iban": PHARMACY_IBAN, "bic": PHARMACY_BIC, "legalName": "Pharmacy GmbH"}
    answer(
        call("operator", "operator/SetBankAccount", reference="b1", partnerId="pharmacy", **bank),
        "setBankAccount",
        "Recorded",
    )
    redeem(call, "pharmacy", "ph-1", "M003", 40)
    first = "2031-03-01"
    period_ends_now(first)
    run_1 = compute(call, first)
    answer(
        call("finance2", "finance/ApproveSettlement", runId=run_1["runId"]),
        "approveSettlement",
        "Recorded",
    )
    redeem(call, "airline", "air-1", "M004", 20)  # the pharmacy has no part in the next run
    second = "2031-03-02"
    period_ends_now(second)
    run_2 = compute(call, second)

    with psycopg.connect(seeded.db_url, autocommit=True) as conn:
        parties: dict[str, set[str]] = {}
        for run_id, party in conn.execute("SELECT DISTINCT run_id, party FROM coalition_statement"):
            parties.setdefault(party, set()).add(run_id)
    assert parties["pharmacy"] == {run_1["runId"]}
    assert run_2["runId"] in parties["airline"]
    for partner in ("pharmacy", "grocer", "airline", "fuel"):
        listed = call(partner, "partner/MyRuns", first=100)["myRuns"]
        assert {r["runId"] for r in listed} == parties.get(partner, set()), partner
    # Another partner's statement is no statement here; one's own is.
    foreign = call(
        "pharmacy", "partner/MyStatement", runId=run_2["runId"], party="airline", format="csv"
    )
    assert foreign["statement"] is None
    own = call("pharmacy", "partner/MyStatement", runId=run_1["runId"], party="pharmacy")
    assert own["statement"]["party"] == "pharmacy"
    # A partner key lists runs only as a partner; myRuns is no reader's query.
    forbidden = call.raw("auditor", "partner/MyRuns")
    assert forbidden["errors"][0]["extensions"]["code"] == "FORBIDDEN"
