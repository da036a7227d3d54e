"""The authorisation matrix: every query and mutation × every role × own vs foreign data,
over HTTP against the real app.

The cases are generated from the schema the code builds, so a field added without an
entry in EXPECTED (the rules) and REQUESTS (how to ask) fails here. The rules:

- allowed: an answer without errors (a refusal union member is an answer too);
- forbidden: a FORBIDDEN error, no data, and nothing written;
- own-only (partners): the partner's own data is answered; another partner's data is
  answered exactly like an id that does not exist (identical JSON once that id is
  masked), while that other partner, asking the same, does get an answer — so the
  comparison is never between two empty answers;
- scoped (partners): the answer is coalition-wide (a member's points) but never names
  another partner's journal entries — by seq or by lot id (``<opening seq>:<n>``) — which
  that partner itself does see in the same answer;
- no key or a revoked key: UNAUTHENTICATED, no data, and nothing written.

Besides, no answer a partner key gets to a query names an entry outside its own scope.

One server and one database serve the whole module (fast); every case leaves what others
look at intact (fresh references, its own holds), so the cases pass in any order.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import psycopg
import pytest
import uvicorn

from coalition import settle, webhooks
from coalition.api.app import create_app
from coalition.api.ratelimit import RateLimiter
from coalition.api.schema import build_schema
from coalition.api_keys import create_key, revoke_key
from coalition.context import Coalition
from coalition.database import psycopg_url
from coalition.earn import earn_points
from coalition.members import enroll_member, link_card
from coalition.outcomes import Refusal
from coalition.partners import onboard_partner
from coalition.redeem import authorise, redeem_points
from coalition.seed import seed_if_empty
from coalition.settings import Settings
from coalition.webhook_secrets import WebhookKey
from coalition.webhook_urls import UrlPolicy
from ledger.signed_note import Signer, format_signer_key
from ledger.timefmt import now_us

ORIGIN = "ledger.authz-matrix.example"
SERVER_START_SECONDS_MAX = 15

ALLOWED, FORBIDDEN, OWN_ONLY, SCOPED = "allowed", "forbidden", "own-only", "scoped"
ROLES = ("partner", "auditor", "finance", "operator")
CALLERS = (
    "partner-own",
    "partner-foreign",
    "auditor",
    "finance",
    "operator",
    "no-key",
    "revoked-key",
)
OWN, FOREIGN, MISSING = "own", "foreign", "missing"  # whose data a request names

# The partner whose key asks ("own") and the other partner whose data it must not reach.
ME, OTHER = "grocer", "airline"
MISSING_SEQ = 9_999_999_999
MISSING_ID = "no-such-thing"
ALL_TIME = ("2000-01-01T00:00:00.000000Z", "2100-01-01T00:00:00.000000Z")


def _roles(partner: str, auditor: str, finance: str, operator: str) -> dict[str, str]:
    return {"partner": partner, "auditor": auditor, "finance": finance, "operator": operator}


A, F = ALLOWED, FORBIDDEN
EVERYONE = _roles(A, A, A, A)
READERS_ONLY = _roles(F, A, A, A)
TILL = _roles(OWN_ONLY, F, F, F)
OPERATOR_ONLY = _roles(F, F, F, A)
FINANCE_ONLY = _roles(F, F, A, F)

EXPECTED: dict[str, dict[str, str]] = {
    "Query.me": EVERYONE,
    "Query.member": _roles(SCOPED, A, A, A),
    "Query.partner": _roles(OWN_ONLY, A, A, A),
    "Query.journalEntries": _roles(OWN_ONLY, A, A, A),
    "Query.entry": _roles(OWN_ONLY, A, A, A),
    "Query.checkpoints": EVERYONE,
    "Query.inclusionProof": _roles(OWN_ONLY, A, A, A),
    "Query.consistencyProof": EVERYONE,
    "Query.kpis": READERS_ONLY,
    "Query.settlementRuns": READERS_ONLY,
    "Query.settlementRun": READERS_ONLY,
    "Query.partnerKpis": _roles(OWN_ONLY, A, A, A),
    "Query.myRuns": _roles(A, F, F, F),
    "Query.statement": _roles(OWN_ONLY, A, A, A),
    "Query.reconciliations": _roles(OWN_ONLY, A, A, A),
    "Query.paymentFile": FINANCE_ONLY,
    "Mutation.earn": TILL,
    "Mutation.redeem": TILL,
    "Mutation.authorise": TILL,
    "Mutation.capture": TILL,
    "Mutation.void": TILL,
    "Mutation.refundPurchase": TILL,
    "Mutation.refundRedemption": TILL,
    "Mutation.enrollMember": _roles(A, F, F, A),
    "Mutation.linkCard": _roles(A, F, F, F),
    "Mutation.eraseMember": OPERATOR_ONLY,
    "Mutation.onboardPartner": OPERATOR_ONLY,
    "Mutation.setPartnerStatus": OPERATOR_ONLY,
    "Mutation.publishTerms": OPERATOR_ONLY,
    "Mutation.publishEarningRules": OPERATOR_ONLY,
    "Mutation.createApiKey": OPERATOR_ONLY,
    "Mutation.revokeApiKey": OPERATOR_ONLY,
    "Mutation.computeSettlement": FINANCE_ONLY,
    "Mutation.approveSettlement": FINANCE_ONLY,
    "Mutation.confirmPayment": FINANCE_ONLY,
    "Mutation.setBankAccount": OPERATOR_ONLY,
    "Mutation.recordFxRate": FINANCE_ONLY,
    "Mutation.submitReconciliation": TILL,
    "Query.webhookEventTypes": EVERYONE,
    "Query.webhookSubscriptions": _roles(A, F, F, F),
    "Query.webhookDeliveries": _roles(OWN_ONLY, F, F, F),
    "Mutation.createWebhookSubscription": _roles(A, F, F, F),
    "Mutation.deleteWebhookSubscription": _roles(OWN_ONLY, F, F, F),
    "Mutation.reactivateWebhookSubscription": _roles(OWN_ONLY, F, F, F),
    "Query.redeemQuote": TILL,
    "Query.memberAsOf": _roles(SCOPED, A, A, A),
    "Query.partnerAsOf": _roles(OWN_ONLY, A, A, A),
    "Mutation.importBatch": TILL,
}


# --- the data the requests name ------------------------------------------------------


@dataclass(frozen=True)
class World:
    client: httpx.Client
    db_url: str
    keys: dict[str, str]  # me, other, auditor, finance, operator, revoked
    own_seq: int  # an entry in ME's scope
    foreign_seq: int  # an entry in OTHER's scope
    own_holds: dict[str, int]  # "capture"/"void" → a hold ME placed (one per use)
    foreign_hold: int  # a hold OTHER placed
    run_id: str  # a computed run with statements for ME and OTHER
    checkpoint_size: int
    spare_partner: str  # a partner only operator cases touch
    spare_key_id: str  # a key only the revokeApiKey case revokes


@dataclass(frozen=True)
class Call:
    document: str
    variables: dict[str, Any]
    ident: str = ""  # what differs between own, foreign and missing: masked to compare


Build = Callable[[World, str], Call]

# Per subject: own data, the other partner's, and an id nothing has.
OWN_EARN = {OWN: "seed-earn-1", FOREIGN: "other-earn-1", MISSING: MISSING_ID}
OWN_REDEMPTION = {OWN: "me-redeem-1", FOREIGN: "seed-redeem-1", MISSING: MISSING_ID}
CARDS = {OWN: "GROCER-0001", FOREIGN: "OTHER-0002", MISSING: "NO-SUCH-CARD"}
PARTNERS = {OWN: ME, FOREIGN: OTHER, MISSING: MISSING_ID}
RECORDS = {OWN: "seed-earn-2", FOREIGN: "seed-redeem-1", MISSING: MISSING_ID}
# References OTHER used and ME may reuse (no case names them as OTHER's data).
OTHER_ONLY_REFS = {
    "Mutation.earn": "other-earn-2",
    "Mutation.redeem": "other-redeem-2",
    "Mutation.authorise": "other-hold",
    # OTHER's card link's reference (card:<pseudonym>), filled in by _populate.
    "Mutation.refundPurchase": "",
}
ERASED_MEMBER = "ERASE-ME"  # only the eraseMember case names it


def _fresh(prefix: str = "authz") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def _today() -> str:
    # A period holds the entries of its label, and the world's are today's: today's run
    # (taken as ended, see _periods_end_now) has the entries and statements to check.
    return datetime.now(ZoneInfo(settle.timezone())).date().isoformat()


@pytest.fixture(scope="module", autouse=True)
def _periods_end_now() -> Iterator[None]:
    """The server runs in this process and keeps real time: only its check that a
    period is over is moved on."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(settle, "_period_over", lambda co, end_us: True)
        yield


