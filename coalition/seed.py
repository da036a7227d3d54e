"""Seed an empty database with a small demo coalition and one API key per role, so a
newcomer can open GraphiQL and query at once (``coalition serve`` does this)."""

from __future__ import annotations

from decimal import Decimal

import psycopg

from coalition.api_keys import create_key
from coalition.banking import make_iban
from coalition.context import Coalition
from coalition.earn import earn_points
from coalition.earning import EarningRules
from coalition.members import enroll_member, link_card
from coalition.outcomes import Refusal
from coalition.partners import (
    onboard_partner,
    publish_earning_rules,
    publish_terms,
    set_expiry_policy,
)
from coalition.redeem import redeem_points
from coalition.settle import set_bank_account
from ledger import reads
from ledger.timefmt import now_us
from settlement.terms import PartnerTerms

PARTNERS = (("grocer", "Grocer LLC"), ("fuel", "Fuel Stations LLC"), ("airline", "Airline JSC"))


def seed_if_empty(database_url: str) -> dict[str, str]:
    """Seed when the journal is empty; return {role label: key} for the keys created."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        if reads.head(conn).tree_size:
            return {}
        co = Coalition()
        terms = PartnerTerms(
            Decimal(50), Decimal(95), 150, Decimal("0.5"), "monthly", "multilateral"
        )
        rules = EarningRules("RUB", 1, 10_000)
        for number, (partner, name) in enumerate(PARTNERS):
            _ok(onboard_partner(co, conn, partner, name, "RUB"))
            _ok(publish_terms(co, conn, partner, terms, 0, f"terms:{partner}:1"))
            _ok(publish_earning_rules(co, conn, partner, rules, 0, f"rules:{partner}:1"))
            _ok(
                set_bank_account(
                    co,
                    conn,
                    partner,
                    iban=make_iban("DE", f"{37040044 + number}0532013000"),
                    bic="COBADEFFXXX",
                    name=name,
                    ref_key=f"bank:{partner}",
                )
            )
        _ok(set_expiry_policy(co, conn, 24, "expiry:1"))
        for i in range(1, 6):
            member = f"M{i:03d}"
            _ok(enroll_member(co, conn, member))
            _ok(link_card(co, conn, member, "grocer", f"GROCER-{i:04d}"))
            _ok(
                earn_points(
                    co,
                    conn,
                    partner_id="grocer",
                    ref_key=f"seed-earn-{i}",
                    purchase_minor=250_000 * i,
                    currency="RUB",
                    member_id=member,
                )
            )
        _ok(
            redeem_points(
                co, conn, partner_id="airline", ref_key="seed-redeem-1", points=10, member_id="M001"
            )
        )
        keys: dict[str, str] = {}
        roles: tuple[tuple[str, str | None], ...] = (
            ("partner", "grocer"),
            ("partner", "airline"),
            ("auditor", None),
            ("finance", None),
            ("finance", None),
            ("operator", None),
            ("metrics", None),  # the scraper's: /metrics and nothing else
        )
        for role, for_partner in roles:
            label = f"{role} {for_partner}" if for_partner else role
            if label in keys:
                label = f"{label} (second)"
            key, _ = create_key(conn, role, for_partner, f"demo {label}", now_us())
            keys[label] = key
        return keys


def _ok(outcome: object) -> None:
    assert not isinstance(outcome, Refusal), outcome
