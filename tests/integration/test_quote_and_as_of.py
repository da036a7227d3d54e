"""Redemption quotes (nothing written; the quote is what the redemption then does) and
balances as of a position (equal to a replay of the export's prefix, bound to its root)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest

from coalition import accounts
from coalition.balances_as_of import member_as_of, partner_as_of, position
from coalition.context import Coalition, stored_entry
from coalition.earn import earn_points
from coalition.earning import EarningRules
from coalition.members import enroll_member
from coalition.outcomes import Redeemed, Refusal, RefusalCode
from coalition.partners import onboard_partner, publish_earning_rules, publish_terms
from coalition.quote import RedemptionQuote, quote_redemption
from coalition.redeem import redeem_points
from coalition.refunds import refund_purchase
from ledger import merkle_hash, reads
from ledger.export import export_journal
from settlement.terms import PartnerTerms

DAY_US = 86_400_000_000
T0 = 1_800_000_000_000_000
TERMS = PartnerTerms(
    Decimal("0.01"), Decimal("0.008"), 50, Decimal("0.5"), "monthly", "multilateral"
)
RULES = EarningRules("RUB", 1, 100, {})  # a point per 1 RUB


class Clock:
    def __init__(self) -> None:
        self.now_us = T0

    def __call__(self) -> int:
        self.now_us += 1_000_000  # a second per reading: entries get distinct times
        return self.now_us


@pytest.fixture()
def co() -> Coalition:
    return Coalition(clock_us=Clock())


@pytest.fixture()
def conn(db_url: str, co: Coalition) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(db_url, autocommit=True) as c:
        for partner in ("grocer", "fuel", "airline"):
            ok(onboard_partner(co, c, partner, f"{partner.title()} Ltd", "RUB"))
            ok(publish_terms(co, c, partner, TERMS, T0 - DAY_US, f"terms-{partner}"))
            ok(publish_earning_rules(co, c, partner, RULES, T0 - DAY_US, f"rules-{partner}"))
        for member in ("M1", "M2"):
            ok(enroll_member(co, c, member))
        yield c


def ok(outcome: Any) -> Any:
    assert not isinstance(outcome, Refusal), outcome
    return outcome


def earn(co: Coalition, conn: Any, partner: str, member: str, rub: int, ref: str) -> None:
    ok(
        earn_points(
            co,
            conn,
            partner_id=partner,
            ref_key=ref,
            purchase_minor=rub * 100,
            currency="RUB",
            member_id=member,
        )
    )


def fingerprint(conn: Any) -> str:
    """Every row of every table: a quote must leave it as it was."""
    digest = hashlib.sha256()
    tables = conn.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename"
    ).fetchall()
    for (table,) in tables:
        rows = conn.execute(f'SELECT t::text FROM "{table}" t ORDER BY 1').fetchall()
        digest.update(table.encode() + repr(rows).encode())
    return digest.hexdigest()


def test_a_quote_writes_nothing_and_is_what_the_redemption_does(co: Coalition, conn: Any) -> None:
    earn(co, conn, "grocer", "M1", 100, "g1")
    earn(co, conn, "fuel", "M1", 50, "f1")
    earn(co, conn, "grocer", "M1", 30, "g2")
    before = fingerprint(conn)
    quote = ok(quote_redemption(co, conn, partner_id="airline", points=160, member_id="M1"))
    short = quote_redemption(co, conn, partner_id="airline", points=1_000, member_id="M1")
    stranger = quote_redemption(co, conn, partner_id="airline", points=1, member_id="NOBODY")
    assert fingerprint(conn) == before  # nothing written, by the quote or the refusals
    assert isinstance(short, Refusal) and short.code is RefusalCode.INSUFFICIENT_POINTS
    assert isinstance(stranger, Refusal) and stranger.code is RefusalCode.UNKNOWN_MEMBER
    assert isinstance(quote, RedemptionQuote)
    assert quote.points_by_issuer == {"fuel": 50, "grocer": 110}
    assert quote.debt_points == 0 and not quote.replayed
    refused = redeem_points(
        co, conn, partner_id="airline", ref_key="big", points=1_000, member_id="M1"
    )
    assert isinstance(refused, Refusal) and refused.code is short.code
    redeemed = ok(
        redeem_points(co, conn, partner_id="airline", ref_key="r1", points=160, member_id="M1")
    )
    assert isinstance(redeemed, Redeemed)
    assert redeemed.points_by_issuer == quote.points_by_issuer
    assert redeemed.seq == quote.tree_size
    [posting] = [
        p
        for p in stored_entry(conn, redeemed.seq)["postings"]
        if p["account"] == accounts.member("M1")
    ]
    assert [(d.lot_id, d.points) for d in quote.lots] == [
        (t["lot"], t["amount"]) for t in posting["lots"]
    ]
    # With the redemption's reference, the quote says it would replay it.
    again = ok(
        quote_redemption(co, conn, partner_id="airline", points=160, member_id="M1", ref_key="r1")
    )
    assert again.replayed and again.points_by_issuer == quote.points_by_issuer


def replay_prefix(export: Path, tree_size: int, account: str) -> tuple[int, dict[str, int], bytes]:
    """The account's balance and lots (id → remaining) after the first ``tree_size`` lines
    of the export, and the Merkle root of those lines, folded here from FORMAT.md."""
    balance, lots, leaves = 0, {}, []
    with export.open("rb") as lines:
        for seq, line in enumerate(lines):
            if seq == tree_size:
                break
            canonical = line.rstrip(b"\n")
            leaves.append(merkle_hash.leaf_hash(canonical))
            for index, p in enumerate(json.loads(canonical)["postings"]):
                if p["account"] != account:
                    continue
                balance += p["amount"]
                if "lot" in p and p["lot"]["amount"] > 0:
                    lots[f"{seq}:{index}"] = p["lot"]["amount"]
                for take in p.get("lots", []):
                    lots[take["lot"]] += take["amount"] if p["amount"] > 0 else -take["amount"]
    return balance, {k: v for k, v in lots.items() if v}, _root(leaves)


def _root(leaves: list[bytes]) -> bytes:
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaves[0]
    split = 1 << ((len(leaves) - 1).bit_length() - 1)  # RFC 9162: largest power of 2 < n
    return merkle_hash.node_hash(_root(leaves[:split]), _root(leaves[split:]))


def test_balances_as_of_match_a_replay_of_the_export(
    co: Coalition, conn: Any, tmp_path: Path
) -> None:
    earn(co, conn, "grocer", "M1", 100, "g1")
    earn(co, conn, "fuel", "M1", 50, "f1")
    ok(redeem_points(co, conn, partner_id="airline", ref_key="r1", points=120, member_id="M1"))
    ok(
        refund_purchase(
            co, conn, partner_id="fuel", ref_key="rf1", earn_ref_key="f1", refund_minor=2_500
        )
    )
    earn(co, conn, "grocer", "M1", 10, "g2")
    size = reads.head(conn).tree_size
    export = tmp_path / "journal.jsonl"
    export_journal(conn, export)
    for seq in range(size):
        at = position(conn, seq=seq)
        assert at.tree_size == seq + 1
        found = member_as_of(conn, "M1", at.tree_size, None)
        assert found is not None
        balance, lots, root = replay_prefix(export, at.tree_size, accounts.member("M1"))
        assert (found.balance, {lot.lot_id: lot.remaining for lot in found.lots}) == (balance, lots)
        assert at.root_hash == root
        for account in partner_as_of(conn, "grocer", at.tree_size) or []:
            assert account.balance == replay_prefix(export, at.tree_size, account.account)[0]
    # A partner asking sees only the lots it issued; by time, the same as by seq.
    at = position(conn, seq=size - 1)
    grocer_only = member_as_of(conn, "M1", at.tree_size, "grocer")
    assert grocer_only is not None and {lot.origin for lot in grocer_only.lots} == {"grocer"}
    last = reads.entry(conn, size - 2)
    assert last is not None
    assert position(conn, time_us=last.time_us).tree_size == size - 1