def _seq(world: World, subject: str) -> str:
    return str({OWN: world.own_seq, FOREIGN: world.foreign_seq, MISSING: MISSING_SEQ}[subject])


def _hold(world: World, subject: str, use: str) -> str:
    seq = {OWN: world.own_holds[use], FOREIGN: world.foreign_hold, MISSING: MISSING_SEQ}
    return str(seq[subject])


REFUSAL = "... on Refusal { code message }"
RECORDED = f"{{ __typename ... on Recorded {{ seq replayed }} {REFUSAL} }}"
REDEEMED = (
    f"{{ __typename ... on Redeemed {{ seq points byIssuer {{ issuer points }} }} {REFUSAL} }}"
)
REFUNDED = f"{{ __typename ... on Refunded {{ seq points debtPoints }} {REFUSAL} }}"
RUN = "{ runId period revision status startSeq endSeq computedBy approvedBy }"


def _card_call(document: str, points_name: str, points: str) -> Build:
    def build(world: World, subject: str) -> Call:
        variables = {"ref": _fresh(), "card": CARDS[subject], points_name: points}
        return Call(document, variables, CARDS[subject])

    return build


def _batch(card: str) -> str:
    lines = [
        {"type": "header", "format": "coalition-batch/1", "batch_id": "authz-batch"},
        {"type": "earn", "ref": "authz-batch-1", "card": card, "amount": 50_000, "currency": "RUB"},
        {
            "type": "trailer",
            "record_count": 1,
            "purchase_minor": 50_000,
            "refund_minor": 0,
            "points": 0,
        },
    ]
    return "".join(json.dumps(line) + "\n" for line in lines)


