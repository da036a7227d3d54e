"""A full day of the coalition over real HTTP, driven by the `gql` client with the
operation documents under graphql/operations/ (so those documents are exercised, not only
validated): the operator onboards a partner, members enrol and earn at two partners and
redeem at a third, holds and refunds happen, finance settles with four eyes and confirms
the payments, partners fetch statements and reconcile, and an auditor pages through the
journal and checks an inclusion and a consistency proof against signed checkpoints.
At the end the database verifies from scratch."""

from __future__ import annotations

import base64
import csv
import io
import json
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import psycopg
import pytest
from gql import Client, GraphQLRequest, gql
from gql.client import SyncClientSession
from gql.transport.httpx import HTTPXTransport
from starlette.applications import Starlette

from coalition.api.app import create_app
from coalition.checkpointer import Checkpointer
from coalition.settings import Settings
from ledger import reads
from ledger.checkpoint import Checkpoint, open_checkpoint
from ledger.checkpoint_log import CheckpointPolicy
from ledger.merkle_hash import leaf_hash
from ledger.merkle_verify import ProofError, verify_consistency, verify_inclusion
from ledger.receipt_check import check_receipt
from ledger.signed_note import Signer, Verifier
from ledger.timefmt import format_time_us, now_us
from ledger.verify_db import verify_database

if TYPE_CHECKING:
    from tests.e2e.conftest import Seeded

ROOT = Path(__file__).resolve().parents[2]
OPERATIONS = ROOT / "graphql" / "operations"
SDL = (ROOT / "graphql" / "schema.graphql").read_text()
HOUR_US = 3_600_000_000
AUDIT_PAGE_SIZE = 16  # small, so the auditor really pages
PARTNERS = ("grocer", "fuel", "airline")
TERMS = {
    "effectiveFrom": "2020-01-01T00:00:00.000000Z",
    "issuancePricePerPoint": "50",
    "redemptionRatePerPoint": "95",
    "operatorFeeBps": 150,
    "breakageShare": "0.5",
    "cycle": "monthly",
    "mode": "multilateral",
}


def operation(path: str) -> GraphQLRequest:
    """An operation document from the repository, e.g. ``partner/PostPurchase``."""
    return gql((OPERATIONS / f"{path}.graphql").read_text())


class Caller:
    """One API key's gql session; every document is validated against the SDL first."""

    def __init__(self, session: SyncClientSession) -> None:
        self.session = session

    def __call__(self, path: str, **variables: Any) -> dict[str, Any]:
        request = GraphQLRequest(operation(path), variable_values=variables)
        result: dict[str, Any] = self.session.execute(request)
        return result


@dataclass
class Day:
    url: str
    db_url: str
    verifier: Verifier
    stack: ExitStack  # closes every session at the end of the day
    callers: dict[str, Caller]

    def __getitem__(self, who: str) -> Caller:
        return self.callers[who]

    def caller(self, key: str) -> Caller:
        transport = HTTPXTransport(
            url=f"{self.url}/graphql", headers={"Authorization": f"Bearer {key}"}, timeout=30
        )
        return Caller(self.stack.enter_context(Client(transport=transport, schema=SDL)))


@pytest.fixture()
def day(
    seeded: Seeded,
    settings: Settings,
    verifier: Verifier,
    serve: Callable[[Starlette], str],
) -> Iterator[Day]:
    url = serve(create_app(settings, seeded.db_url))
    with ExitStack() as stack:
        day = Day(url, seeded.db_url, verifier, stack, {})
        day.callers = {who: day.caller(key) for who, key in seeded.keys.items()}
        yield day


def ok(result: dict[str, Any], field: str, typename: str) -> dict[str, Any]:
    """The union answer under ``field``, which must be ``typename`` (else show the refusal)."""
    answer: dict[str, Any] = result[field]
    assert answer["__typename"] == typename, answer
    return answer


