"""eraseMember over HTTP against the real app: a partner links a card and posts by it,
the operator erases the member; the till is refused by card (nobody holds it now) and
by member id (MemberErased), a retry is the original answer, a partner may not erase,
and the journal still verifies with no card number in it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import psycopg

from ledger.verify_db import verify_database

if TYPE_CHECKING:
    from tests.e2e.conftest import Seeded

OPERATIONS = Path(__file__).resolve().parents[2] / "graphql" / "operations"
CARD = "6011-0009-9013-9424"


def _call(api: str, key: str, operation: str, **variables: Any) -> dict[str, Any]:
    response = httpx.post(
        f"{api}/graphql",
        json={"query": (OPERATIONS / f"{operation}.graphql").read_text(), "variables": variables},
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _answer(body: dict[str, Any], field: str) -> dict[str, Any]:
    assert "errors" not in body, body
    answer: dict[str, Any] = body["data"][field]
    return answer


def test_the_operator_erases_a_member_over_http(api: str, seeded: Seeded) -> None:
    grocer, operator = seeded.keys["grocer"], seeded.keys["operator"]
    enrolled = _call(api, grocer, "partner/EnrollMember", memberId="GDPR1")
    assert _answer(enrolled, "enrollMember")["__typename"] == "Recorded"
    linked = _call(api, grocer, "partner/LinkCard", memberId="GDPR1", cardNumber=CARD)
    assert _answer(linked, "linkCard")["__typename"] == "Recorded"
    by_card = {"cardNumber": CARD}
    earned = _call(
        api,
        grocer,
        "partner/PostPurchase",
        reference="gdpr-1",
        member=by_card,
        purchaseMinor=500_000,
        currency="RUB",
    )
    assert _answer(earned, "earn")["__typename"] == "Earned"

    # Only the operator may erase: a partner's key is a GraphQL error, nothing written.
    forbidden = _call(api, grocer, "operator/EraseMember", reference="t-1", memberId="GDPR1")
    assert forbidden["errors"][0]["extensions"]["code"] == "FORBIDDEN", forbidden
    unknown = _call(api, operator, "operator/EraseMember", reference="t-0", memberId="NOBODY")
    assert _answer(unknown, "eraseMember")["code"] == "UNKNOWN_MEMBER"

    erased = _answer(
        _call(api, operator, "operator/EraseMember", reference="t-1", memberId="GDPR1"),
        "eraseMember",
    )
    assert erased["__typename"] == "Recorded" and erased["replayed"] is False
    again = _call(api, operator, "operator/EraseMember", reference="t-1", memberId="GDPR1")
    assert _answer(again, "eraseMember") == {**erased, "replayed": True}
    other = _call(api, operator, "operator/EraseMember", reference="t-2", memberId="GDPR1")
    assert _answer(other, "eraseMember")["__typename"] == "MemberErased"

    for member, expected in ((by_card, "UnknownMember"), ({"memberId": "GDPR1"}, "MemberErased")):
        till = _call(
            api,
            grocer,
            "partner/PostPurchase",
            reference="gdpr-2",
            member=member,
            purchaseMinor=500_000,
            currency="RUB",
        )
        assert _answer(till, "earn")["__typename"] == expected, till

    with psycopg.connect(seeded.db_url, autocommit=True) as conn:
        verify_database(conn)
        journal = b"".join(
            bytes(row[0]) for row in conn.execute("SELECT canonical FROM ledger_entry")
        )
        assert CARD.encode() not in journal
        assert conn.execute(
            "SELECT count(*) FROM coalition_member_secret WHERE member_id = 'GDPR1'"
        ).fetchone() == (0,)
