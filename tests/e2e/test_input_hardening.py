"""Bad input over real HTTP: a clear, typed answer that names the field, nothing written,
never a 500 or a traceback — text PostgreSQL or UTF-8 cannot store, blank and over-long
text, non-ASCII digits in a Long, pre-1970 times, rates that are not plain bounded
decimals, JSON bodies that are not one GraphQL request, documents of several operations
without an operationName, and (outside development) no field suggestions."""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import httpx
import psycopg
import pytest
from starlette.applications import Starlette

from coalition.api.app import create_app
from coalition.api.http_body import JSON_DEPTH_MAX
from coalition.api.schema import SEVERAL_OPERATIONS
from coalition.api.trusted import OPERATIONS_DIR
from coalition.settings import Settings
from ledger import reads

if TYPE_CHECKING:
    from tests.e2e.conftest import Seeded

TIMEOUT_SECONDS = 30
POST_PURCHASE = (OPERATIONS_DIR / "partner" / "PostPurchase.graphql").read_text()
PUBLISH_TERMS = (OPERATIONS_DIR / "operator" / "PublishTerms.graphql").read_text()
JSON_HEADERS = {"Content-Type": "application/json"}
LEAKS = ("Traceback", "psycopg", "File ", ".py", "SELECT", "internal error")


def send(url: str, body: bytes, key: str | None = None) -> httpx.Response:
    headers = dict(JSON_HEADERS)
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    return httpx.post(f"{url}/graphql", content=body, headers=headers, timeout=TIMEOUT_SECONDS)


def post(url: str, query: str, variables: dict[str, Any], key: str | None) -> httpx.Response:
    # json.dumps escapes a NUL as \u0000 and a lone surrogate as \ud800: valid JSON text.
    body = json.dumps({"query": query, "variables": variables}).encode("ascii")
    answer = send(url, body, key)
    assert answer.status_code == 200, answer.text
    for leak in LEAKS:
        assert leak not in answer.text, answer.text
    return answer


def result(answer: httpx.Response, field: str) -> dict[str, Any]:
    body = answer.json()
    assert "errors" not in body, body["errors"]
    return dict(body["data"][field])


def refused(answer: httpx.Response, field: str, argument: str) -> str:
    """The typed union refusal InvalidRequest, naming the argument; its message."""
    got = result(answer, field)
    assert got["__typename"] == "InvalidRequest", got
    assert got["code"] == "INVALID_REQUEST"
    assert got["message"].startswith(f"{argument}: "), got
    return str(got["message"])


def bad_input(answer: httpx.Response, argument: str) -> str:
    """A GraphQL error coded BAD_USER_INPUT, naming the argument; its message."""
    [error] = answer.json()["errors"]
    assert (error.get("extensions") or {}).get("code") == "BAD_USER_INPUT", error
    assert error["message"].startswith(f"{argument}: "), error
    return str(error["message"])


def tree_size(db_url: str) -> int:
    with psycopg.connect(db_url) as conn:
        return reads.head(conn).tree_size


def _earn(reference: str, **changes: Any) -> dict[str, Any]:
    variables: dict[str, Any] = {
        "reference": reference,
        "member": {"memberId": "M001"},
        "purchaseMinor": "50000",
        "currency": "RUB",
    }
    return {**variables, **changes}


BAD_TEXT = [
    "R-\u0000-1",  # NUL: PostgreSQL text cannot hold it
    "R-\ud800",  # a lone surrogate: not UTF-8
    "R-\u0007",  # another C0 control
    "R-\u0085",  # a C1 control
    "R-\u202e-1",  # a bidirectional override
    " ",  # blank
    "\t",
    "",
    "R" * 129,  # over-long
]


# -- 1. text a partner sends ------------------------------------------------------------