def refused(result: dict[str, Any], field: str, code: str) -> dict[str, Any]:
    answer: dict[str, Any] = result[field]
    assert answer.get("code") == code, answer
    assert answer["__typename"] == "".join(p.title() for p in code.split("_"))
    return answer


def test_a_full_day_of_the_coalition(day: Day, signer: Signer, period: str) -> None:
    with psycopg.connect(day.db_url, autocommit=True) as conn:
        # The checkpointer signs the seeded journal overnight: the day's first checkpoint.
        checkpointer = Checkpointer(day.db_url, signer, CheckpointPolicy(1, None))
        overnight = checkpointer.tick(conn)
        assert overnight is not None
    day_start_us = now_us()
    before = {p: day["finance"]("partner/MyPosition", partnerId=p)["partner"] for p in PARTNERS}

    pharmacy_key = onboard_a_partner(day)
    till_records = a_day_at_the_tills(day)
    reconcile_at_close(day, till_records)
    run_id = settle_the_period(day, period)
    statements(day, run_id)
    partner_positions_moved(day, before)
    kpis_of_the_day(day, day_start_us)
    signed = audit(day, overnight.tree_size)
    pharmacy_key_revoked(day, pharmacy_key)

    # The stored journal replays from scratch, and to the root the log signed at the cut.
    with psycopg.connect(day.db_url, autocommit=True) as conn:
        verified = verify_database(conn, sizes_wanted=[signed.tree_size])
        assert verified.tree_size == reads.head(conn).tree_size
        assert verified.roots_at[signed.tree_size] == signed.root_hash


def onboard_a_partner(day: Day) -> str:
    op = day["operator"]
    ok(
        op(
            "operator/OnboardPartner",
            partnerId="pharmacy",
            legalName="Pharmacy LLC",
            settlementCurrency="RUB",
        ),
        "onboardPartner",
        "Recorded",
    )
    again = op(
        "operator/OnboardPartner", partnerId="pharmacy", legalName="Other", settlementCurrency="RUB"
    )
    refused(again, "onboardPartner", "PARTNER_EXISTS")
    ok(
        op("operator/PublishTerms", reference="terms:pharmacy:1", partnerId="pharmacy", **TERMS),
        "publishTerms",
        "Recorded",
    )
    ok(
        op(
            "operator/PublishEarningRules",
            reference="rules:pharmacy:1",
            partnerId="pharmacy",
            effectiveFrom="2020-01-01T00:00:00.000000Z",
            currency="RUB",
            pointsPerStep=1,
            stepMinor=10_000,
            capPoints=None,
        ),
        "publishEarningRules",
        "Recorded",
    )
    created = op(
        "operator/CreateApiKey", role="PARTNER", label="pharmacy till", partnerId="pharmacy"
    )
    key = created["createApiKey"]["key"]
    assert created["createApiKey"]["info"]["role"] == "PARTNER"
    assert created["createApiKey"]["info"]["revoked"] is False
    pharmacy = day.caller(key)
    me = pharmacy("partner/WhoAmI")["me"]
    assert (me["role"], me["partnerId"]) == ("PARTNER", "pharmacy")
    assert me["keyId"] == created["createApiKey"]["info"]["keyId"]

    # Suspended, the pharmacy's till is refused; reactivated, it trades.
    ok(
        op("operator/SuspendPartner", reference="suspend:pharmacy:1", partnerId="pharmacy"),
        "setPartnerStatus",
        "Recorded",
    )
    purchase = {"member": {"memberId": "M003"}, "purchaseMinor": 100_000, "currency": "RUB"}
    suspended = pharmacy("partner/PostPurchase", reference="ph-1", **purchase)
    refused(suspended, "earn", "PARTNER_SUSPENDED")
    ok(
        op(
            "operator/SuspendPartner",
            reference="resume:pharmacy:1",
            partnerId="pharmacy",
            status="active",
        ),
        "setPartnerStatus",
        "Recorded",
    )
    earned = ok(pharmacy("partner/PostPurchase", reference="ph-1", **purchase), "earn", "Earned")
    assert earned["points"] == "10"
    return str(key)


