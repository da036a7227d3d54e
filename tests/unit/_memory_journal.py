"""A journal in memory, for settlement tests that need no database.

``MemoryJournal`` appends the way ``ledger.journal`` does — build the entry against the
state, canonical bytes, the shared rules, then chain the leaf hash — and keeps the
canonical bytes, which is all ``settlement.compute_run`` reads. ``CoalitionWriter``
writes the facts the coalition writes (the same kinds, metadata, accounts and lot
choices as coalition/partners.py, earn.py, redeem.py, refunds.py, expiry.py and
settle.py), so a test describes a period as a story and settles it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from coalition import accounts
from coalition.clawback import clawback_postings
from coalition.expiry import _expiry
from coalition.redeem import _spend
from ledger.build import build_entry
from ledger.canonical import canonical_bytes
from ledger.rejections import Rejection
from ledger.requests import EntryRequest, HoldRequest, LotTake, PostingRequest
from ledger.rules import apply_entry
from ledger.state import State, moves_of_entry
from ledger.timefmt import format_time_us, parse_time_us
from ledger.units import POINTS_UNIT
from settlement.terms import PartnerTerms

OPERATOR = accounts.OPERATOR
HOUR_US = 3_600_000_000
DAY_US = 24 * HOUR_US


class Refused(AssertionError):
    """The ledger refused an entry a test meant to write: the story itself is wrong."""


class MemoryJournal:
    def __init__(self, now_us: int) -> None:
        self.state = State()
        self.entries: list[bytes] = []
        self.state.moves_of = lambda seq: moves_of_entry(json.loads(self.entries[seq])["postings"])
        self.now_us = now_us
        self._refs: set[tuple[str, str]] = set()

    def append(self, request: EntryRequest) -> int:
        """Append at ``now_us`` (never before the last entry); return the entry's seq."""
        outcome = self.try_append(request)
        if isinstance(outcome, Rejection):
            raise Refused(f"{request.kind} {request.ref_key}: {outcome.code} {outcome.detail}")
        return outcome

    def try_append(self, request: EntryRequest) -> int | Rejection:
        """Append, or return the ledger's rejection and leave the journal as it was."""
        ref = (request.ref_scope, request.ref_key)
        if ref in self._refs:
            raise Refused(f"reference {ref} used twice: the journal would replay, not append")
        time_us = max(self.now_us, self.state.last_time_us)
        canonical_bytes(request.meta)  # as the journal does: refuse unencodable metadata
        entry = build_entry(request, self.state, time_us)
        canonical = canonical_bytes(entry)
        outcome = apply_entry(entry, self.state)
        if isinstance(outcome, Rejection):
            return outcome
        self.state.prev_leaf_hash_hex = hashlib.sha256(b"\x00" + canonical).hexdigest()
        self.entries.append(canonical)
        self._refs.add(ref)
        return outcome.seq

    def entry(self, seq: int) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.entries[seq])
        return parsed

    @property
    def size(self) -> int:
        return len(self.entries)


@dataclass(slots=True)
class _Earn:
    partner: str
    member: str
    purchase_minor: int
    points: int
    refunded_minor: int = 0
    clawed_back_points: int = 0


@dataclass(slots=True)
class _Redemption:
    partner: str
    member: str
    points: int
    refunded_points: int = 0


