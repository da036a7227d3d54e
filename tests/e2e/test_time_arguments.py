"""GraphQL time arguments over real HTTP take RFC 3339 as people write it — ``Z`` or an
offset, with or without fractional seconds — and plain dates (midnight in the
coalition's time zone), meaning the instant they name; the rest is refused, naming the
argument."""

from __future__ import annotations

import json
import uuid
from typing import TYPE_CHECKING, Any

import httpx
import psycopg
import pytest

from coalition.api.trusted import OPERATIONS_DIR
from coalition.settle import timezone
from coalition.time_input import parse_instant
from ledger.timefmt import format_time_us

if TYPE_CHECKING:
    from tests.e2e.conftest import Seeded

PUBLISH_TERMS = (OPERATIONS_DIR / "operator" / "PublishTerms.graphql").read_text()
KPIS = "query($f: String!, $t: String!) { kpis(fromTime: $f, toTime: $t) { pointsIssued } }"


def post(url: str, query: str, variables: dict[str, Any], key: str) -> dict[str, Any]:
    answer = httpx.post(
        f"{url}/graphql",
        content=json.dumps({"query": query, "variables": variables}),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def publish_terms(url: str, key: str, effective_from: str) -> dict[str, Any]:
    variables = {
        "reference": f"terms-{uuid.uuid4()}",
        "partnerId": "grocer",
        "effectiveFrom": effective_from,
        "issuancePricePerPoint": "50",
        "redemptionRatePerPoint": "95",
        "operatorFeeBps": 150,
        "breakageShare": "0.5",
        "cycle": "monthly",
        "mode": "multilateral",
    }
    body = post(url, PUBLISH_TERMS, variables, key)
    assert "errors" not in body, body
    published: dict[str, Any] = body["data"]["publishTerms"]
    return published


def effective_from_of(db_url: str, seq: int) -> str:
    with psycopg.connect(db_url) as conn:
        row = conn.execute(
            "SELECT effective_from_us FROM coalition_terms WHERE seq = %s", (seq,)
        ).fetchone()
    assert row is not None
    return format_time_us(int(row[0]))


@pytest.mark.parametrize(
    ("written", "instant"),
    [
        ("2099-01-01T03:00:00+03:00", "2099-01-01T00:00:00.000000Z"),
        ("2099-01-01T00:00:00Z", "2099-01-01T00:00:00.000000Z"),
        ("2099-01-01T00:00:00.5Z", "2099-01-01T00:00:00.500000Z"),
    ],
)
def test_effective_from_in_rfc_3339_is_the_instant_it_names(
    shared_api: str, shared: Seeded, written: str, instant: str
) -> None:
    published = publish_terms(shared_api, shared.keys["operator"], written)
    assert published["__typename"] == "Recorded", published
    assert effective_from_of(shared.db_url, published["seq"]) == instant


def test_effective_from_as_a_date_is_midnight_in_the_coalition_s_zone(
    shared_api: str, shared: Seeded
) -> None:
    published = publish_terms(shared_api, shared.keys["operator"], "2099-02-01")
    assert published["__typename"] == "Recorded", published
    midnight = format_time_us(parse_instant("2099-02-01", timezone()))
    assert effective_from_of(shared.db_url, published["seq"]) == midnight


def test_effective_from_without_an_offset_is_refused_naming_it(
    shared_api: str, shared: Seeded
) -> None:
    published = publish_terms(shared_api, shared.keys["operator"], "2099-01-01T00:00:00")
    assert published["__typename"] == "InvalidRequest", published
    assert published["message"].startswith("effectiveFrom: ") and "RFC 3339" in published["message"]


def test_kpis_windows_in_every_form_agree(shared_api: str, shared: Seeded) -> None:
    key = shared.keys["finance"]
    forms = [
        {"f": "2000-01-01T00:00:00.000000Z", "t": "2100-01-01T00:00:00.000000Z"},
        {"f": "2000-01-01T00:00:00Z", "t": "2100-01-01T03:00:00+03:00"},
        {"f": "2000-01-01T00:00:00.5Z", "t": "2100-01-01"},
    ]
    answers = [post(shared_api, KPIS, variables, key) for variables in forms]
    for body in answers:
        assert "errors" not in body, body
    assert len({body["data"]["kpis"]["pointsIssued"] for body in answers}) == 1


def test_kpis_refuse_a_time_that_is_not_one_naming_it(shared_api: str, shared: Seeded) -> None:
    body = post(shared_api, KPIS, {"f": "2000-01-01", "t": "next week"}, shared.keys["finance"])
    [error] = body["errors"]
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert error["message"].startswith("toTime: ") and "RFC 3339" in error["message"]