def a_day_at_the_tills(day: Day) -> list[dict[str, Any]]:
    """Returns fuel's own till records of the day, as its till system would keep them."""
    grocer, fuel, airline = day["grocer"], day["fuel"], day["airline"]
    for member in ("D001", "D002"):
        ok(grocer("partner/EnrollMember", memberId=member), "enrollMember", "Recorded")
    again = ok(grocer("partner/EnrollMember", memberId="D001"), "enrollMember", "Recorded")
    assert again["replayed"] is True
    ok(grocer("partner/LinkCard", memberId="D001", cardNumber="G-D001"), "linkCard", "Recorded")
    ok(fuel("partner/LinkCard", memberId="D002", cardNumber="F-D002"), "linkCard", "Recorded")

    # Earn at two partners: 1 point per 100.00 RUB.
    by_card = {"cardNumber": "G-D001"}
    g1 = ok(
        grocer(
            "partner/PostPurchase",
            reference="g-1",
            member=by_card,
            purchaseMinor=1_000_000,
            currency="RUB",
            category="fresh",
        ),
        "earn",
        "Earned",
    )
    assert (g1["points"], g1["replayed"]) == ("100", False)
    replay = grocer(
        "partner/PostPurchase",
        reference="g-1",
        member=by_card,
        purchaseMinor=1_000_000,
        currency="RUB",
        category="fresh",
    )
    assert ok(replay, "earn", "Earned") == {**g1, "replayed": True}
    changed = grocer(
        "partner/PostPurchase",
        reference="g-1",
        member=by_card,
        purchaseMinor=2_000_000,
        currency="RUB",
        category="fresh",
    )
    refused(changed, "earn", "DUPLICATE_REFERENCE")
    refused(
        grocer(
            "partner/PostPurchase",
            reference="g-2",
            member=by_card,
            purchaseMinor=1_000,
            currency="EUR",
        ),
        "earn",
        "CURRENCY_NOT_ACCEPTED",
    )
    records = []
    for ref, member, purchase_minor in (("f-1", "D002", 500_000), ("f-2", "D001", 300_000)):
        earned = ok(
            fuel(
                "partner/PostPurchase",
                reference=ref,
                member={"memberId": member},
                purchaseMinor=purchase_minor,
                currency="RUB",
            ),
            "earn",
            "Earned",
        )
        records.append(_record(ref, "earn", member, int(earned["points"]), purchase_minor))

    # Redeem at a third partner: FEFO takes grocer's (older) lot before fuel's.
    a1 = ok(
        airline("partner/RedeemAtTill", reference="a-1", member={"memberId": "D001"}, points=120),
        "redeem",
        "Redeemed",
    )
    assert {x["issuer"]: x["points"] for x in a1["byIssuer"]} == {"grocer": "100", "fuel": "20"}
    short = airline(
        "partner/RedeemAtTill", reference="a-2", member={"memberId": "D002"}, points=1_000
    )
    refused(short, "redeem", "INSUFFICIENT_POINTS")

    # A hold captured in part, another voided; a partner cannot touch another's hold.
    hold = ok(
        airline("partner/AuthoriseHold", reference="h-1", member={"memberId": "D002"}, points=40),
        "authorise",
        "Authorised",
    )
    foreign = fuel("partner/CaptureHold", reference="steal", holdSeq=hold["holdSeq"], points=1)
    refused(foreign, "capture", "UNKNOWN_HOLD")
    captured = ok(
        airline("partner/CaptureHold", reference="c-1", holdSeq=hold["holdSeq"], points=25),
        "capture",
        "Redeemed",
    )
    assert captured["points"] == "25"
    other = ok(
        airline(
            "partner/AuthoriseHold",
            reference="h-2",
            member={"memberId": "D002"},
            points=10,
            holdSeconds=60,
        ),
        "authorise",
        "Authorised",
    )
    ok(airline("partner/VoidHold", reference="v-1", holdSeq=other["holdSeq"]), "void", "Voided")
    again_void = airline("partner/VoidHold", reference="v-2", holdSeq=other["holdSeq"])
    refused(again_void, "void", "HOLD_NOT_ACTIVE")

    # Refunds: 40% of D002's fuel purchase claws back 20 points; 5 redeemed points return.
    refund = ok(
        fuel("partner/RefundPurchase", reference="fr-1", earnReference="f-1", refundMinor=200_000),
        "refundPurchase",
        "Refunded",
    )
    assert (refund["points"], refund["debtPoints"]) == ("20", "0")
    records.append(_record("fr-1", "refund", "D002", 20, 200_000))
    too_much = fuel(
        "partner/RefundPurchase", reference="fr-2", earnReference="f-1", refundMinor=300_001
    )
    refused(too_much, "refundPurchase", "REFUND_EXCEEDS_ORIGINAL")
    ok(
        airline("partner/RefundRedemption", reference="ar-1", redemptionReference="a-1", points=5),
        "refundRedemption",
        "Refunded",
    )
    refused(
        grocer("partner/RefundRedemption", reference="x", redemptionReference="a-1", points=1),
        "refundRedemption",
        "UNKNOWN_TRANSACTION",
    )

    # D001: +100 +30 −120 +5; D002: +50 −25 −20, nothing held after the void.
    d1 = day["airline"]("partner/MemberBalance", memberId="D001")["member"]
    d2 = day["fuel"]("partner/MemberBalance", memberId="D002", historyFirst=50)["member"]
    assert (d1["balancePoints"], d1["heldPoints"], d1["debtPoints"]) == ("15", "0", "0")
    assert (d2["balancePoints"], d2["heldPoints"], d2["availablePoints"]) == ("5", "0", "5")
    # Balances are coalition-wide, but a partner sees only the lots it issued itself:
    # others' lots would say when and where the member shopped elsewhere.
    assert {lot["origin"] for lot in d1["lots"]} <= {"airline"}
    seen = 0
    for partner in ("grocer", "fuel", "airline"):
        lots = day[partner]("partner/MemberBalance", memberId="D001")["member"]["lots"]
        assert {lot["origin"] for lot in lots} <= {partner}
        seen += sum(int(lot["remaining"]) for lot in lots)
    assert seen == 15  # together, the issuers' own views cover the member's points
    # A partner sees only its own part of a member's history.
    assert {line["kind"] for line in d2["history"]} == {"earn", "refund_earn"}
    return records