class CoalitionWriter:
    """The coalition's use cases, reduced to the journal entries they append."""

    def __init__(self, journal: MemoryJournal) -> None:
        self.journal = journal
        self.earns: dict[int, _Earn] = {}
        self.redemptions: dict[int, _Redemption] = {}
        self._terms_versions: dict[str, int] = {}
        self._currencies: dict[str, str] = {}
        self._holds: dict[int, tuple[str, str]] = {}  # hold seq -> (partner, member)
        self._refs = 0

    def _ref(self, prefix: str) -> str:
        self._refs += 1
        return f"{prefix}-{self._refs}"

    def at(self, time_us: int) -> CoalitionWriter:
        self.journal.now_us = time_us
        return self

    # --- operator facts (coalition/partners.py, coalition/members.py, coalition/settle.py)

    def onboard(self, partner: str, currency: str) -> int:
        self._currencies[partner] = currency
        return self.journal.append(
            EntryRequest(
                "partner_onboarded",
                "operator",
                f"partner:{partner}",
                meta={
                    "partner": partner,
                    "legal_name": f"{partner.title()} Ltd",
                    "settlement_currency": currency,
                },
                open_accounts=accounts.partner_accounts(partner) + accounts.coalition_accounts(),
            )
        )

    def publish_terms(self, partner: str, terms: PartnerTerms, effective_from_us: int) -> int:
        version = self._terms_versions.get(partner, 0) + 1
        self._terms_versions[partner] = version
        meta = {
            "partner": partner,
            "version": version,
            "effective_from": format_time_us(effective_from_us),
            "terms": terms.to_json(),
        }
        return self.journal.append(
            EntryRequest("partner_terms", "operator", f"terms:{partner}:{version}", meta=meta)
        )

    def set_bank_account(self, partner: str, iban: str, bic: str, name: str) -> int:
        meta = {"partner": partner, "iban": iban, "bic": bic, "name": name}
        return self.journal.append(
            EntryRequest("partner_bank_account", "operator", self._ref("bank"), meta=meta)
        )

    def enroll(self, member: str) -> int:
        return self.journal.append(
            EntryRequest(
                "member_enrolled",
                "operator",
                f"member:{member}",
                meta={"member": member},
                open_accounts=(accounts.member_account(member),),
            )
        )

    def record_fx_rate(self, run_id: str, base: str, quote: str, rate: str) -> int:
        meta = {"run": run_id, "base": base, "quote": quote, "rate": rate}
        return self.journal.append(EntryRequest("fx_rate", "finance", self._ref("fx"), meta=meta))

    # --- earning (coalition/earn.py) ---------------------------------------------------

    def earn(
        self,
        partner: str,
        member: str,
        points: int,
        *,
        expires_us: int | None = None,
        purchase_minor: int | None = None,
    ) -> int:
        purchase = points * 100 if purchase_minor is None else purchase_minor
        currency = self._currencies[partner]
        ref = self._ref("earn")
        meta = {
            "input": {
                "member": member,
                "purchase_minor": purchase,
                "currency": currency,
                "category": None,
            },
            "partner": partner,
            "member": member,
            "ref": ref,
            "purchase_minor": purchase,
            "currency": currency,
            "points": points,
            "tier": None,
            "rules_version": 1,
        }
        seq = self._earn(
            "earn", partner, f"partner:{partner}", ref, member, points, meta, expires_us
        )
        self.earns[seq] = _Earn(partner, member, purchase, points)
        return seq

    def bonus(self, issuer: str, member: str, points: int, *, expires_us: int | None = None) -> int:
        ref = self._ref("bonus")
        scope = "operator" if issuer == OPERATOR else f"partner:{issuer}"
        meta = {
            "input": {"member": member, "points": points, "reason": "welcome"},
            "partner": issuer,
            "member": member,
            "ref": ref,
            "points": points,
            "reason": "welcome",
        }
        return self._earn("bonus", issuer, scope, ref, member, points, meta, expires_us)

    def _earn(
        self,
        kind: str,
        issuer: str,
        scope: str,
        ref: str,
        member: str,
        points: int,
        meta: dict[str, Any],
        expires_us: int | None,
    ) -> int:
        postings = (
            PostingRequest(accounts.issued(issuer), POINTS_UNIT, -points),
            PostingRequest(
                accounts.member(member),
                POINTS_UNIT,
                points,
                lot_origin=issuer,
                lot_expires_us=expires_us,
            ),
        )
        return self.journal.append(EntryRequest(kind, scope, ref, meta=meta, postings=postings))

    # --- spending (coalition/redeem.py) ------------------------------------------------

    def available(self, member: str) -> int:
        """What the member may spend now: unexpired lots, balance and holds all allow it."""
        state, account = self.journal.state, accounts.member(member)
        now_us = max(self.journal.now_us, state.last_time_us)
        free = min(state.balances.get(account, 0), state.spendable_lots(account, now_us))
        return free - state.held_amount(account, now_us)

    def redeem(self, partner: str, member: str, points: int) -> int:
        ref = self._ref("redeem")
        meta = {
            "input": {"member": member, "points": points},
            "partner": partner,
            "member": member,
            "ref": ref,
            "points": points,
        }
        seq = self.journal.append(
            EntryRequest(
                "redeem",
                f"partner:{partner}",
                ref,
                meta=meta,
                postings=_spend(member, partner, points),
            )
        )
        self.redemptions[seq] = _Redemption(partner, member, points)
        return seq

    def authorise(self, partner: str, member: str, points: int, hold_seconds: int = 900) -> int:
        ref = self._ref("authorise")
        expires_us = self.journal.now_us + hold_seconds * 1_000_000
        meta = {
            "input": {"member": member, "points": points, "hold_seconds": hold_seconds},
            "partner": partner,
            "member": member,
            "ref": ref,
            "points": points,
        }
        seq = self.journal.append(
            EntryRequest(
                "authorise",
                f"partner:{partner}",
                ref,
                meta=meta,
                hold=HoldRequest(accounts.member(member), POINTS_UNIT, points, expires_us),
            )
        )
        self._holds[seq] = (partner, member)
        return seq

    def capture(self, hold_seq: int, points: int) -> int:
        partner, member = self._holds[hold_seq]
        ref = self._ref("capture")
        meta = {
            "input": {"hold": hold_seq, "points": points},
            "partner": partner,
            "member": member,
            "ref": ref,
            "points": points,
            "hold": hold_seq,
        }
        seq = self.journal.append(
            EntryRequest(
                "capture",
                f"partner:{partner}",
                ref,
                meta=meta,
                capture_hold_seq=hold_seq,
                capture_amount=points,
                postings=_spend(member, partner, points),
            )
        )
        self.redemptions[seq] = _Redemption(partner, member, points)
        return seq

    # --- refunds (coalition/refunds.py) ------------------------------------------------

    def refund_redemption(self, redemption_seq: int, points: int) -> int:
        """Give points back to the lots the redemption took, last-taken first."""
        redemption = self.redemptions[redemption_seq]
        assert redemption.refunded_points + points <= redemption.points
        member_account = accounts.member(redemption.member)
        taken = [
            (take["lot"], take["amount"])
            for posting in self.journal.entry(redemption_seq)["postings"]
            if posting["account"] == member_account
            for take in posting.get("lots", [])
        ]
        skip, wanted, takes = redemption.refunded_points, points, []
        for lot_id, amount in reversed(taken):
            usable = amount - min(amount, skip)
            skip -= amount - usable
            give = min(usable, wanted)
            if give:
                takes.append(LotTake(lot_id, give))
                wanted -= give
            if wanted == 0:
                break
        ref = self._ref("refund-redemption")
        meta = {
            "input": {"redemption_ref": f"seq-{redemption_seq}", "points": points},
            "partner": redemption.partner,
            "member": redemption.member,
            "ref": ref,
            "redemption_seq": redemption_seq,
            "points": points,
            "debt_points": 0,
        }
        seq = self.journal.append(
            EntryRequest(
                "refund_redemption",
                f"partner:{redemption.partner}",
                ref,
                meta=meta,
                corrects_seq=redemption_seq,
                postings=(
                    PostingRequest(accounts.redeemed(redemption.partner), POINTS_UNIT, -points),
                    PostingRequest(member_account, POINTS_UNIT, points, lots=tuple(takes)),
                ),
            )
        )
        redemption.refunded_points += points
        return seq

    def refund_purchase(self, earn_seq: int, refund_minor: int) -> int:
        """Claw back floor(N·R/P) points in all, the earn's own lot first, then FEFO; what
        the member already spent becomes a debt of the refunding partner's points."""
        earn = self.earns[earn_seq]
        assert earn.refunded_minor + refund_minor <= earn.purchase_minor
        due_after = earn.points * (earn.refunded_minor + refund_minor) // earn.purchase_minor
        clawback = due_after - earn.clawed_back_points
        postings, debt = self._clawback_postings(earn, earn_seq, clawback)
        ref = self._ref("refund-earn")
        meta = {
            "input": {"earn_ref": f"seq-{earn_seq}", "refund_minor": refund_minor},
            "partner": earn.partner,
            "member": earn.member,
            "ref": ref,
            "earn_seq": earn_seq,
            "refund_minor": refund_minor,
            "points": clawback,
            "debt_points": debt,
        }
        seq = self.journal.append(
            EntryRequest(
                "refund_earn",
                f"partner:{earn.partner}",
                ref,
                meta=meta,
                corrects_seq=earn_seq,
                postings=postings,
            )
        )
        earn.refunded_minor += refund_minor
        earn.clawed_back_points = due_after
        return seq

    def _clawback_postings(
        self, earn: _Earn, earn_seq: int, points: int
    ) -> tuple[tuple[PostingRequest, ...], int]:
        state = self.journal.state
        now_us = max(self.journal.now_us, state.last_time_us)
        lots = state.account_lots(accounts.member(earn.member))
        return clawback_postings(lots, earn.member, earn_seq, earn.partner, points, now_us)

    # --- expiry (coalition/expiry.py) --------------------------------------------------

    def expire(self, as_of_us: int) -> list[int]:
        """The expiry job: one entry per member account emptying its lots expired by
        ``as_of_us`` (coalition.expiry's own request builder). Like the job, it appends
        what the ledger accepts and passes over what it refuses."""
        state = self.journal.state
        assert as_of_us <= max(self.journal.now_us, state.last_time_us)
        by_account: dict[str, list[tuple[str, str, int]]] = {}
        for lot in sorted(
            state.lots.values(), key=lambda x: (x.account, x.opened_seq, x.posting_index)
        ):
            expired = lot.expires_us is not None and lot.expires_us <= as_of_us
            if lot.remaining > 0 and expired and lot.account.startswith("member:"):
                by_account.setdefault(lot.account, []).append(
                    (lot.lot_id, lot.origin, lot.remaining)
                )
        outcomes = [
            self.journal.try_append(_expiry(account, lots, as_of_us, len(self.journal.entries)))
            for account, lots in by_account.items()
        ]
        return [seq for seq in outcomes if isinstance(seq, int)]


