"""The rates a refused compute lacks are named all at once (at the cut it signed), for
the run compute would make: its id (``<period>`` first, ``<period>-r<n>`` for a
correction, rates being recorded per run) and its entries, chosen by the same
``settle.run_range`` compute uses."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from coalition import payable, settle
from coalition.context import Coalition
from coalition.earn import earn_points
from coalition.earning import EarningRules
from coalition.members import enroll_member
from coalition.outcomes import Refusal, RefusalCode
from coalition.partners import onboard_partner, publish_earning_rules, publish_terms
from coalition.redeem import redeem_points
from ledger.signed_note import Signer
from ledger.timefmt import parse_time_us
from settlement.terms import PartnerTerms
from tests.integration._world import SteppingClock, ok

T0 = parse_time_us("2027-01-15T08:00:00.000000Z")
FEB_MOSCOW_US = parse_time_us("2027-01-31T21:00:00.000000Z")


@pytest.fixture()
def world(db_url: str) -> Iterator[tuple[Coalition, psycopg.Connection[Any], Signer]]:
    co = Coalition(clock_us=SteppingClock(T0))
    signer = Signer.from_seed("ledger.test.example", bytes(range(32)))
    terms = PartnerTerms(Decimal(50), Decimal(95), 100, Decimal("0.5"), "monthly", "multilateral")
    with psycopg.connect(db_url, autocommit=True) as conn:
        for partner, currency in (("grocer", "RUB"), ("airline", "EUR")):
            ok(onboard_partner(co, conn, partner, partner.title(), currency))
            ok(publish_terms(co, conn, partner, terms, 0, f"terms-{partner}"))
            rules = EarningRules(currency, 1, 100)
            ok(publish_earning_rules(co, conn, partner, rules, 0, f"rules-{partner}"))
            iban = {"grocer": "DE89370400440532013000", "airline": "DE02120300000000202051"}
            ok(
                settle.set_bank_account(
                    co,
                    conn,
                    partner,
                    iban=iban[partner],
                    bic="COBADEFFXXX",
                    name=partner.title(),
                    ref_key=f"bank-{partner}",
                )
            )
        ok(enroll_member(co, conn, "M1"))
        ok(
            earn_points(
                co,
                conn,
                partner_id="grocer",
                ref_key="g1",
                purchase_minor=50_000,
                currency="RUB",
                member_id="M1",
            )
        )
        ok(redeem_points(co, conn, partner_id="airline", ref_key="a1", points=300, member_id="M1"))
        co.clock_us.now_us = FEB_MOSCOW_US  # type: ignore[attr-defined]
        yield co, conn, signer


def _compute(world: Any, **kwargs: Any) -> Any:
    co, conn, signer = world
    return settle.compute(co, conn, signer, period="2027-01", computed_by="alice", **kwargs)


def _rate(world: Any, run_id: str, base: str, quote: str, rate: str) -> None:
    co, conn, _ = world
    ok(
        settle.record_fx_rate(
            co,
            conn,
            run_id=run_id,
            base=base,
            quote=quote,
            rate=rate,
            source="CBR",
            rate_date="2027-01-31",
            ref_key=f"fx:{run_id}:{base}:{quote}",
        )
    )


def _pending(world: Any) -> set[tuple[str, str, str | None]]:
    return {
        (p.code, p.currency, p.quote_currency)
        for p in payable.pending_fx_rates(world[1], "2027-01")
    }


def test_the_rates_named_are_those_of_the_run_compute_would_make(world: Any) -> None:
    refused = _compute(world)
    assert isinstance(refused, Refusal) and refused.code is RefusalCode.SETTLEMENT_INPUT_MISSING
    first_missing = _pending(world)
    assert first_missing and all(code == payable.FX_RATE_MISSING for code, _, _ in first_missing)
    for _, base, quote in first_missing:
        _rate(world, "2027-01", base, quote or "", "98.5" if base == "EUR" else "0.0101")
    first = ok(_compute(world))
    assert first.run_id == "2027-01"
    ok(settle.approve(world[0], world[1], first.run_id, "bob"))

    # A correction is run 2027-01-r2 over the same entries: the first run's rates don't
    # count for it, and exactly the same ones are named again, for it.
    refused = _compute(world, correction=True)
    assert isinstance(refused, Refusal) and refused.code is RefusalCode.SETTLEMENT_INPUT_MISSING
    assert _pending(world) == first_missing
    for _, base, quote in first_missing:
        _rate(world, "2027-01-r2", base, quote or "", "99" if base == "EUR" else "0.0102")
    second = ok(_compute(world, correction=True))
    assert (second.run_id, second.start_seq, second.end_seq) == (
        "2027-01-r2",
        first.start_seq,
        first.end_seq,
    )
    # Computed, not approved: a further correction would withdraw it and be r3 (still
    # correcting the approved 2027-01), which lacks its own rates again.
    refused = _compute(world, correction=True)
    assert isinstance(refused, Refusal) and "2027-01-r3" in refused.detail
    # Refused, it withdrew nothing: r2 still stands, computed (it used to be left
    # superseded by no run, and the period stuck on an internal error).
    standing = settle.get_run(world[1], "2027-01-r2")
    assert standing is not None and standing.status == "computed"
    assert _pending(world) == first_missing
    for _, base, quote in first_missing:
        _rate(world, "2027-01-r3", base, quote or "", "99" if base == "EUR" else "0.0102")
    third = ok(_compute(world, correction=True))
    assert (third.run_id, third.start_seq, third.end_seq) == (
        "2027-01-r3",
        first.start_seq,
        first.end_seq,
    )