def _record(ref: str, kind: str, member: str, points: int, amount_minor: int) -> dict[str, Any]:
    return {
        "ref": ref,
        "kind": kind,
        "member": member,
        "points": points,
        "amount_minor": amount_minor,
        "time": format_time_us(now_us()),
    }


def reconcile_at_close(day: Day, records: list[dict[str, Any]]) -> None:
    theirs = [*records, _record("f-offline", "earn", "D001", 7, 70_000)]
    window = {
        "fromTime": format_time_us(now_us() - HOUR_US),
        "toTime": format_time_us(now_us() + HOUR_US),
    }
    answer = day["fuel"](
        "partner/DailyReconciliation", records=json.dumps(theirs), format="json", **window
    )["submitReconciliation"]
    assert answer["partnerId"] == "fuel"
    assert (answer["matched"], answer["missingOurs"], answer["missingTheirs"]) == (3, 1, 0)
    assert json.loads(answer["resultJson"])["missing_ours"] == ["f-offline"]


def settle_the_period(day: Day, period: str) -> str:
    computed = day["finance"]("finance/ComputeSettlement", period=period)["computeSettlement"]
    run_id = computed["runId"]
    assert (computed["status"], computed["approvedBy"]) == ("computed", None)
    run = json.loads(computed["runJson"])
    assert sum(p["net_minor"] for p in run["positions"]) == 0
    redemption = {
        (x["payer"], x["payee"]): x["points"] for x in run["lines"] if x["reason"] == "redemption"
    }
    # Seed: 10 of grocer's points at airline; today 100 more. Fuel: 20 − 5 refunded + 25.
    assert redemption == {("grocer", "airline"): 110, ("fuel", "airline"): 40}

    same = day["finance"]("finance/ApproveSettlement", runId=run_id)
    refused(same, "approveSettlement", "SAME_APPROVER")
    ok(day["finance2"]("finance/ApproveSettlement", runId=run_id), "approveSettlement", "Recorded")
    twice = day["finance2"]("finance/ApproveSettlement", runId=run_id)
    refused(twice, "approveSettlement", "RUN_NOT_COMPUTED")

    payments = run["payments"]
    assert payments, "a run with cross-partner redemptions has payments"
    for payment in payments:
        confirmed = day["finance2"](
            "finance/ConfirmPayment", runId=run_id, endToEndId=payment["end_to_end_id"]
        )
        ok(confirmed, "confirmPayment", "Recorded")
    unknown = day["finance2"]("finance/ConfirmPayment", runId=run_id, endToEndId="nope")
    refused(unknown, "confirmPayment", "UNKNOWN_PAYMENT")

    [listed] = day["auditor"]("finance/SettlementRuns")["settlementRuns"]
    keys = {who: day[who]("partner/WhoAmI")["me"]["keyId"] for who in ("finance", "finance2")}
    assert listed["runId"] == run_id and listed["status"] == "paid"
    assert listed["computedBy"] == f"key:{keys['finance']}"
    assert listed["approvedBy"] == f"key:{keys['finance2']}"
    return str(run_id)