@pytest.mark.parametrize("reference", BAD_TEXT, ids=repr)
def test_a_bad_reference_is_refused_at_the_edge_and_names_the_field(
    shared_api: str, shared: Seeded, reference: str
) -> None:
    before = tree_size(shared.db_url)
    answer = post(shared_api, POST_PURCHASE, _earn(reference), shared.keys["grocer"])
    message = refused(answer, "earn", "reference")
    assert "printable characters without control characters" in message
    assert tree_size(shared.db_url) == before


def test_a_nul_in_a_reference_never_reaches_the_committer(shared_api: str, shared: Seeded) -> None:
    # It used to fail the group committer's whole batch; now it never gets there, and the
    # next purchase (from the same till) is earned as usual.
    grocer = shared.keys["grocer"]
    before = tree_size(shared.db_url)
    refused(post(shared_api, POST_PURCHASE, _earn("P\u0000"), grocer), "earn", "reference")
    earned = result(post(shared_api, POST_PURCHASE, _earn(f"ok-{uuid.uuid4()}"), grocer), "earn")
    assert earned["__typename"] == "Earned", earned
    assert tree_size(shared.db_url) == before + 1


@pytest.mark.parametrize(
    ("changes", "argument"),
    [
        ({"member": {"memberId": "M\u0000001"}}, "member.memberId"),
        ({"member": {"cardNumber": "\ud800"}}, "member.cardNumber"),
        ({"member": {"memberId": "M" * 65}}, "member.memberId"),
        ({"category": "c" * 65}, "category"),
        ({"category": " "}, "category"),
        ({"currency": "R\u0000B"}, "currency"),
        ({"purchaseMinor": str(2**53)}, "purchaseMinor"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_every_earn_argument_is_checked(
    shared_api: str, shared: Seeded, changes: dict[str, Any], argument: str
) -> None:
    before = tree_size(shared.db_url)
    variables = _earn(f"e-{uuid.uuid4()}", **changes)
    refused(post(shared_api, POST_PURCHASE, variables, shared.keys["grocer"]), "earn", argument)
    assert tree_size(shared.db_url) == before


REFUND = (
    "mutation($ref: String!, $earn: String!) {"
    ' refundPurchase(reference: $ref, earnReference: $earn, refundMinor: "100")'
    " { __typename ... on Refusal { code message } } }"
)
REFUND_REDEMPTION = (
    "mutation($ref: String!, $r: String!) {"
    ' refundRedemption(reference: $ref, redemptionReference: $r, points: "1")'
    " { __typename ... on Refusal { code message } } }"
)


def test_refund_references_are_checked(shared_api: str, shared: Seeded) -> None:
    grocer = shared.keys["grocer"]
    answer = post(shared_api, REFUND, {"ref": "rf-1", "earn": "E\u0000"}, grocer)
    refused(answer, "refundPurchase", "earnReference")
    answer = post(shared_api, REFUND_REDEMPTION, {"ref": "rf-2", "r": "\ud800"}, grocer)
    refused(answer, "refundRedemption", "redemptionReference")


def test_fields_without_a_union_result_answer_bad_user_input(
    shared_api: str, shared: Seeded
) -> None:
    auditor, operator = shared.keys["auditor"], shared.keys["operator"]
    member = "query($m: String!) { member(memberId: $m) { memberId } }"
    bad_input(post(shared_api, member, {"m": "M\u0000001"}, auditor), "memberId")
    entries = "query($k: String) { journalEntries(kind: $k) { edges { cursor } } }"
    bad_input(post(shared_api, entries, {"k": "\ud800"}, auditor), "kind")
    key = "mutation($l: String!) { createApiKey(role: AUDITOR, label: $l) { key } }"
    for label in (" ", "L" * 129, "a\u0000b"):
        bad_input(post(shared_api, key, {"l": label}, operator), "label")
    records = (
        'mutation($r: String!) { submitReconciliation(records: $r, format: "csv",'
        ' fromTime: "2020-01-01T00:00:00.000000Z", toTime: "2020-02-01T00:00:00.000000Z")'
        " { matched } }"
    )
    bad_input(
        post(shared_api, records, {"r": "ref,kind\n\u0000"}, shared.keys["grocer"]), "records"
    )


def test_who_is_asking_comes_before_what_they_sent(shared_api: str) -> None:
    answer = post(shared_api, POST_PURCHASE, _earn("R\u0000"), key=None)
    [error] = answer.json()["errors"]
    assert error["extensions"]["code"] == "UNAUTHENTICATED"


# -- 2. Long: ASCII digits only ---------------------------------------------------------


@pytest.mark.parametrize(
    "text", ["１０００", "١٠٠٠", "+1000", " 1000", "1_000", "1000 ", "9223372036854775808"]
)
def test_a_long_is_ascii_digits_only(shared_api: str, shared: Seeded, text: str) -> None:
    query = "query($s: Long!) { entry(seq: $s) { seq } }"
    body = post(shared_api, query, {"s": text}, shared.keys["auditor"]).json()
    assert body.get("data") is None, body
    [error] = body["errors"]
    assert "Long" in error["message"], error


# -- 3. the HTTP body ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b"123",
        b'"x"',
        b"[]",
        b"null",
        b"\xff\xfe{}",  # not UTF-8
        b'{"query": "{ me { keyId } }", "x": ' + b"[" * 1000 + b"]" * 1000 + b"}",
        b'{"query": "{ me { keyId } }", "variables": '
        + b'{"a": ' * (JSON_DEPTH_MAX + 2)
        + b"1"
        + b"}" * (JSON_DEPTH_MAX + 2)
        + b"}",
        b'{"query": "{ me { keyId } }", "operationName": 5}',
        b'{"query": "{ me { keyId } }", "variables": {"a": NaN}}',
        b"{",
    ],
    ids=lambda b: repr(b[:24]),
)
def test_a_body_that_is_not_one_graphql_request_is_a_400(
    shared_api: str, shared: Seeded, body: bytes
) -> None:
    answer = send(shared_api, body, shared.keys["auditor"])
    assert answer.status_code == 400, answer.text
    [error] = answer.json()["errors"]
    assert error["extensions"]["code"] == "BAD_REQUEST"
    assert error["message"]
    assert "Traceback" not in answer.text


def test_a_request_at_the_nesting_limit_still_runs(shared_api: str, shared: Seeded) -> None:
    nested: Any = 1
    for _ in range(JSON_DEPTH_MAX - 2):
        nested = {"a": nested}
    body = json.dumps({"query": "{ me { keyId } }", "variables": {"unused": nested}})
    answer = send(shared_api, body.encode(), shared.keys["auditor"])
    assert answer.status_code == 200, answer.text
    assert answer.json()["data"]["me"]["keyId"]


# -- 4. and 5. times and rates ------------------------------------------------------------


def _terms(**changes: Any) -> dict[str, Any]:
    variables = {
        "reference": f"terms-{uuid.uuid4()}",
        "partnerId": "grocer",
        "effectiveFrom": "2000-01-01T00:00:00.000000Z",
        "issuancePricePerPoint": "50",
        "redemptionRatePerPoint": "95",
        "operatorFeeBps": 150,
        "breakageShare": "0.5",
        "cycle": "monthly",
        "mode": "multilateral",
    }
    return {**variables, **changes}


@pytest.mark.parametrize(
    ("argument", "value"),
    [
        ("effectiveFrom", "1969-12-31T23:59:59.999999Z"),
        ("effectiveFrom", "0001-01-01T00:00:00.000000Z"),
        ("effectiveFrom", "2000-01-01T00:00:00"),  # no offset: no instant
        ("issuancePricePerPoint", "1e400"),
        ("issuancePricePerPoint", "NaN"),
        ("issuancePricePerPoint", "Infinity"),
        ("issuancePricePerPoint", "-1"),
        ("issuancePricePerPoint", "0.0000000000001"),  # 13 decimal places
        ("issuancePricePerPoint", "１"),
        ("issuancePricePerPoint", "1_0"),
        ("issuancePricePerPoint", " 1"),
        ("issuancePricePerPoint", "1000001"),
        ("redemptionRatePerPoint", "1E+2"),
        ("redemptionRatePerPoint", "9" * 40),
        ("breakageShare", "1.5"),
        ("breakageShare", "-0"),
    ],
)
def test_terms_times_and_rates_are_bounded(
    shared_api: str, shared: Seeded, argument: str, value: str
) -> None:
    before = tree_size(shared.db_url)
    variables = _terms(**{argument: value})
    answer = post(shared_api, PUBLISH_TERMS, variables, shared.keys["operator"])
    refused(answer, "publishTerms", argument)
    assert tree_size(shared.db_url) == before


def test_sound_terms_still_publish(shared_api: str, shared: Seeded) -> None:
    variables = _terms(issuancePricePerPoint="0.000000000001", breakageShare="1")
    answer = post(shared_api, PUBLISH_TERMS, variables, shared.keys["operator"])
    assert result(answer, "publishTerms")["__typename"] == "Recorded"


def test_other_times_are_bounded_too(shared_api: str, shared: Seeded) -> None:
    kpis = "query($f: String!, $t: String!) { kpis(fromTime: $f, toTime: $t) { purchases } }"
    variables = {"f": "1969-01-01T00:00:00.000000Z", "t": "2020-01-01T00:00:00.000000Z"}
    bad_input(post(shared_api, kpis, variables, shared.keys["finance"]), "fromTime")
    rules = (
        'mutation($e: String!) { publishEarningRules(reference: "er-1", partnerId: "grocer",'
        ' effectiveFrom: $e, currency: "RUB", pointsPerStep: 1, stepMinor: "100")'
        " { __typename ... on Refusal { code message } } }"
    )
    answer = post(shared_api, rules, {"e": "1960-01-01T00:00:00.000000Z"}, shared.keys["operator"])
    refused(answer, "publishEarningRules", "effectiveFrom")


# -- 6. several operations ----------------------------------------------------------------


def test_several_operations_need_an_operation_name(shared_api: str, shared: Seeded) -> None:
    document = "query A { me { keyId } } query B { me { role } }"
    key = shared.keys["auditor"]
    body = json.dumps({"query": document}).encode()
    answer = send(shared_api, body, key).json()
    assert answer.get("data") is None, answer
    assert [e["message"] for e in answer["errors"]] == [SEVERAL_OPERATIONS]
    named = json.dumps({"query": document, "operationName": "B"}).encode()
    assert send(shared_api, named, key).json() == {"data": {"me": {"role": "AUDITOR"}}}


# -- 7. no suggestions outside development ------------------------------------------------


def test_errors_suggest_field_names_only_in_development(
    shared: Seeded, settings: Settings, serve: Callable[[Starlette], str], shared_api: str
) -> None:
    key = shared.keys["auditor"]
    typo = json.dumps({"query": "{ mee { keyId } }"}).encode()
    [error] = send(shared_api, typo, key).json()["errors"]
    assert "Did you mean" in error["message"]  # development
    production = serve(create_app(dataclasses.replace(settings, development=False), shared.db_url))
    typos = [
        "{ mee { keyId } }",
        "{ me { keyid } }",
        '{ member(memberid: "M001") { memberId } }',
        "query($r: Rol!) { me { keyId } }",
    ]
    for document in typos:
        answer = send(production, json.dumps({"query": document}).encode(), key).json()
        messages = [e["message"] for e in answer["errors"]]
        assert messages and not [m for m in messages if "Did you mean" in m], messages
    # Variables are coerced at execution: their errors have no suggestions either.
    key_query = 'mutation($r: Role!) { createApiKey(role: $r, label: "x") { key } }'
    body = json.dumps({"query": key_query, "variables": {"r": "AUDITR"}}).encode()
    answer = send(production, body, shared.keys["operator"]).json()
    messages = [e["message"] for e in answer["errors"]]
    assert messages and not [m for m in messages if "Did you mean" in m], messages
    [error] = send(production, typo, key).json()["errors"]
    assert error["message"] == "Cannot query field 'mee' on type 'Query'."
