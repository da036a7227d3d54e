"""Helpers for the races in test_races.py and test_races_settlement.py: one
httpx.AsyncClient firing the published operations (graphql/operations/<role>/) at the real
server at once, answers kept as data (an HTTP or GraphQL error becomes an answer of type
``ERROR`` holding the errors' codes, so a round's tally shows everything), and the
database-side checks (lowest running balance, journal entries, the journal's own
verifier)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psycopg

from ledger import reads
from ledger.verify_db import verify_database

T = TypeVar("T")

ROOT = Path(__file__).resolve().parents[2]
OPERATIONS = ROOT / "graphql" / "operations"
REQUEST_TIMEOUT_SECONDS = 60.0
SCENARIO_TIMEOUT_SECONDS = 240.0
CONNECTIONS = 128  # ≥ the most requests any race has in flight at once
BUSY_RETRIES_MAX = 20
STEP_MINOR = 10_000  # the seed's earning rules: 1 point per 100.00 RUB, no cap
ERROR = "ERROR"

# The field each published operation answers under.
FIELDS = {
    "PostPurchase": "earn",
    "RedeemAtTill": "redeem",
    "AuthoriseHold": "authorise",
    "CaptureHold": "capture",
    "VoidHold": "void",
    "RefundPurchase": "refundPurchase",
    "RefundRedemption": "refundRedemption",
    "EnrollMember": "enrollMember",
    "MemberBalance": "member",
    "WhoAmI": "me",
    "ComputeSettlement": "computeSettlement",
    "ApproveSettlement": "approveSettlement",
    "ConfirmPayment": "confirmPayment",
    "SuspendPartner": "setPartnerStatus",
    "PublishEarningRules": "publishEarningRules",
    "CreateApiKey": "createApiKey",
    "RevokeApiKey": "revokeApiKey",
}
# Each document by its name, whichever role's folder holds it (names are unique).
DOCUMENTS = {path.stem: path.read_text() for path in sorted(OPERATIONS.glob("*/*.graphql"))}
assert set(FIELDS) <= set(DOCUMENTS), set(FIELDS) - set(DOCUMENTS)

Answer = dict[str, Any]


def tag() -> str:
    """A fresh suffix for member ids and references (each round starts from nothing)."""
    return uuid.uuid4().hex[:10]


def typename_for(code: str) -> str:
    return "".join(part.title() for part in code.split("_"))


def is_refusal(answer: Answer, *codes: str) -> bool:
    """A typed union refusal (``... on Refusal``), optionally one of ``codes``."""
    code = answer.get("code")
    if not isinstance(code, str) or answer.get("__typename") != typename_for(code):
        return False
    return not codes or code in codes


def tally(answers: Iterable[Answer]) -> Counter[str]:
    return Counter(str(a.get("__typename")) for a in answers)


def points(answers: Iterable[Answer], typename: str) -> list[int]:
    return [int(a["points"]) for a in answers if a.get("__typename") == typename]


class Tills:
    """Partner keys over one client; ``call`` runs a published operation and returns the
    union answer (or an ``ERROR`` answer holding what came back instead)."""

    def __init__(self, client: httpx.AsyncClient, keys: dict[str, str]) -> None:
        self.client = client
        self.keys = dict(keys)  # a race may add keys of its own (created over the API)
        self.busy_retries = 0

    async def post_raw(self, who: str, body: bytes) -> httpx.Response:
        headers = {
            "Authorization": f"Bearer {self.keys[who]}",
            "Content-Type": "application/json",
        }
        return await self.client.post("/graphql", content=body, headers=headers)

    async def call(self, who: str, operation: str, **variables: Any) -> Answer:
        return answer_of(await self.send(who, operation, **variables), FIELDS[operation])

    async def send(self, who: str, operation: str, **variables: Any) -> httpx.Response:
        body = {"query": DOCUMENTS[operation], "variables": variables}
        # ensure_ascii: the body is plain ASCII whatever the variables hold.
        return await self.post_raw(who, json.dumps(body, ensure_ascii=True).encode())

    async def key_id(self, who: str) -> str:
        me = await self.call(who, "WhoAmI")
        assert me.get("__typename") != ERROR, me
        return str(me["keyId"])

    async def create_key(self, who: str, role: str, label: str, partner: str | None) -> str:
        """A new key (made by the operator over the API), kept under ``who``; its id."""
        response = await self.send(
            "operator", "CreateApiKey", role=role, label=label, partnerId=partner
        )
        created = answer_of(response, "createApiKey")
        assert created.get("__typename") != ERROR, created
        self.keys[who] = str(created["key"])
        return str(created["info"]["keyId"])

    async def settled(self, who: str, operation: str, **variables: Any) -> Answer:
        """``call``, retried with the same reference while the answer is BUSY (what a till
        does): a BUSY answer is a typed refusal, but not a final one."""
        for attempt in range(BUSY_RETRIES_MAX):
            answer = await self.call(who, operation, **variables)
            if not is_refusal(answer, "BUSY"):
                return answer
            self.busy_retries += 1
            await asyncio.sleep(0.01 * (attempt + 1))
        return {"__typename": ERROR, "detail": f"still BUSY after {BUSY_RETRIES_MAX} tries"}

    async def ok(self, who: str, operation: str, typename: str, **variables: Any) -> Answer:
        """A set-up step that must succeed."""
        answer = await self.settled(who, operation, **variables)
        assert answer.get("__typename") == typename, (operation, variables, answer)
        return answer

    async def enroll(self, member_id: str) -> None:
        await self.ok("grocer", "EnrollMember", "Recorded", memberId=member_id)

    async def earn(self, member_id: str, points_wanted: int, reference: str) -> Answer:
        """Earn at grocer exactly ``points_wanted`` points (asserted from the answer)."""
        earned = await self.ok(
            "grocer",
            "PostPurchase",
            "Earned",
            reference=reference,
            member={"memberId": member_id},
            purchaseMinor=points_wanted * STEP_MINOR,
            currency="RUB",
        )
        assert int(earned["points"]) == points_wanted, earned
        return earned

    async def balance(self, member_id: str) -> dict[str, int]:
        member = await self.call("fuel", "MemberBalance", memberId=member_id)
        assert member.get("__typename") != ERROR, member
        fields = ("balancePoints", "heldPoints", "availablePoints", "debtPoints")
        return {f: int(member[f]) for f in fields}


def answer_of(response: httpx.Response, field: str) -> Answer:
    """The object under ``field``; else an ``ERROR`` answer with the HTTP status, the
    GraphQL errors' ``extensions.code`` values (``codes``) and the start of the body."""
    try:
        body = response.json()
    except ValueError:
        body = None
    answer = (body.get("data") or {}).get(field) if isinstance(body, dict) else None
    if response.status_code == 200 and isinstance(answer, dict) and not body.get("errors"):
        return answer
    errors = (body.get("errors") or []) if isinstance(body, dict) else []
    return {
        "__typename": ERROR,
        "status": response.status_code,
        "codes": [(e.get("extensions") or {}).get("code") for e in errors],
        "messages": [str(e.get("message"))[:300] for e in errors],
        "body": response.text[:500],
    }


