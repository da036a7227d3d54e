"""The batch's shared reads (coalition.batch_reads) against PostgreSQL: a round of the use
cases' reads of one statement, sent as one, answers each read exactly what the statement
sent alone answers; a read the server refuses fails alone."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from coalition import accounts
from coalition.batch_reads import Read, Rows, read_round, shared_read
from coalition.context import Coalition
from coalition.earn import earn_points
from coalition.earning import EarningRules
from coalition.members import enroll_member
from coalition.outcomes import Refusal
from coalition.partners import get_partner, onboard_partner, publish_earning_rules
from coalition.policy import earn_context, rolling_spend_minor
from ledger import reads

T0 = 1_800_000_000_000_000


class Recording:
    """A connection that keeps every statement it is asked to run."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn
        self.reads: list[tuple[str, Any]] = []

    def execute(self, query: str, params: Any = None) -> Any:
        self.reads.append((query, params))
        return self.conn.execute(query, params)


@pytest.fixture()
def conn(db_url: str) -> Iterator[psycopg.Connection[Any]]:
    co = Coalition(clock_us=lambda: T0)
    with psycopg.connect(db_url, autocommit=True) as c:
        assert not isinstance(onboard_partner(co, c, "grocer", "Grocer Ltd", "RUB"), Refusal)
        rules = EarningRules("RUB", 1, 100, {})
        assert not isinstance(publish_earning_rules(co, c, "grocer", rules, 0, "r1"), Refusal)
        for m in range(4):
            assert not isinstance(enroll_member(co, c, f"M{m}"), Refusal)
        for i in range(6):  # lots for M0 and M1, none for M2 and M3
            earned = earn_points(
                co,
                c,
                partner_id="grocer",
                ref_key=f"e{i}",
                purchase_minor=100 * (i + 1),
                currency="RUB",
                member_id=f"M{i % 2}",
            )
            assert not isinstance(earned, Refusal)
        yield c


def alone(conn: psycopg.Connection[Any], query: str, params: Any) -> list[tuple[Any, ...]]:
    return [tuple(row) for row in conn.execute(query, params).fetchall()]


def recorded(conn: psycopg.Connection[Any], call: Any, args: list[Any]) -> list[tuple[str, Any]]:
    recording = Recording(conn)
    for a in args:
        call(recording, *a)
    return recording.reads


MEMBERS = [("M0",), ("M1",), ("M2",), ("NOBODY",)]
CASES = {
    # named parameters, one used twice, a null among texts (no member named), one row
    "earn_context": (
        lambda c, m: earn_context(c, "grocer", m, T0),
        [*MEMBERS, (None,)],
    ),
    # many rows each, in the statement's own order; none for some
    "lots": (lambda c, m: reads.lots(c, accounts.member(m)), MEMBERS),
    # an aggregate: one row whatever matches
    "rolling_spend": (lambda c, m: rolling_spend_minor(c, m, "RUB", 0, T0 + 1), MEMBERS),
    "partner": (lambda c, p: get_partner(c, p), [("grocer",), ("nobody",)]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_shared_read_answers_each_read_as_the_statement_alone(
    conn: psycopg.Connection[Any], case: str
) -> None:
    """The use cases' own statements (recorded from the functions they call), shared:
    every read gets the very rows, in the very order, that its statement sent alone
    gets — also when it gets none, or several."""
    call, args = CASES[case]
    statements = recorded(conn, call, args)
    [query] = {q for q, _ in statements}
    params = [p for _, p in statements]
    shared = shared_read(query, params)
    assert shared is not None, "the use case's read is one that can be shared"
    by_read: dict[int, list[tuple[Any, ...]]] = {i: [] for i in range(1, len(params) + 1)}
    for ordinal, _n, *row in conn.execute(*shared).fetchall():
        by_read[ordinal].append(tuple(row))
    assert [by_read[i + 1] for i in range(len(params))] == [alone(conn, query, p) for p in params]
    assert any(len(rows) > 1 for rows in by_read.values()) or case != "lots"


def test_what_cannot_be_shared_is_said_so() -> None:
    """Arrays, bytes and floats have no one JSON form to cast back from: not shared."""
    assert shared_read("SELECT 1 WHERE 1 = ANY(%s)", [([1],), ([2],)]) is None
    assert shared_read("SELECT %s::bytea", [(b"a",), (b"b",)]) is None
    assert shared_read("SELECT %s", [(1.5,), (2.5,)]) is None
    assert shared_read("SELECT %b", [(1,), (2,)]) is None
    assert shared_read("SELECT 1", [(), ()]) is None


def test_a_read_the_server_refuses_fails_alone(conn: psycopg.Connection[Any]) -> None:
    """A round where one read is refused (not an integer): that read gets the error, the
    others their rows, and the connection goes on reading."""
    query = "SELECT %s::text::int + 1"
    round_ = [Read(query, ("1",)), Read(query, ("x",)), Read(query, ("41",))]
    with conn.pipeline() as pipeline:
        answers = read_round(conn, pipeline, round_)
        assert isinstance(answers[1], psycopg.DataError)
        assert [a.fetchall() for a in (answers[0], answers[2])] == [[(2,)], [(42,)]]
        [again] = read_round(conn, pipeline, [Read("SELECT %s::int", (7,))])
    assert isinstance(again, psycopg.Cursor | Rows) and again.fetchone() == (7,)
