"""Helpers for the races in test_races.py: one httpx.AsyncClient firing the published
partner operations at the real server at once, answers kept as data (an HTTP or GraphQL
error becomes an answer of type ``ERROR``, so a round's tally shows everything), and the
database-side checks (lowest running balance, the journal's own verifier)."""

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
PARTNER_OPERATIONS = ROOT / "graphql" / "operations" / "partner"
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
}
DOCUMENTS = {name: (PARTNER_OPERATIONS / f"{name}.graphql").read_text() for name in FIELDS}

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
        self.keys = keys
        self.busy_retries = 0

    async def post_raw(self, who: str, body: bytes) -> httpx.Response:
        headers = {
            "Authorization": f"Bearer {self.keys[who]}",
            "Content-Type": "application/json",
        }
        return await self.client.post("/graphql", content=body, headers=headers)

    async def call(self, who: str, operation: str, **variables: Any) -> Answer:
        body = {"query": DOCUMENTS[operation], "variables": variables}
        # ensure_ascii: the body is plain ASCII whatever the variables hold.
        response = await self.post_raw(who, json.dumps(body, ensure_ascii=True).encode())
        return answer_of(response, FIELDS[operation])

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
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.status_code != 200 or not isinstance(body, dict) or body.get("errors"):
        return {"__typename": ERROR, "status": response.status_code, "body": response.text[:500]}
    answer = (body.get("data") or {}).get(field)
    if not isinstance(answer, dict):
        return {"__typename": ERROR, "status": response.status_code, "body": response.text[:500]}
    return answer


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


def balance_of(db_url: str, member_id: str) -> int:
    """The member's points balance as the database keeps it (0 if it never moved)."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT balance FROM ledger_balance WHERE account = %s", (f"member:{member_id}",)
        ).fetchone()
    return 0 if row is None else int(row[0])