def is_error(answer: Answer, code: str) -> bool:
    """A GraphQL error answer whose only error carries ``code`` (and no data)."""
    return answer.get("__typename") == ERROR and answer.get("codes") == [code]


def run(api: str, keys: dict[str, str], scenario: Callable[[Tills], Awaitable[T]]) -> T:
    """Run ``scenario`` on a fresh event loop with one client whose pool lets every
    request of a race be in flight at once; bounded in time as a whole."""

    async def main() -> T:
        limits = httpx.Limits(max_connections=CONNECTIONS, max_keepalive_connections=CONNECTIONS)
        timeout = httpx.Timeout(REQUEST_TIMEOUT_SECONDS)
        async with httpx.AsyncClient(base_url=api, limits=limits, timeout=timeout) as client:
            return await asyncio.wait_for(scenario(Tills(client, keys)), SCENARIO_TIMEOUT_SECONDS)

    return asyncio.run(main())


def lowest_balance(db_url: str, member_id: str) -> int:
    """The lowest running balance the member's account ever had (0 if it never moved)."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT coalesce(min(balance_after), 0) FROM ledger_posting"
            " WHERE account = %s AND unit = 'PTS'",
            (f"member:{member_id}",),
        ).fetchone()
    assert row is not None
    return int(row[0])


def corrections(db_url: str, kind: str, corrected_seq: int) -> list[tuple[str, int]]:
    """(account, amount) of every posting of the ``kind`` entries correcting one entry."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT p.account, p.amount FROM ledger_entry e JOIN ledger_posting p"
            " ON p.chain_id = e.chain_id AND p.seq = e.seq"
            " WHERE e.kind = %s AND e.corrects_seq = %s ORDER BY p.seq, p.posting_index",
            (kind, corrected_seq),
        ).fetchall()
    return [(str(account), int(amount)) for account, amount in rows]


def verify(db_url: str) -> None:
    """The journal's own online verifier over the whole database: it raises on the first
    row that does not agree with the replay."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        verified = verify_database(conn)
        assert verified.tree_size == reads.head(conn).tree_size


def entries(db_url: str, *kinds: str) -> list[dict[str, Any]]:
    """The journal's entries of ``kinds``, in seq order, each as its canonical JSON."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT canonical FROM ledger_entry WHERE kind = ANY(%s) ORDER BY seq",
            (list(kinds),),
        ).fetchall()
    parsed = [json.loads(bytes(canonical)) for (canonical,) in rows]
    assert all(isinstance(entry, dict) for entry in parsed)
    return parsed


def balance_of(db_url: str, member_id: str) -> int:
    """The member's points balance as the database keeps it (0 if it never moved)."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT balance FROM ledger_balance WHERE account = %s", (f"member:{member_id}",)
        ).fetchone()
    return 0 if row is None else int(row[0])
