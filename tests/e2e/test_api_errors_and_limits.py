"""The API's edges over real HTTP: authentication and roles, what a partner may not see
(and that it cannot tell a foreign object from a missing one), error masking, the query
limits, body size and rate limits, introspection outside development, request ids, and
the operational endpoints."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import re
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import httpx
import psycopg
import pytest
from starlette.applications import Starlette

from coalition.api import convert
from coalition.api.app import BODY_BYTES_MAX, create_app
from coalition.api.db import CONNECTIONS_MAX
from coalition.api.ratelimit import RateLimiter
from coalition.api.schema import ALIASES_MAX, DEPTH_MAX, TOKENS_MAX
from coalition.api.trusted import OPERATIONS_DIR, sha256_hex
from coalition.migrate import head_revision
from coalition.partners import get_partner
from coalition.settings import Settings
from ledger import checkpoint_log, reads
from ledger.checkpoint import open_checkpoint
from ledger.merkle_verify import verify_inclusion
from ledger.signed_note import Signer, Verifier
from ledger.timefmt import now_us

if TYPE_CHECKING:
    from tests.e2e.conftest import Seeded

ME = "query WhoAmI { me { role partnerId keyId } }"
TIMEOUT_SECONDS = 30


def post(
    url: str,
    query: str,
    variables: dict[str, Any] | None = None,
    key: str | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    sent = dict(headers or {})
    if key is not None:
        sent["Authorization"] = f"Bearer {key}"
    body = {"query": query, "variables": variables or {}}
    return httpx.post(f"{url}/graphql", json=body, headers=sent, timeout=TIMEOUT_SECONDS)


def data(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    assert "errors" not in answer, answer["errors"]
    return dict(answer["data"])


def error_codes(response: httpx.Response) -> list[str | None]:
    errors = response.json()["errors"]
    return [(e.get("extensions") or {}).get("code") for e in errors]


def error_messages(response: httpx.Response) -> list[str]:
    return [e["message"] for e in response.json()["errors"]]


# -- authentication and roles ------------------------------------------------------------


def test_missing_malformed_and_wrong_keys_are_unauthenticated(
    shared_api: str, shared: Seeded
) -> None:
    api, grocer = shared_api, shared.keys["grocer"]
    key_id = grocer.split("_")[1]
    wrong_secret = f"ck_{key_id}_{'A' * 43}"
    answers = [
        post(api, ME),
        post(api, ME, key="not-a-key"),
        post(api, ME, key=wrong_secret),
        post(api, ME, headers={"Authorization": f"Basic {grocer}"}),
    ]
    for answer in answers:
        assert answer.status_code == 200
        assert answer.json()["data"] is None
        assert error_codes(answer) == ["UNAUTHENTICATED"]
    # The same words whatever was wrong: nothing to learn about which key ids exist.
    assert len({answer.text for answer in answers}) == 1
    assert data(post(api, ME, key=grocer))["me"]["partnerId"] == "grocer"


def test_a_revoked_key_fails_from_the_next_request(shared_api: str, shared: Seeded) -> None:
    api, operator = shared_api, shared.keys["operator"]
    created = data(
        post(
            api,
            "mutation($label: String!) { createApiKey(role: AUDITOR, label: $label) {"
            " key info { keyId role } } }",
            {"label": "temporary auditor"},
            key=operator,
        )
    )["createApiKey"]
    key, key_id = created["key"], created["info"]["keyId"]
    assert data(post(api, ME, key=key))["me"] == {
        "role": "AUDITOR",
        "partnerId": None,
        "keyId": key_id,
    }
    revoke = "mutation($id: String!) { revokeApiKey(keyId: $id) }"
    assert data(post(api, revoke, {"id": key_id}, key=operator)) == {"revokeApiKey": True}
    assert error_codes(post(api, ME, key=key)) == ["UNAUTHENTICATED"]
    assert data(post(api, revoke, {"id": key_id}, key=operator)) == {"revokeApiKey": False}


@pytest.mark.parametrize(
    ("who", "operation"),
    [
        ("grocer", 'mutation { onboardPartner(partnerId: "rogue", legalName: "Rogue",'
         ' settlementCurrency: "RUB") { __typename } }'),
        ("grocer", 'mutation { computeSettlement(period: "2027-01") { runId } }'),
        ("grocer", 'query { kpis(fromTime: "2020-01-01T00:00:00.000000Z",'
         ' toTime: "2030-01-01T00:00:00.000000Z") { purchases } }'),
        ("auditor", 'mutation { createApiKey(role: OPERATOR, label: "mine") { key } }'),
        ("finance", 'mutation { earn(reference: "f", member: {memberId: "M001"},'
         ' purchaseMinor: "100", currency: "RUB") { __typename } }'),
        ("operator", 'mutation { approveSettlement(runId: "2027-01") { __typename } }'),
    ],
)  # fmt: skip
def test_a_key_may_not_act_outside_its_role(
    shared_api: str, shared: Seeded, who: str, operation: str
) -> None:
    with psycopg.connect(shared.db_url, autocommit=True) as conn:
        size_before = reads.head(conn).tree_size
        answer = post(shared_api, operation, key=shared.keys[who])
        assert answer.json()["data"] is None
        assert error_codes(answer) == ["FORBIDDEN"]
        assert reads.head(conn).tree_size == size_before  # nothing was written
        assert get_partner(conn, "rogue") is None


# -- a partner sees its own ---------------------------------------------------------------


def _seq(db_url: str, scope: str, reference: str) -> int:
    with psycopg.connect(db_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT seq FROM ledger_entry WHERE ref_scope = %s AND ref_key = %s",
            (scope, reference),
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_a_partner_cannot_tell_anothers_objects_from_missing_ones(
    api: str, seeded: Seeded, signer: Signer, period: str
) -> None:
    grocer = seeded.keys["grocer"]
    with psycopg.connect(seeded.db_url, autocommit=True) as conn:
        checkpoint_log.sign_now(conn, signer, now_us())  # so that inclusion proofs exist
    compute = "mutation($p: String!) { computeSettlement(period: $p) { runId } }"
    run_id = data(post(api, compute, {"p": period}, key=seeded.keys["finance"]))[
        "computeSettlement"
    ]["runId"]
    own = _seq(seeded.db_url, "partner:grocer", "seed-earn-1")  # M001 earns at grocer…
    foreign = _seq(seeded.db_url, "partner:airline", "seed-redeem-1")  # …and spends at airline
    missing = 10**12

    def as_grocer(query: str, variables: dict[str, Any]) -> httpx.Response:
        return post(api, query, variables, key=grocer)

    cases: list[tuple[str, dict[str, Any], dict[str, Any], dict[str, Any]]] = [
        (
            "query($p: String!) { partner(partnerId: $p) { partnerId issuedPoints } }",
            {"p": "grocer"},
            {"p": "airline"},
            {"p": "no-such-partner"},
        ),
        (
            "query($s: Long!) { entry(seq: $s) { seq kind refScope } }",
            {"s": own},
            {"s": foreign},
            {"s": missing},
        ),
        (
            "query($s: Long!) { inclusionProof(seq: $s) { seq treeSize auditPathBase64 } }",
            {"s": own},
            {"s": foreign},
            {"s": missing},
        ),
        (
            "query($r: String!, $p: String!) { statement(runId: $r, party: $p) { content } }",
            {"r": run_id, "p": "grocer"},
            {"r": run_id, "p": "airline"},
            {"r": "no-such-run", "p": "grocer"},
        ),
    ]
    for query, yours, theirs, nowhere in cases:
        [found] = data(as_grocer(query, yours)).values()
        assert found is not None, query  # the query finds the partner's own
        other, absent = as_grocer(query, theirs), as_grocer(query, nowhere)
        assert list(data(other).values()) == [None], query
        assert other.content == absent.content, query  # byte for byte the same answer

    # Lists hold only the partner's own: the journal, a member's history, reconciliations.
    page = as_grocer("{ journalEntries(first: 100) { edges { node { refScope } } } }", {})
    scopes = {edge["node"]["refScope"] for edge in data(page)["journalEntries"]["edges"]}
    assert scopes == {"partner:grocer"}
    history = as_grocer('{ member(memberId: "M001", historyFirst: 100) { history { seq } } }', {})
    seqs = {int(line["seq"]) for line in data(history)["member"]["history"]}
    assert own in seqs and foreign not in seqs
    submit = (
        'mutation { submitReconciliation(records: "[]", format: "json",'
        ' fromTime: "2020-01-01T00:00:00.000000Z", toTime: "2030-01-01T00:00:00.000000Z")'
        " { reconciliationId } }"
    )
    data(post(api, submit, key=seeded.keys["airline"]))
    listing = '{ reconciliations(partnerId: "airline") { reconciliationId } }'
    assert len(data(post(api, listing, key=seeded.keys["airline"]))["reconciliations"]) == 1
    assert data(as_grocer(listing, {})) == {"reconciliations": []}


# -- errors say little, limits hold ---------------------------------------------------------


def test_an_unexpected_error_is_masked(
    shared_api: str, shared: Seeded, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An error no resolver expects, raised deep in a read (bad input no longer gets that
    # far: the argument checks refuse it, see test_input_hardening.py).
    def broken(*args: object) -> None:
        raise ValueError("psycopg: NUL in text, in SELECT ... (File x.py)")

    monkeypatch.setattr(convert, "partner", broken)
    query = "query($p: String!) { partner(partnerId: $p) { partnerId } }"
    answer = post(shared_api, query, {"p": "grocer"}, key=shared.keys["grocer"])
    assert answer.status_code == 200
    body = answer.json()
    assert body["data"] == {"partner": None}
    [error] = body["errors"]
    assert error["message"] == "internal error"
    assert (error.get("extensions") or {}).get("code", "INTERNAL") == "INTERNAL"
    for leak in ("Traceback", "psycopg", "NUL", "File ", ".py", "SELECT"):
        assert leak not in answer.text


def test_too_deep_a_query_is_refused(shared_api: str, shared: Seeded) -> None:
    # The schema has no cycles, so no valid query is deeper than 8; the limiter counts
    # selections before field checks, so its own error is among the answers.
    nested = "{ a " * (DEPTH_MAX + 2) + "}" * (DEPTH_MAX + 2)
    answer = post(shared_api, "query Deep { me " + nested + " }", key=shared.keys["auditor"])
    assert f"'Deep' exceeds maximum operation depth of {DEPTH_MAX}" in error_messages(answer)
    shallow = "{ a " * (DEPTH_MAX - 2) + "}" * (DEPTH_MAX - 2)
    answer = post(shared_api, "query Shallow { me " + shallow + " }", key=shared.keys["auditor"])
    assert not [m for m in error_messages(answer) if "maximum operation depth" in m]


def test_too_many_aliases_are_refused(shared_api: str, shared: Seeded) -> None:
    def aliased(count: int) -> str:
        return "{ " + " ".join(f"a{i}: me {{ keyId }}" for i in range(count)) + " }"

    key = shared.keys["auditor"]
    assert len(data(post(shared_api, aliased(ALIASES_MAX), key=key))) == ALIASES_MAX
    answer = post(shared_api, aliased(ALIASES_MAX + 1), key=key)
    assert answer.json().get("data") is None
    assert error_messages(answer) == [f"{ALIASES_MAX + 1} aliases found. Allowed: {ALIASES_MAX}"]


def test_too_many_tokens_are_refused(shared_api: str, shared: Seeded) -> None:
    key = shared.keys["auditor"]
    fits = "{ me { " + "keyId " * (TOKENS_MAX // 4) + "} }"  # long, but under the limit
    assert data(post(shared_api, fits, key=key))["me"]["keyId"]
    answer = post(shared_api, "{ me { " + "keyId " * TOKENS_MAX + "} }", key=key)
    assert answer.json().get("data") is None
    [message] = error_messages(answer)
    assert f"more than {TOKENS_MAX} tokens" in message


@pytest.mark.parametrize(
    "query",
    [
        "{ journalEntries(first: %d) { edges { cursor } } }",
        "{ checkpoints(first: %d) { treeSize } }",
        "{ settlementRuns(first: %d) { runId } }",
        '{ member(memberId: "M001", historyFirst: %d) { memberId } }',
    ],
)
def test_page_size_is_at_most_a_hundred(shared_api: str, shared: Seeded, query: str) -> None:
    key = shared.keys["auditor"]
    data(post(shared_api, query % 100, key=key))
    for size in (101, 0, -1):
        assert error_codes(post(shared_api, query % size, key=key)) == ["BAD_USER_INPUT"]


def test_bad_input_errors_say_what_is_wrong(shared_api: str, shared: Seeded) -> None:
    # BadInput is raised with a detail ("first must be 1–100"), but clients get only the
    # class default "invalid input": see the report on coalition/api/errors.py.
    key = shared.keys["auditor"]
    answer = post(shared_api, "{ journalEntries(first: 101) { edges { cursor } } }", key=key)
    assert error_codes(answer) == ["BAD_USER_INPUT"]
    assert error_messages(answer) == ["first must be 1–100"]


def test_a_malformed_long_is_a_client_error_not_an_internal_one(
    shared_api: str, shared: Seeded
) -> None:
    # The input was wrong, not the server: the answer should say so (and which input).
    key = shared.keys["auditor"]
    query = "query($s: Long!) { entry(seq: $s) { seq } }"
    for bad in ("twelve", "99999999999999999999", 1.5):
        [message] = error_messages(post(shared_api, query, {"s": bad}, key=key))
        assert message != "internal error" and "Long" in message, (bad, message)


def test_a_body_over_one_mebibyte_is_refused_with_413(shared_api: str, shared: Seeded) -> None:
    padding = "x" * BODY_BYTES_MAX
    body = json.dumps({"query": ME, "variables": {"padding": padding}}).encode()
    answer = httpx.post(
        f"{shared_api}/graphql",
        content=body,
        headers={
            "Content-Type": "application/json",
            "Authorization": f"Bearer {shared.keys['grocer']}",
        },
        timeout=TIMEOUT_SECONDS,
    )
    assert answer.status_code == 413
    assert error_codes(answer) == ["PAYLOAD_TOO_LARGE"]
    just_under = json.dumps({"query": ME, "variables": {"padding": ""}}).encode()
    small = b" " * (BODY_BYTES_MAX - len(just_under)) + just_under  # JSON allows leading space
    assert len(small) == BODY_BYTES_MAX
    answer = httpx.post(
        f"{shared_api}/graphql",
        content=small,
        headers={
            "Content-Type": "application/json",
            "Authorization": f"Bearer {shared.keys['grocer']}",
        },
        timeout=TIMEOUT_SECONDS,
    )
    assert data(answer)["me"]["partnerId"] == "grocer"


def test_a_chunked_body_over_one_mebibyte_is_refused_too(shared_api: str, shared: Seeded) -> None:
    # Without Content-Length (Transfer-Encoding: chunked) the gate has no length to check;
    # the body must still be bounded. See the report on coalition/api/app.py.
    body = json.dumps({"query": ME, "variables": {"padding": "x" * 2 * BODY_BYTES_MAX}}).encode()

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 1 << 16):
            yield body[start : start + (1 << 16)]

    answer = httpx.post(
        f"{shared_api}/graphql",
        content=chunks(),
        headers={
            "Content-Type": "application/json",
            "Authorization": f"Bearer {shared.keys['grocer']}",
        },
        timeout=TIMEOUT_SECONDS,
    )
    assert answer.request.headers.get("transfer-encoding") == "chunked"
    assert answer.status_code == 413


# -- rate limits, production settings, request ids, operations ------------------------------

TINY_BURST = 3


@pytest.fixture()
def limited_api(shared: Seeded, settings: Settings, serve: Callable[[Starlette], str]) -> str:
    # A partner key may burst to 3 and then refills at one request per 1000 s.
    limits = {"partner": (0.001, TINY_BURST), "anonymous": (0.001, TINY_BURST)}
    return serve(create_app(settings, shared.db_url, limiter=RateLimiter(limits)))


def test_a_key_over_its_rate_gets_429_with_retry_after(limited_api: str, shared: Seeded) -> None:
    grocer, airline = shared.keys["grocer"], shared.keys["airline"]
    for _ in range(TINY_BURST):
        assert data(post(limited_api, ME, key=grocer))["me"]["partnerId"] == "grocer"
    refused = post(limited_api, ME, key=grocer)
    assert refused.status_code == 429
    assert error_codes(refused) == ["RATE_LIMITED"]
    retry_after_seconds = int(refused.headers["Retry-After"])
    assert 1 <= retry_after_seconds <= 1000
    # Buckets are per key: another partner is not held back by grocer's burst.
    assert data(post(limited_api, ME, key=airline))["me"]["partnerId"] == "airline"
    metrics = httpx.get(f"{limited_api}/metrics", timeout=TIMEOUT_SECONDS).text
    assert re.search(r'^api_rate_limited_total\{role="partner"\} [1-9]', metrics, re.M)


def test_gate_refusals_echo_the_request_id_too(limited_api: str, shared: Seeded) -> None:
    # "Every request gets a request id (echoed as X-Request-Id …)" — but 413 and 429 are
    # answered before the header is set. See the report on coalition/api/app.py.
    grocer = shared.keys["grocer"]
    for _ in range(TINY_BURST):
        post(limited_api, ME, key=grocer)
    limited = post(limited_api, ME, key=grocer, headers={"X-Request-Id": "req-429"})
    assert limited.status_code == 429
    big = httpx.post(
        f"{limited_api}/graphql",
        content=b" " * (BODY_BYTES_MAX + 1),
        headers={"Content-Type": "application/json", "X-Request-Id": "req-413"},
        timeout=TIMEOUT_SECONDS,
    )
    assert big.status_code == 413
    assert (limited.headers.get("X-Request-Id"), big.headers.get("X-Request-Id")) == (
        "req-429",
        "req-413",
    )


INTROSPECTION = "{ __schema { queryType { name } } }"


def test_introspection_and_graphiql_only_in_development(
    shared: Seeded, settings: Settings, serve: Callable[[Starlette], str], shared_api: str
) -> None:
    key = shared.keys["auditor"]
    assert data(post(shared_api, INTROSPECTION, key=key)) == {
        "__schema": {"queryType": {"name": "Query"}}
    }
    production = serve(create_app(dataclasses.replace(settings, development=False), shared.db_url))
    answer = post(production, INTROSPECTION, key=key)
    assert answer.json().get("data") is None
    assert [m for m in error_messages(answer) if "introspection" in m.lower()]
    assert data(post(production, ME, key=key))["me"]["role"] == "AUDITOR"  # the rest works
    page = {"Accept": "text/html"}
    assert "graphiql" in httpx.get(f"{shared_api}/graphql", headers=page).text.lower()
    assert httpx.get(f"{production}/graphql", headers=page).status_code == 404


def test_the_request_id_is_echoed_or_made(shared_api: str, shared: Seeded) -> None:
    key = shared.keys["auditor"]
    given = post(shared_api, ME, key=key, headers={"X-Request-Id": "till-7-0042"})
    assert given.headers["X-Request-Id"] == "till-7-0042"
    made = post(shared_api, ME, key=key)
    assert re.fullmatch(r"[0-9a-f]{32}", made.headers["X-Request-Id"])
    assert made.headers["X-Request-Id"] != post(shared_api, ME, key=key).headers["X-Request-Id"]
    bounded = post(shared_api, ME, key=key, headers={"X-Request-Id": "r" * 500})
    assert bounded.headers["X-Request-Id"] == "r" * 64
    health = httpx.get(f"{shared_api}/healthz", headers={"X-Request-Id": "probe-1"})
    assert health.headers["X-Request-Id"] == "probe-1"


def test_operational_endpoints(
    api: str, seeded: Seeded, signer: Signer, verifier: Verifier
) -> None:
    health = httpx.get(f"{api}/healthz", timeout=TIMEOUT_SECONDS)
    assert (health.status_code, health.text) == (200, "ok\n")
    ready = httpx.get(f"{api}/readyz", timeout=TIMEOUT_SECONDS)
    assert (ready.status_code, ready.json()) == (200, {"database": "ready"})
    assert httpx.get(f"{api}/checkpoint", timeout=TIMEOUT_SECONDS).status_code == 404

    data(post(api, "query WhoAmI { me { keyId } }", key=seeded.keys["auditor"]))
    data(post(api, "query MadeUpName123 { me { keyId } }", key=seeded.keys["auditor"]))
    metrics = httpx.get(f"{api}/metrics", timeout=TIMEOUT_SECONDS)
    assert metrics.status_code == 200
    assert re.search(
        r'^graphql_requests_total\{operation="WhoAmI",outcome="ok"\} [1-9]', metrics.text, re.M
    )
    # A client's own operation names do not become labels (unbounded): they count as other.
    assert "MadeUpName123" not in metrics.text
    assert re.search(
        r'^graphql_requests_total\{operation="other",outcome="ok"\} [1-9]', metrics.text, re.M
    )
    with psycopg.connect(seeded.db_url, autocommit=True) as conn:
        size = reads.head(conn).tree_size
        stored = checkpoint_log.sign_now(conn, signer, now_us())
    assert re.search(rf"^journal_entries {size}(\.0)?$", metrics.text, re.M)

    published = httpx.get(f"{api}/checkpoint", timeout=TIMEOUT_SECONDS)
    assert published.status_code == 200
    assert published.content == stored.signed_note
    checkpoint = open_checkpoint(published.content, verifier)
    assert checkpoint.tree_size == size

    seq = size - 1
    proof = httpx.get(f"{api}/proof/inclusion", params={"seq": seq, "size": size})
    path = [base64.b64decode(line) for line in proof.text.splitlines()]
    with psycopg.connect(seeded.db_url, autocommit=True) as conn:
        stored_entry = reads.entry(conn, seq)
    assert stored_entry is not None
    verify_inclusion(stored_entry.leaf_hash, seq, size, path, checkpoint.root_hash)
    assert httpx.get(f"{api}/proof/inclusion", params={"seq": "x"}).status_code == 400
    beyond = httpx.get(f"{api}/proof/consistency", params={"old": size, "new": size + 5})
    assert beyond.status_code == 400


# -- trusted documents ---------------------------------------------------------------------


def test_partner_keys_held_to_trusted_documents_run_the_published_operations_only(
    shared: Seeded, settings: Settings, serve: Callable[[Starlette], str]
) -> None:
    held = dataclasses.replace(settings, trusted_documents_roles=frozenset({"partner"}))
    url = serve(create_app(held, shared.db_url))
    grocer, auditor = shared.keys["grocer"], shared.keys["auditor"]
    who_am_i = (OPERATIONS_DIR / "partner" / "WhoAmI.graphql").read_text()

    assert data(post(url, who_am_i, key=grocer))["me"]["partnerId"] == "grocer"
    by_hash = {"persistedQuery": {"version": 1, "sha256Hash": sha256_hex(who_am_i)}}
    named = httpx.post(
        f"{url}/graphql",
        json={"extensions": by_hash, "variables": {}},
        headers={"Authorization": f"Bearer {grocer}"},
        timeout=TIMEOUT_SECONDS,
    )
    assert data(named)["me"]["partnerId"] == "grocer"

    free_text = post(url, ME, key=grocer)
    assert free_text.status_code == 200
    assert free_text.json().get("data") is None
    assert error_codes(free_text) == ["TRUSTED_DOCUMENT_REQUIRED"]
    # Other roles are not held: an auditor still writes its own queries.
    assert data(post(url, ME, key=auditor))["me"]["role"] == "AUDITOR"
    unknown = httpx.post(
        f"{url}/graphql",
        json={"extensions": {"persistedQuery": {"version": 1, "sha256Hash": "0" * 64}}},
        headers={"Authorization": f"Bearer {auditor}"},
        timeout=TIMEOUT_SECONDS,
    )
    assert error_codes(unknown) == ["PERSISTED_QUERY_NOT_FOUND"]


# -- many tills at once ----------------------------------------------------------------------


def test_more_concurrent_tills_than_pooled_connections_are_all_answered(
    api: str, seeded: Seeded
) -> None:
    """48 earns at once against a pool of 16: each request holds a connection while its
    append waits for the group committer, which must never need one of those."""
    tills = 3 * CONNECTIONS_MAX
    earn = (
        'mutation Earn($ref: String!) { earn(reference: $ref, member: {memberId: "M002"},'
        ' purchaseMinor: 100000, currency: "RUB") { __typename ... on Earned { seq } } }'
    )

    async def main() -> list[httpx.Response]:
        headers = {"Authorization": f"Bearer {seeded.keys['grocer']}"}
        async with httpx.AsyncClient(base_url=api, headers=headers, timeout=60) as client:
            calls = [
                client.post("/graphql", json={"query": earn, "variables": {"ref": f"c-{i}"}})
                for i in range(tills)
            ]
            return await asyncio.gather(*calls)

    answers = asyncio.run(main())
    earned = [data(a)["earn"] for a in answers]
    assert {e["__typename"] for e in earned} == {"Earned"}
    assert len({e["seq"] for e in earned}) == tills


def test_readiness_says_not_ready_when_the_database_is_behind_the_code(
    api: str, seeded: Seeded
) -> None:
    assert httpx.get(f"{api}/readyz", timeout=TIMEOUT_SECONDS).status_code == 200
    with psycopg.connect(seeded.db_url, autocommit=True) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '0001_older'")
    behind = httpx.get(f"{api}/readyz", timeout=TIMEOUT_SECONDS)
    assert (behind.status_code, behind.json()) == (503, {"database": "not ready"})
    with psycopg.connect(seeded.db_url, autocommit=True) as conn:
        conn.execute("UPDATE alembic_version SET version_num = %s", (head_revision(),))
    assert httpx.get(f"{api}/readyz", timeout=TIMEOUT_SECONDS).status_code == 200


# -- lots are paged ----------------------------------------------------------------------


def test_a_members_lots_come_in_pages_and_a_partner_pages_through_its_own(
    api: str, seeded: Seeded
) -> None:
    grocer, airline, auditor = (seeded.keys[k] for k in ("grocer", "airline", "auditor"))
    earn = (
        'mutation Earn($ref: String!) { earn(reference: $ref, member: {memberId: "M003"},'
        ' purchaseMinor: 100000, currency: "RUB") { __typename } }'
    )
    for i in range(5):
        for key, ref in ((grocer, f"lot-g{i}"), (airline, f"lot-a{i}")):
            assert data(post(api, earn, {"ref": ref}, key=key))["earn"]["__typename"] == "Earned"
    page = (
        'query Lots($first: Int!, $after: String) { member(memberId: "M003")'
        " { lots(first: $first, afterLotId: $after) { lotId origin } } }"
    )

    def all_lots(key: str, first: int) -> list[dict[str, str]]:
        seen: list[dict[str, str]] = []
        after = None
        while True:
            lots = data(post(api, page, {"first": first, "after": after}, key=key))["member"]
            chunk = lots["lots"]
            assert len(chunk) <= first
            if not chunk:
                return seen
            seen += chunk
            after = chunk[-1]["lotId"]

    everything = data(post(api, page, {"first": 100}, key=auditor))["member"]["lots"]
    assert all_lots(auditor, 3) == everything  # pages of 3, in the same order, no gaps
    assert len(everything) >= 10
    own = all_lots(airline, 2)
    assert own == [lot for lot in everything if lot["origin"] == "airline"]
    assert len(own) >= 5

    for variables in ({"first": 101}, {"first": 0}, {"first": 5, "after": "not-a-lot"}):
        refused = post(api, page, variables, key=auditor)
        assert error_codes(refused) == ["BAD_USER_INPUT"], variables