def statements(day: Day, run_id: str) -> None:
    run = json.loads(
        day["finance"]("finance/SettlementRuns", first=1)["settlementRuns"][0]["runJson"]
    )
    mine = day["grocer"]("partner/MyStatement", runId=run_id, party="grocer")["statement"]
    statement = json.loads(mine["content"])
    assert (statement["run"], statement["party"], mine["format"]) == (run_id, "grocer", "json")
    expected_net = [p for p in run["positions"] if p["party"] == "grocer"]
    assert [(n["currency"], n["net_minor"]) for n in statement["net"]] == [
        (p["currency"], p["net_minor"]) for p in expected_net
    ]
    own_lines = [x for x in run["lines"] if "grocer" in (x["payer"], x["payee"])]
    assert len(statement["lines"]) == len(own_lines) > 0

    as_csv = day["grocer"]("partner/MyStatement", runId=run_id, party="grocer", format="csv")
    rows = list(csv.reader(io.StringIO(as_csv["statement"]["content"])))
    assert rows[0][:2] == ["statement", statement["statement"]]
    redemption_rows = [r for r in rows if r[1:4] == ["airline", "redemption", "payable"]]
    assert [r[4] for r in redemption_rows] == ["110"]

    # Another partner's statement is not there for grocer; finance sees any party's.
    assert day["grocer"]("partner/MyStatement", runId=run_id, party="airline")["statement"] is None
    theirs = day["finance"]("finance/Statement", runId=run_id, party="airline", format="pdf")
    assert base64.b64decode(theirs["statement"]["content"]).startswith(b"%PDF")


def partner_positions_moved(day: Day, before: dict[str, dict[str, Any]]) -> None:
    after = {p: day[p]("partner/MyPosition", partnerId=p)["partner"] for p in PARTNERS}

    def moved(partner: str, field: str) -> int:
        return int(after[partner][field]) - int(before[partner][field])

    assert moved("grocer", "issuedPoints") == 100
    assert moved("fuel", "issuedPoints") == 80 - 20  # two purchases, one partly refunded
    assert moved("airline", "redeemedAtPartnerPoints") == 120 - 5 + 25
    assert moved("grocer", "redeemedElsewherePoints") == 100
    assert moved("fuel", "redeemedElsewherePoints") == 20 - 5 + 25


