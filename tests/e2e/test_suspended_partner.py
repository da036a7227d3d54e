# ruff: noqa: F811  (pytest fixtures imported from another module, used as parameters)
"""A suspended partner's key, over HTTP against the real app, on every field of the
schema (the authorisation matrix's requests, tests/e2e/test_authorization_matrix.py):
the fields that read the partner's own records answer as before; every other field a
partner may use — the member lookup and every mutation — is refused with
PARTNER_SUSPENDED (a typed error, or the mutation's PartnerSuspended result) and writes
nothing; the fields a partner may never use stay FORBIDDEN. The policy is
docs/DESIGN.md's "Suspended partners"."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from coalition.context import Coalition
from coalition.partners import set_partner_status
from tests.e2e.test_authorization_matrix import (  # noqa: F401 (fixtures)
    EXPECTED,
    FORBIDDEN,
    ME,
    OWN,
    REQUESTS,
    SCHEMA_FIELDS,
    World,
    _ask,
    _assert_refused,
    _field_name,
    _footprint,
    _periods_end_now,
    matrix_db_url,
    world,
)

# What a suspended partner's key may still read: its own records, to reconcile and
# close its books. Everything else a partner may do is refused.
OWN_RECORDS = frozenset(
    {
        "Query.me",
        "Query.partner",
        "Query.journalEntries",
        "Query.entry",
        "Query.checkpoints",
        "Query.inclusionProof",
        "Query.consistencyProof",
        "Query.myRuns",
        "Query.partnerKpis",  # its own row only: its own activity
        "Query.statement",
        "Query.reconciliations",
    }
)
SUSPENSION_SEEN_SECONDS_MAX = 5.0
PARTNER_FIELDS = [f for f in SCHEMA_FIELDS if EXPECTED[f]["partner"] != FORBIDDEN]
NEVER_FIELDS = [f for f in SCHEMA_FIELDS if EXPECTED[f]["partner"] == FORBIDDEN]


@pytest.fixture(scope="module")
def suspended(world: World) -> Iterator[World]:
    with psycopg.connect(world.db_url, autocommit=True) as conn:
        outcome = set_partner_status(Coalition(), conn, ME, "suspended", "suspend-for-test")
    assert not hasattr(outcome, "code"), outcome
    # The server heard of it (the status change's notification): its member lookup,
    # allowed a moment ago, is now refused.
    lookup = REQUESTS["Query.member"](world, OWN)
    deadline = time.monotonic() + SUSPENSION_SEEN_SECONDS_MAX
    while "errors" not in _ask(world, lookup, world.keys["me"]):
        assert time.monotonic() < deadline, "the suspension was not seen"
        time.sleep(0.05)
    yield world


def test_the_policy_names_only_fields_of_the_schema() -> None:
    assert set(PARTNER_FIELDS) >= OWN_RECORDS
    assert not any(f.startswith("Mutation.") for f in OWN_RECORDS)


@pytest.mark.parametrize("field", PARTNER_FIELDS)
def test_a_suspended_partner_reads_its_own_records_and_nothing_else(
    suspended: World, field: str
) -> None:
    call = REQUESTS[field](suspended, OWN)
    key = suspended.keys["me"]
    before = _footprint(suspended)
    body = _ask(suspended, call, key)
    assert _footprint(suspended) == before, f"{field} by a suspended partner wrote something"
    if field in OWN_RECORDS:
        assert "errors" not in body, body
        assert body["data"][_field_name(field)] is not None, body
        return
    answer: Any = (body.get("data") or {}).get(_field_name(field))
    codes = [(e.get("extensions") or {}).get("code") for e in body.get("errors") or []]
    if answer is None:
        assert codes == ["PARTNER_SUSPENDED"], body
    else:  # a mutation's typed result
        assert (answer.get("__typename"), answer.get("code")) == (
            "PartnerSuspended",
            "PARTNER_SUSPENDED",
        ), body


@pytest.mark.parametrize("field", NEVER_FIELDS)
def test_what_a_partner_may_never_do_stays_forbidden(suspended: World, field: str) -> None:
    _assert_refused(
        suspended, field, REQUESTS[field](suspended, OWN), suspended.keys["me"], "FORBIDDEN"
    )


def test_an_active_partner_is_untouched(suspended: World) -> None:
    body = _ask(suspended, REQUESTS["Query.member"](suspended, OWN), suspended.keys["other"])
    assert "errors" not in body, body