def _query(document: str, **variables: Any) -> Build:
    return lambda world, subject: Call(document, dict(variables))


def _subscription(world: World, subject: str) -> str:
    """A fresh webhook subscription of ME (own) or OTHER (foreign), or an id nobody has.
    Sealed under a key of the test's own: these cases never deliver."""
    if subject == MISSING:
        return "whs_missing"
    partner = ME if subject == OWN else OTHER
    with psycopg.connect(world.db_url, autocommit=True) as conn:
        # Those of earlier cases go (a case makes at most one per partner): the cases
        # together would pass the limit of subscriptions per partner.
        conn.execute(
            "UPDATE coalition_webhook_subscription SET status = 'deleted' WHERE partner_id = %s",
            (partner,),
        )
        made = webhooks.create(
            conn,
            WebhookKey(bytes(32)),
            partner,
            "https://example.invalid/h",
            ["earn.recorded"],
            now_us(),
            urls=UrlPolicy(enforced=False),
        )
    assert not isinstance(made, Refusal), made
    return made.subscription.subscription_id


def _subscription_call(document: str) -> Build:
    def build(world: World, subject: str) -> Call:
        ident = _subscription(world, subject)
        return Call(document, {"id": ident}, ident)

    return build


WEBHOOK = f"{{ __typename ... on WebhookSubscription {{ id status }} {REFUSAL} }}"