def lot_origins(journal: MemoryJournal) -> dict[str, str]:
    """Every lot's issuer, from the ledger's own state (not from settlement's reading)."""
    return {lot_id: lot.origin for lot_id, lot in journal.state.lots.items()}


# --- the January story: the hand-computed example of tests/unit/test_settlement_run.py ---

RUN_ID = "2027-01"
DEC_1_US = parse_time_us("2026-12-01T00:00:00.000000Z")
JAN_1_US = parse_time_us("2027-01-01T00:00:00.000000Z")
FAR_2029_01_US = parse_time_us("2029-01-01T00:00:00.000000Z")
FAR_2029_03_US = parse_time_us("2029-03-01T00:00:00.000000Z")
FAR_2029_06_US = parse_time_us("2029-06-01T00:00:00.000000Z")

# Rates are in minor units per point (cents or pence), as settlement applies them.
ALPHA_TERMS = PartnerTerms.from_json(
    {
        "issuance_price_per_point": "0.05",
        "redemption_rate_per_point": "0.45",
        "operator_fee_bps": 150,
        "breakage_share": "0.5",
        "cycle": "monthly",
        "mode": "multilateral",
    }
)
BETA_TERMS = PartnerTerms.from_json(
    {
        "issuance_price_per_point": "0.04",
        "redemption_rate_per_point": "0.37",
        "operator_fee_bps": 200,
        "breakage_share": "0.25",
        "cycle": "monthly",
        "mode": "multilateral",
    }
)
GAMMA_TERMS = PartnerTerms.from_json(
    {
        "issuance_price_per_point": "0.02",
        "redemption_rate_per_point": "0.333",
        "operator_fee_bps": 100,
        "breakage_share": "0.4",
        "cycle": "monthly",
        "mode": "multilateral",
    }
)
BANKS = {
    "alpha": ("DE89370400440532013000", "COBADEFFXXX", "Alpha Markets GmbH"),
    "beta": ("FR1420041010050500013M02606", "PSSTFRPPPAR", "Beta Fuel SA"),
    "gamma": ("GB29NWBK60161331926819", "NWBKGB2L", "Gamma Books Ltd"),
}