def kpis_of_the_day(day: Day, day_start_us: int) -> None:
    kpis = day["finance"](
        "finance/Kpis",
        fromTime=format_time_us(day_start_us),
        toTime=format_time_us(now_us() + HOUR_US),
    )["kpis"]
    assert kpis["purchases"] == 4  # g-1, f-1, f-2 and the pharmacy's
    flow = {(c["issuer"], c["redeemedAt"]) for c in kpis["flow"]}
    assert {("grocer", "airline"), ("fuel", "airline")} <= flow


def audit(day: Day, overnight_size: int) -> Checkpoint:
    auditor = day["auditor"]
    nodes: list[dict[str, Any]] = []
    after = None
    while True:
        page = auditor("auditor/JournalPage", first=AUDIT_PAGE_SIZE, after=after)
        page = page["journalEntries"]
        nodes.extend(edge["node"] for edge in page["edges"])
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    with psycopg.connect(day.db_url, autocommit=True) as conn:
        size = reads.head(conn).tree_size
    assert [int(n["seq"]) for n in nodes] == list(range(size))
    for node in nodes:  # the canonical text as served hashes to the stored leaf
        assert leaf_hash(node["canonicalJson"].encode()).hex() == node["leafHashHex"]

    # The refund at fuel: found by kind, fetched by seq, proven in the signed tree.
    [refund] = [n for n in nodes if n["kind"] == "refund_earn" and n["refKey"] == "fr-1"]
    seq = int(refund["seq"])
    assert auditor("auditor/EntryBySeq", seq=refund["seq"])["entry"] == refund
    proof = auditor("auditor/InclusionProof", seq=refund["seq"])["inclusionProof"]
    checkpoint = open_checkpoint(proof["checkpoint"]["signedNote"].encode(), day.verifier)
    assert checkpoint.tree_size == int(proof["treeSize"]) > seq
    assert checkpoint.root_hash.hex() == proof["checkpoint"]["rootHashHex"]
    path = [base64.b64decode(h) for h in proof["auditPathBase64"]]
    leaf = leaf_hash(refund["canonicalJson"].encode())
    verify_inclusion(leaf, seq, checkpoint.tree_size, path, checkpoint.root_hash)
    with pytest.raises(ProofError):  # the same proof does not fit another entry
        verify_inclusion(leaf, seq + 1, checkpoint.tree_size, path, checkpoint.root_hash)
    receipt = check_receipt(proof["receipt"].encode(), day.verifier)
    assert receipt.leaf_index == seq and receipt.entry_bytes == refund["canonicalJson"].encode()

    # Overnight and settlement checkpoints: the later tree extends the earlier one.
    listed = auditor("auditor/Checkpoints")["checkpoints"]
    opened = [open_checkpoint(c["signedNote"].encode(), day.verifier) for c in listed]
    assert [c.tree_size for c in opened] == [overnight_size, checkpoint.tree_size]
    old, new = opened
    consistency = auditor(
        "auditor/ConsistencyProof", fromSize=str(old.tree_size), toSize=str(new.tree_size)
    )["consistencyProof"]
    hashes = [base64.b64decode(h) for h in consistency]
    verify_consistency(old.tree_size, new.tree_size, hashes, old.root_hash, new.root_hash)
    assert _published_checkpoint(day) == new
    return new


def _published_checkpoint(day: Day) -> Checkpoint:
    published = httpx.get(f"{day.url}/checkpoint", timeout=10)
    assert published.status_code == 200
    return open_checkpoint(published.content, day.verifier)


def pharmacy_key_revoked(day: Day, pharmacy_key: str) -> None:
    key_id = pharmacy_key.split("_")[1]
    assert day["operator"]("operator/RevokeApiKey", keyId=key_id) == {"revokeApiKey": True}
    answer = httpx.post(
        f"{day.url}/graphql",
        json={"query": operation("partner/WhoAmI").payload["query"]},
        headers={"Authorization": f"Bearer {pharmacy_key}"},
        timeout=10,
    ).json()
    assert answer["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