REQUESTS: dict[str, Build] = {
    "Query.webhookEventTypes": _query("query { webhookEventTypes }"),
    "Query.webhookSubscriptions": _query("query { webhookSubscriptions { id url status } }"),
    "Query.webhookDeliveries": _subscription_call(
        "query($id: String!) { webhookDeliveries(id: $id) { __typename"
        f" ... on WebhookDeliveryLog {{ attempts {{ eventSeq delivered }} }} {REFUSAL} }} }}"
    ),
    "Mutation.createWebhookSubscription": lambda w, s: Call(
        "mutation($url: String!) { createWebhookSubscription(url: $url,"
        ' eventTypes: ["earn.recorded"]) { __typename'
        f" ... on CreatedWebhookSubscription {{ subscription {{ id }} }} {REFUSAL} }} }}",
        {"url": f"https://example.invalid/{_fresh()}"},
    ),
    "Mutation.deleteWebhookSubscription": _subscription_call(
        f"mutation($id: String!) {{ deleteWebhookSubscription(id: $id) {WEBHOOK} }}"
    ),
    "Mutation.reactivateWebhookSubscription": _subscription_call(
        f"mutation($id: String!) {{ reactivateWebhookSubscription(id: $id) {WEBHOOK} }}"
    ),
    "Query.me": _query("query { me { role partnerId keyId } }"),
    # Members are coalition-wide; M001 holds only ME's points (OTHER redeemed some), M002
    # holds points OTHER issued too.
    "Query.member": lambda w, s: Call(
        "query($id: String!) { member(memberId: $id, historyFirst: 100) {"
        " memberId status balancePoints heldPoints availablePoints debtPoints"
        " lots { lotId origin expiresAt amountOpened remaining }"
        " history { seq kind amountPoints } } }",
        {"id": "M001" if s == OWN else "M002"},
    ),
    "Query.partner": lambda w, s: Call(
        "query($id: String!) { partner(partnerId: $id) { partnerId legalName status"
        " issuedPoints redeemedAtPartnerPoints redeemedElsewherePoints outstandingPoints } }",
        {"id": PARTNERS[s]},
        PARTNERS[s],
    ),
    # Entries posting to a partner's own account: ME's issuance, OTHER's redemptions.
    "Query.journalEntries": lambda w, s: Call(
        "query($account: String) { journalEntries(first: 100, account: $account) {"
        " edges { cursor node { seq kind refScope refKey canonicalJson } }"
        " pageInfo { hasNextPage endCursor } } }",
        {
            "account": {
                OWN: f"partner:{ME}:issued",
                FOREIGN: f"partner:{OTHER}:redeemed",
                MISSING: f"partner:{MISSING_ID}:redeemed",
            }[s]
        },
        {OWN: ME, FOREIGN: OTHER, MISSING: MISSING_ID}[s],
    ),
    "Query.entry": lambda w, s: Call(
        "query($seq: Long!) { entry(seq: $seq) { seq kind refScope refKey canonicalJson"
        " leafHashHex } }",
        {"seq": _seq(w, s)},
        _seq(w, s),
    ),
    "Query.checkpoints": _query("query { checkpoints(first: 10) { checkpointId treeSize } }"),
    "Query.inclusionProof": lambda w, s: Call(
        "query($seq: Long!) { inclusionProof(seq: $seq) { seq treeSize leafHashHex"
        " auditPathBase64 receipt checkpoint { checkpointId treeSize } } }",
        {"seq": _seq(w, s)},
        _seq(w, s),
    ),
    "Query.consistencyProof": lambda w, s: Call(
        "query($to: Long!) { consistencyProof(fromSize: 1, toSize: $to) }",
        {"to": str(w.checkpoint_size)},
    ),
    "Query.kpis": _query(
        "query($from: String!, $to: String!) { kpis(fromTime: $from, toTime: $to) {"
        " partnersActive membersEnrolled pointsIssued pointsRedeemed"
        " flow { issuer redeemedAt points } } }",
        **{"from": ALL_TIME[0], "to": ALL_TIME[1]},
    ),
    "Query.settlementRuns": _query(f"query {{ settlementRuns(first: 5) {RUN} }}"),
    "Query.settlementRun": lambda w, s: Call(
        f"query($run: String!) {{ settlementRun(runId: $run) {RUN} }}", {"run": w.run_id}
    ),
    "Query.partnerKpis": lambda w, s: Call(
        "query($from: String!, $to: String!, $id: String!) { partnerKpis(fromTime: $from,"
        " toTime: $to, partnerId: $id) { partnerId pointsIssued pointsRedeemedAt"
        " pointsRedeemedOfIssuance pointsExpired redemptionRate breakageRate membersActive } }",
        {"from": ALL_TIME[0], "to": ALL_TIME[1], "id": PARTNERS[s]},
        PARTNERS[s],
    ),
    "Query.myRuns": _query(
        "query { myRuns(first: 10) { runId period revision status statementFormats } }"
    ),
    "Query.statement": lambda w, s: Call(
        "query($run: String!, $party: String!) { statement(runId: $run, party: $party) {"
        " runId party format content } }",
        {"run": w.run_id, "party": PARTNERS[s]},
        PARTNERS[s],
    ),
    "Query.paymentFile": lambda w, s: Call(
        "query($run: String!) { paymentFile(runId: $run) { __typename"
        " ... on PaymentFile { runId messageId } ... on Refusal { code message } } }",
        {"run": w.run_id},
    ),
    "Query.reconciliations": lambda w, s: Call(
        "query($id: String!) { reconciliations(partnerId: $id) { reconciliationId partnerId"
        " matched missingOurs missingTheirs resultJson } }",
        {"id": PARTNERS[s]},
        PARTNERS[s],
    ),
    # Till operations name the member by a card: another partner's card is no card here.
    "Mutation.earn": _card_call(
        "mutation($ref: String!, $card: String!, $minor: Long!) {"
        " earn(reference: $ref, member: {cardNumber: $card}, purchaseMinor: $minor,"
        f' currency: "RUB") {{ __typename ... on Earned {{ seq points }} {REFUSAL} }} }}',
        "minor",
        "50000",
    ),
    "Mutation.redeem": _card_call(
        "mutation($ref: String!, $card: String!, $points: Long!) {"
        f" redeem(reference: $ref, member: {{cardNumber: $card}}, points: $points) {REDEEMED} }}",
        "points",
        "1",
    ),
    "Mutation.authorise": _card_call(
        "mutation($ref: String!, $card: String!, $points: Long!) {"
        " authorise(reference: $ref, member: {cardNumber: $card}, points: $points) {"
        f" __typename ... on Authorised {{ holdSeq points expiresAt }} {REFUSAL} }} }}",
        "points",
        "1",
    ),
    "Mutation.capture": lambda w, s: Call(
        "mutation($ref: String!, $hold: Long!) {"
        f' capture(reference: $ref, holdSeq: $hold, points: "1") {REDEEMED} }}',
        {"ref": _fresh(), "hold": _hold(w, s, "capture")},
        _hold(w, s, "capture"),
    ),
    "Mutation.void": lambda w, s: Call(
        "mutation($ref: String!, $hold: Long!) {"
        f" void(reference: $ref, holdSeq: $hold) {{ __typename ... on Voided {{ seq }}"
        f" {REFUSAL} }} }}",
        {"ref": _fresh(), "hold": _hold(w, s, "void")},
        _hold(w, s, "void"),
    ),
    "Mutation.refundPurchase": lambda w, s: Call(
        "mutation($ref: String!, $earn: String!) {"
        f' refundPurchase(reference: $ref, earnReference: $earn, refundMinor: "10000")'
        f" {REFUNDED} }}",
        {"ref": _fresh(), "earn": OWN_EARN[s]},
        OWN_EARN[s],
    ),
    "Mutation.refundRedemption": lambda w, s: Call(
        "mutation($ref: String!, $redemption: String!) {"
        ' refundRedemption(reference: $ref, redemptionReference: $redemption, points: "1")'
        f" {REFUNDED} }}",
        {"ref": _fresh(), "redemption": OWN_REDEMPTION[s]},
        OWN_REDEMPTION[s],
    ),
    "Mutation.enrollMember": lambda w, s: Call(
        f"mutation($id: String!) {{ enrollMember(memberId: $id) {RECORDED} }}",
        {"id": _fresh("M")},
    ),
    "Mutation.linkCard": lambda w, s: Call(
        f'mutation($card: String!) {{ linkCard(memberId: "M005", cardNumber: $card) {RECORDED} }}',
        {"card": _fresh("CARD")},
    ),
    "Mutation.onboardPartner": lambda w, s: Call(
        "mutation($id: String!) {"
        ' onboardPartner(partnerId: $id, legalName: "Matrix LLC", settlementCurrency: "RUB")'
        f" {RECORDED} }}",
        {"id": _fresh("p")},
    ),
    "Mutation.eraseMember": lambda w, s: Call(
        "mutation($ref: String!, $id: String!) {"
        f" eraseMember(reference: $ref, memberId: $id) {RECORDED} }}",
        {"ref": _fresh(), "id": ERASED_MEMBER},
    ),
    "Mutation.setPartnerStatus": lambda w, s: Call(
        "mutation($ref: String!, $id: String!) {"
        f' setPartnerStatus(reference: $ref, partnerId: $id, status: "suspended") {RECORDED} }}',
        {"ref": _fresh(), "id": w.spare_partner},
    ),
    "Mutation.publishTerms": lambda w, s: Call(
        "mutation($ref: String!, $id: String!) { publishTerms(reference: $ref, partnerId: $id,"
        ' effectiveFrom: "2000-01-01T00:00:00.000000Z", issuancePricePerPoint: "50",'
        ' redemptionRatePerPoint: "95", operatorFeeBps: 150, breakageShare: "0.5",'
        f' cycle: "monthly", mode: "multilateral") {RECORDED} }}',
        {"ref": _fresh(), "id": w.spare_partner},
    ),
    "Mutation.publishEarningRules": lambda w, s: Call(
        "mutation($ref: String!, $id: String!) { publishEarningRules(reference: $ref,"
        ' partnerId: $id, effectiveFrom: "2000-01-01T00:00:00.000000Z", currency: "RUB",'
        f' pointsPerStep: 1, stepMinor: "10000") {RECORDED} }}',
        {"ref": _fresh(), "id": w.spare_partner},
    ),
    "Mutation.createApiKey": _query(
        'mutation { createApiKey(role: AUDITOR, label: "authz matrix") {'
        " key info { keyId role partnerId label revoked } } }"
    ),
    "Mutation.revokeApiKey": lambda w, s: Call(
        "mutation($id: String!) { revokeApiKey(keyId: $id) }", {"id": w.spare_key_id}
    ),
    "Mutation.computeSettlement": lambda w, s: Call(
        f"mutation($period: String!) {{ computeSettlement(period: $period) {RUN} }}",
        {"period": _today()},
    ),
    "Mutation.approveSettlement": lambda w, s: Call(
        f"mutation($run: String!) {{ approveSettlement(runId: $run) {RECORDED} }}",
        {"run": w.run_id},
    ),
    "Mutation.confirmPayment": lambda w, s: Call(
        "mutation($run: String!, $e2e: String!) {"
        f" confirmPayment(runId: $run, endToEndId: $e2e) {RECORDED} }}",
        {"run": w.run_id, "e2e": f"{w.run_id}-00001"},
    ),
    "Mutation.setBankAccount": lambda w, s: Call(
        "mutation($ref: String!, $id: String!) { setBankAccount(reference: $ref,"
        ' partnerId: $id, legalName: "Spare LLC", iban: "DE89370400440532013000",'
        f' bic: "COBADEFFXXX") {RECORDED} }}',
        {"ref": _fresh(), "id": w.spare_partner},
    ),
    "Mutation.recordFxRate": lambda w, s: Call(
        "mutation($ref: String!, $run: String!) { recordFxRate(reference: $ref, runId: $run,"
        ' baseCurrency: "EUR", quoteCurrency: "RUB", rate: "100.5", source: "CBR",'
        f' rateDate: "2027-01-31") {RECORDED} }}',
        {"ref": _fresh(), "run": _fresh("run")},
    ),
    "Query.redeemQuote": lambda w, s: Call(
        'query($card: String!) { redeemQuote(member: {cardNumber: $card}, points: "1") {'
        " __typename ... on RedemptionQuote { points debtPoints treeSize"
        f" lots {{ lotId issuer points }} byIssuer {{ issuer points }} }} {REFUSAL} }} }}",
        {"card": CARDS[s]},
        CARDS[s],
    ),
    "Query.memberAsOf": lambda w, s: Call(
        "query($id: String!, $seq: Long!) { memberAsOf(memberId: $id, atSeq: $seq) {"
        " memberId account { account balancePoints"
        " lots { lotId origin expiresAt amountOpened remaining } }"
        " proof { treeSize rootHashHex consistencyPathBase64 checkpoint { treeSize } } } }",
        {"id": "M001" if s == OWN else "M002", "seq": str(w.checkpoint_size - 1)},
    ),
    "Query.partnerAsOf": lambda w, s: Call(
        "query($id: String!, $seq: Long!) { partnerAsOf(partnerId: $id, atSeq: $seq) {"
        " partnerId accounts { account balancePoints lots { remaining } }"
        " proof { treeSize rootHashHex } } }",
        {"id": PARTNERS[s], "seq": str(w.checkpoint_size - 1)},
        PARTNERS[s],
    ),
    # A batch's header may leave the partner out (it is the key's): a record naming
    # another partner's card is refused like one naming no card.
    "Mutation.importBatch": lambda w, s: Call(
        'mutation($batch: String!) { importBatch(batch: $batch, format: "jsonl") {'
        " __typename ... on BatchImported { batchId lines accepted refused resultFile }"
        f" {REFUSAL} }} }}",
        {"batch": _batch(CARDS[s])},
        CARDS[s],
    ),
    # A partner's records naming another partner's transaction: like one nobody made.
    "Mutation.submitReconciliation": lambda w, s: Call(
        "mutation($records: String!, $from: String!, $to: String!) {"
        ' submitReconciliation(records: $records, format: "json", fromTime: $from,'
        " toTime: $to) { partnerId matched missingOurs missingTheirs mismatched"
        " resultJson } }",
        {
            "records": json.dumps(
                [
                    {
                        "ref": RECORDS[s],
                        "kind": "redeem",
                        "member": "M001",
                        "points": 10,
                        "time": ALL_TIME[0],
                    }
                ]
            ),
            "from": ALL_TIME[0],
            "to": ALL_TIME[1],
        },
        RECORDS[s],
    ),
}