@dataclass(slots=True)
class Story:
    journal: MemoryJournal
    writer: CoalitionWriter
    start_seq: int
    end_seq: int
    seqs: dict[str, int]


def day_us(day: int, hour: int = 12) -> int:
    """An instant in January 2027."""
    return JAN_1_US + (day - 1) * DAY_US + hour * HOUR_US


def january_story() -> Story:
    """Three partners (alpha and beta settle in EUR, gamma in GBP), four members, seven
    earns and a bonus, twelve redemptions, a refund of each kind and an expiry. The lots
    each redemption takes (first-expiring-first) are noted; test_settlement_run.py
    prices them by hand."""
    journal = MemoryJournal(DEC_1_US)
    w = CoalitionWriter(journal)
    for partner, currency in (("alpha", "EUR"), ("beta", "EUR"), ("gamma", "GBP")):
        w.onboard(partner, currency)
        w.set_bank_account(partner, *BANKS[partner])
    w.publish_terms("alpha", ALPHA_TERMS, DEC_1_US)
    w.publish_terms("beta", BETA_TERMS, DEC_1_US)
    w.publish_terms("gamma", GAMMA_TERMS, DEC_1_US)
    for member in ("m1", "m2", "m3", "m4"):
        w.enroll(member)
    w.record_fx_rate(RUN_ID, "GBP", "EUR", "1.17")
    w.record_fx_rate(RUN_ID, "EUR", "GBP", "0.85")
    s: dict[str, int] = {}
    # December (before the period): issued then, so not charged in January.
    s["e0"] = w.at(DEC_1_US + DAY_US).earn("alpha", "m4", 400, expires_us=FAR_2029_06_US)
    start_seq = journal.size

    w.at(day_us(1))
    s["e1"] = w.earn("alpha", "m1", 1000, expires_us=FAR_2029_06_US)
    s["e2"] = w.earn("beta", "m1", 500, expires_us=FAR_2029_03_US)
    s["e3"] = w.earn("gamma", "m2", 800, expires_us=FAR_2029_06_US)
    s["e4"] = w.earn("alpha", "m2", 300, expires_us=JAN_1_US + 19 * DAY_US)  # Jan 20
    s["e5"] = w.earn("beta", "m3", 1200, expires_us=FAR_2029_06_US, purchase_minor=120_000)
    s["e6"] = w.earn("gamma", "m3", 250, expires_us=FAR_2029_01_US)
    s["e7"] = w.bonus(OPERATOR, "m4", 100, expires_us=FAR_2029_01_US)
    # m1 700 at alpha: beta's lot (2029-03) 500, then alpha's (2029-06) 200.
    s["r1"] = w.at(day_us(2)).redeem("alpha", "m1", 700)
    s["r2"] = w.at(day_us(3)).redeem("gamma", "m1", 300)  # alpha 300
    s["r3"] = w.at(day_us(4)).redeem("beta", "m2", 200)  # alpha (expires Jan 20) 200
    s["r5"] = w.at(day_us(6)).redeem("alpha", "m3", 400)  # gamma 250, beta 150
    s["r6"] = w.at(day_us(7)).redeem("gamma", "m3", 300)  # beta 300
    s["r7"] = w.at(day_us(8)).redeem("beta", "m4", 250)  # coalition 100, alpha (e0) 150
    s["r8"] = w.at(day_us(9)).redeem("beta", "m1", 400)  # alpha 400
    s["r9"] = w.at(day_us(10)).redeem("beta", "m3", 200)  # beta 200, at its own shop
    s["r10"] = w.at(day_us(11)).redeem("gamma", "m4", 100)  # alpha (e0) 100
    s["a11"] = w.at(day_us(12)).authorise("gamma", "m3", 300, hold_seconds=3600)
    s["c11"] = w.at(day_us(12) + HOUR_US // 6).capture(s["a11"], 250)  # beta 250
    s["r12"] = w.at(day_us(13)).redeem("gamma", "m1", 100)  # alpha 100 (m1's last)
    # 300 of r1 back, last-taken first: alpha's lot 200, then beta's 100.
    s["rf1"] = w.at(day_us(14)).refund_redemption(s["r1"], 300)
    # 100 EUR of a 1,200 EUR purchase: floor(1200 × 10000 / 120000) = 100 points back,
    # from e5's own lot.
    s["rfe"] = w.at(day_us(15)).refund_purchase(s["e5"], 10_000)
    # m2's alpha lot (Jan 20) has 100 left: they expire.
    [s["x1"]] = w.at(day_us(21)).expire(JAN_1_US + 20 * DAY_US)
    s["r4"] = w.at(day_us(25)).redeem("alpha", "m2", 500)  # gamma 500 (alpha's lot is gone)
    return Story(journal, w, start_seq, journal.size, s)