# --- the cases, from the schema ------------------------------------------------------


def _schema_fields() -> list[str]:
    schema = build_schema(development=True)._schema
    roots = {"Query": schema.query_type, "Mutation": schema.mutation_type}
    return sorted(
        f"{name}.{field}" for name, root in roots.items() if root for field in root.fields
    )


SCHEMA_FIELDS = _schema_fields()


def _callers(field: str) -> list[str]:
    # "Foreign" exists where a partner's answer depends on whose data it names; a field
    # nobody has classified yet gets every caller (and fails on the missing rule).
    partner = EXPECTED.get(field, {}).get("partner", OWN_ONLY)
    return [c for c in CALLERS if c != "partner-foreign" or partner in (OWN_ONLY, SCOPED)]


CASES = [(field, caller) for field in SCHEMA_FIELDS for caller in _callers(field)]


def test_every_field_of_the_schema_has_a_rule_and_a_request() -> None:
    assert set(SCHEMA_FIELDS) == set(EXPECTED), (
        "classify every field: add it to EXPECTED (and REQUESTS); stale entries go",
        sorted(set(SCHEMA_FIELDS) ^ set(EXPECTED)),
    )
    assert set(SCHEMA_FIELDS) == set(REQUESTS)
    for field, rules in EXPECTED.items():
        assert set(rules) == set(ROLES), field
        assert set(rules.values()) <= {ALLOWED, FORBIDDEN, OWN_ONLY, SCOPED}, field
        # Only partner keys are bound to a partner; the other roles are not scoped.
        assert {rules[r] for r in ROLES if r != "partner"} <= {ALLOWED, FORBIDDEN}, field


# --- the server and its data ---------------------------------------------------------


@pytest.fixture(scope="module")
def matrix_db_url(server_url: str, template_name: str) -> Iterator[str]:
    """A fresh migrated database for this module (db_url is per test: too slow here)."""
    name = f"t_authz_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_name}"')
    base, sep, query = server_url.partition("?")
    try:
        yield psycopg_url(f"{base.rsplit('/', 1)[0]}/{name}{sep}{query}")
    finally:
        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _ok(outcome: Any) -> Any:
    assert not isinstance(outcome, Refusal), outcome
    return outcome


def _scope_seq(conn: psycopg.Connection[Any], partner: str, ref_key: str) -> int:
    row = conn.execute(
        "SELECT seq FROM ledger_entry WHERE ref_scope = %s AND ref_key = %s",
        (f"partner:{partner}", ref_key),
    ).fetchone()
    assert row is not None, (partner, ref_key)
    return int(row[0])


def _populate(db_url: str, signer: Signer) -> dict[str, Any]:
    """The demo coalition, plus what the requests name: ME's and OTHER's earns,
    redemptions, holds and reconciliations, a computed run with statements for both, a
    signed checkpoint over all of it, a revoked key and a key to revoke."""
    labels = seed_if_empty(db_url)
    co = Coalition()
    with psycopg.connect(db_url, autocommit=True) as conn:
        linked = _ok(link_card(co, conn, "M002", OTHER, CARDS[FOREIGN]))
        (card_ref,) = conn.execute(
            "SELECT ref_key FROM ledger_entry WHERE seq = %s", (linked.seq,)
        ).fetchone() or ("",)
        assert card_ref.startswith("card:") and CARDS[FOREIGN] not in card_ref, card_ref
        OTHER_ONLY_REFS["Mutation.refundPurchase"] = card_ref
        _ok(enroll_member(co, conn, ERASED_MEMBER))
        _ok(
            earn_points(
                co,
                conn,
                partner_id=OTHER,
                ref_key=OWN_EARN[FOREIGN],
                purchase_minor=200_000,
                currency="RUB",
                member_id="M002",
            )
        )
        _ok(
            redeem_points(
                co, conn, partner_id=ME, ref_key=OWN_REDEMPTION[OWN], points=10, member_id="M002"
            )
        )
        # References OTHER used that no case names as foreign data (ME reuses them).
        _ok(
            earn_points(
                co,
                conn,
                partner_id=OTHER,
                ref_key=OTHER_ONLY_REFS["Mutation.earn"],
                purchase_minor=100_000,
                currency="RUB",
                member_id="M004",
            )
        )
        _ok(
            redeem_points(
                co,
                conn,
                partner_id=OTHER,
                ref_key=OTHER_ONLY_REFS["Mutation.redeem"],
                points=1,
                member_id="M004",
            )
        )
        own_holds = {
            use: _ok(
                authorise(
                    co, conn, partner_id=ME, ref_key=f"me-hold-{use}", points=5, member_id="M003"
                )
            ).hold_seq
            for use in ("capture", "void")
        }
        foreign_hold = _ok(
            authorise(
                co,
                conn,
                partner_id=OTHER,
                ref_key=OTHER_ONLY_REFS["Mutation.authorise"],
                points=5,
                member_id="M004",
            )
        ).hold_seq
        spare = "spare"
        _ok(onboard_partner(co, conn, spare, "Spare LLC", "RUB"))
        for partner in (ME, OTHER):
            settle.submit_reconciliation(conn, partner, b"[]", "json", 0, 2**62, 300_000_000)
        # A free label (no calendar bounds): the run holds every entry made so far.
        run = _ok(
            settle.compute(
                co, conn, signer, period="matrix-run", computed_by="key:setup", calendar=False
            )
        )
        statements = conn.execute(
            "SELECT DISTINCT party FROM coalition_statement WHERE run_id = %s", (run.run_id,)
        ).fetchall()
        assert {ME, OTHER} <= {p for (p,) in statements}, statements
        revoked, revoked_info = create_key(conn, "auditor", None, "to be revoked", now_us())
        assert revoke_key(conn, revoked_info.key_id, now_us())
        _, spare_key = create_key(conn, "auditor", None, "revoked by a case", now_us())
        return {
            "keys": {
                "me": labels[f"partner {ME}"],
                "other": labels[f"partner {OTHER}"],
                "auditor": labels["auditor"],
                "finance": labels["finance"],
                "operator": labels["operator"],
                "revoked": revoked,
            },
            "own_seq": _scope_seq(conn, ME, "seed-earn-1"),
            "foreign_seq": _scope_seq(conn, OTHER, "seed-redeem-1"),
            "own_holds": own_holds,
            "foreign_hold": foreign_hold,
            "run_id": run.run_id,
            "checkpoint_size": run.end_seq,
            "spare_partner": spare,
            "spare_key_id": spare_key.key_id,
        }


@pytest.fixture(scope="module")
def world(matrix_db_url: str) -> Iterator[World]:
    signer = Signer.from_seed(ORIGIN, hashlib.sha256(b"authorisation matrix").digest())
    settings = dataclasses.replace(
        Settings.from_env(),
        log_origin=ORIGIN,
        signing_key_text=format_signer_key(signer),
        development=True,
        webhook_key_text=base64.b64encode(bytes(range(32))).decode(),
    )
    facts = _populate(matrix_db_url, signer)
    # Hundreds of requests per key in a few seconds: the default buckets would answer 429.
    unlimited = RateLimiter(
        {role: (1e6, 1_000_000) for role in (*ROLES, "anonymous")},
    )
    app = create_app(settings, matrix_db_url, limiter=unlimited)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + SERVER_START_SECONDS_MAX
    while not server.started:
        assert thread.is_alive(), "the server stopped while starting"
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            yield World(client=client, db_url=matrix_db_url, **facts)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


# --- asking and judging --------------------------------------------------------------


def _ask(world: World, call: Call, key: str | None) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    response = world.client.post(
        "/graphql", json={"query": call.document, "variables": call.variables}, headers=headers
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    if key is not None and key == world.keys["me"] and "errors" not in body:
        _assert_names_only_own_entries(world, body)
    return body


def _seqs(value: Any) -> set[int]:
    """The entries an answer names: by seq, and by lot id (``<opening seq>:<n>``)."""
    if isinstance(value, dict):
        found = {int(v) for k, v in value.items() if k == "seq" and v is not None}
        found |= {int(v.split(":")[0]) for k, v in value.items() if k == "lotId"}
        return found.union(*(_seqs(v) for v in value.values()))
    if isinstance(value, list):
        return set().union(*(_seqs(v) for v in value))
    return set()


def _scope_seqs(world: World, partner: str) -> set[int]:
    with psycopg.connect(world.db_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT seq FROM ledger_entry WHERE ref_scope = %s", (f"partner:{partner}",)
        ).fetchall()
    return {int(seq) for (seq,) in rows}


def _assert_names_only_own_entries(world: World, body: dict[str, Any]) -> None:
    # Only reads: a till mutation's answer names the entry it wrote, enrollMember an
    # operator-scope entry (members are coalition-wide) — neither shows anyone's data.
    data = body.get("data") or {}
    reads = {k: v for k, v in data.items() if f"Query.{k}" in EXPECTED}
    foreign = _seqs(reads) - _scope_seqs(world, ME)
    assert not foreign, (
        f"a {ME} key was shown {OTHER}'s or others' entries (by seq or lot id): {sorted(foreign)}",
        body,
    )


def _footprint(world: World) -> tuple[int, ...]:
    """Everything a request could have written."""
    with psycopg.connect(world.db_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT (SELECT tree_size FROM ledger_chain),"
            " (SELECT count(*) FROM coalition_api_key),"
            " (SELECT count(*) FROM coalition_api_key WHERE revoked_at_us IS NOT NULL),"
            " (SELECT count(*) FROM coalition_reconciliation),"
            " (SELECT count(*) FROM coalition_settlement_run),"
            " (SELECT count(*) FROM ledger_checkpoint),"
            " (SELECT count(*) FROM coalition_webhook_subscription),"
            " (SELECT count(*) FROM coalition_webhook_subscription WHERE status = 'active')"
        ).fetchone()
    assert row is not None
    return tuple(int(v) for v in row)


def _journal_size(world: World) -> int:
    return _footprint(world)[0]


def _field_name(field: str) -> str:
    return field.split(".", 1)[1]


def _assert_refused(world: World, field: str, call: Call, key: str | None, code: str) -> None:
    before = _footprint(world)
    body = _ask(world, call, key)
    codes = [(e.get("extensions") or {}).get("code") for e in body.get("errors") or []]
    assert codes == [code], body
    data = body.get("data")
    assert data is None or data.get(_field_name(field)) is None, body
    assert _footprint(world) == before, f"a refused {field} wrote something"


def _assert_answered(field: str, body: dict[str, Any]) -> Any:
    assert "errors" not in body, body
    answer = body["data"][_field_name(field)]
    assert answer is not None, body
    return answer


def _masked(body: dict[str, Any], ident: str) -> str:
    text = json.dumps(body, sort_keys=True)
    if not ident:
        return text
    return re.sub(rf"(?<![\w-]){re.escape(ident)}(?![\w-])", "<id>", text)


def _check_own_only_foreign(world: World, field: str, build: Build) -> None:
    foreign, missing = build(world, FOREIGN), build(world, MISSING)
    size = _journal_size(world)
    seen_foreign = _ask(world, foreign, world.keys["me"])
    assert _journal_size(world) == size, f"{field} on foreign data wrote to the journal"
    seen_missing = _ask(world, missing, world.keys["me"])
    assert _masked(seen_foreign, foreign.ident) == _masked(seen_missing, missing.ident), (
        f"{field}: another partner's data is answered unlike a missing id",
        seen_foreign,
        seen_missing,
    )
    # Not two empty answers: the data is there, for the partner it belongs to.
    by_owner = _ask(world, foreign, world.keys["other"])
    missing_for_owner = _ask(world, missing, world.keys["other"])
    assert _masked(by_owner, foreign.ident) != _masked(missing_for_owner, missing.ident), (
        f"{field}: the foreign data the case names does not exist",
        by_owner,
    )


def _check_scoped_foreign(world: World, field: str, build: Build) -> None:
    call = build(world, FOREIGN)
    theirs = _seqs(_assert_answered(field, _ask(world, call, world.keys["other"])))
    foreign_entries = theirs & _scope_seqs(world, OTHER)
    assert foreign_entries, f"{field}: the answer holds none of {OTHER}'s entries to hide"
    mine = _seqs(_assert_answered(field, _ask(world, call, world.keys["me"])))
    assert not mine & foreign_entries, (field, sorted(mine & foreign_entries))


@pytest.mark.parametrize(("field", "caller"), CASES, ids=[f"{f}-{c}" for f, c in CASES])
def test_authorisation(world: World, field: str, caller: str) -> None:
    assert field in EXPECTED and field in REQUESTS, f"{field} has no rule: add it to EXPECTED"
    rules, build = EXPECTED[field], REQUESTS[field]
    if caller in ("no-key", "revoked-key"):
        key = world.keys["revoked"] if caller == "revoked-key" else None
        _assert_refused(world, field, build(world, OWN), key, "UNAUTHENTICATED")
        return
    if caller == "partner-foreign":
        check = _check_own_only_foreign if rules["partner"] == OWN_ONLY else _check_scoped_foreign
        check(world, field, build)
        return
    role = "partner" if caller == "partner-own" else caller
    key = world.keys["me" if role == "partner" else role]
    own = build(world, OWN)
    if rules[role] == FORBIDDEN:
        _assert_refused(world, field, own, key, "FORBIDDEN")
        return
    body = _ask(world, own, key)
    answer = _assert_answered(field, body)
    if rules[role] == OWN_ONLY:
        # Own data is really shown: not the answer a missing id gets.
        missing = build(world, MISSING)
        seen_missing = _ask(world, missing, key)
        assert _masked(body, own.ident) != _masked(seen_missing, missing.ident), (
            f"{field}: a partner's own data is answered like a missing id",
            body,
        )
    if rules[role] == SCOPED:
        assert _seqs(answer) & _scope_seqs(world, ME), f"{field}: none of {ME}'s own entries"


def test_references_are_per_partner(world: World) -> None:
    """Another partner's reference is no duplicate here: else a refusal would tell a
    partner which references the others use."""
    for field, reference in OTHER_ONLY_REFS.items():
        call = REQUESTS[field](world, OWN)
        reusing = dataclasses.replace(call, variables={**call.variables, "ref": reference})
        answer = _assert_answered(field, _ask(world, reusing, world.keys["me"]))
        assert answer["__typename"] in ("Earned", "Redeemed", "Authorised", "Refunded"), answer
