"""Operator use cases for partners: onboard, suspend or reactivate, publish terms and
earning rules, set coalition-wide policy (expiry, tiers). Each is a journal fact."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from coalition import accounts
from coalition.context import Coalition, Conn
from coalition.earning import EarningRules
from coalition.outcomes import Recorded, Refusal, RefusalCode
from coalition.tiers import TierPolicy
from ledger.requests import EntryRequest
from ledger.timefmt import format_time_us
from ledger.units import is_valid_unit
from settlement.terms import PartnerTerms

OPERATOR_SCOPE = "operator"
LEGAL_NAME_LENGTH_MAX = 200


@dataclass(frozen=True, slots=True)
class Partner:
    partner_id: str
    legal_name: str
    settlement_currency: str
    status: str


def get_partner(conn: Conn, partner_id: str) -> Partner | None:
    row = conn.execute(
        "SELECT partner_id, legal_name, settlement_currency, status FROM coalition_partner"
        " WHERE partner_id = %s",
        (partner_id,),
    ).fetchone()
    return None if row is None else Partner(*row)


def onboard_partner(
    co: Coalition, conn: Conn, partner_id: str, legal_name: str, settlement_currency: str
) -> Recorded | Refusal:
    if not accounts.is_partner_id(partner_id):
        return Refusal(RefusalCode.INVALID_REQUEST, "partner id: 1–64 of a-z, 0-9, _ and -")
    if not legal_name.strip() or len(legal_name) > LEGAL_NAME_LENGTH_MAX:
        return Refusal(RefusalCode.INVALID_REQUEST, "legal name is empty or too long")
    if settlement_currency == "PTS" or not is_valid_unit(settlement_currency):
        return Refusal(RefusalCode.INVALID_REQUEST, "settlement currency must be ISO 4217")
    existing = get_partner(conn, partner_id)
    meta = {
        "partner": partner_id,
        "legal_name": legal_name,
        "settlement_currency": settlement_currency,
    }
    request = EntryRequest(
        "partner_onboarded",
        OPERATOR_SCOPE,
        f"partner:{partner_id}",
        meta=meta,
        open_accounts=accounts.partner_accounts(partner_id) + accounts.coalition_accounts(),
    )
    if existing is not None and (existing.legal_name, existing.settlement_currency) != (
        legal_name,
        settlement_currency,
    ):
        return Refusal(RefusalCode.PARTNER_EXISTS, f"partner {partner_id} exists")
    return _recorded(co.append(conn, request))


def set_partner_status(
    co: Coalition, conn: Conn, partner_id: str, status: str, ref_key: str
) -> Recorded | Refusal:
    if status not in ("active", "suspended"):
        return Refusal(RefusalCode.INVALID_REQUEST, "status is active or suspended")
    if get_partner(conn, partner_id) is None:
        return Refusal(RefusalCode.UNKNOWN_PARTNER, f"no partner {partner_id}")
    request = EntryRequest(
        "partner_status", OPERATOR_SCOPE, ref_key, meta={"partner": partner_id, "status": status}
    )
    return _recorded(co.append(conn, request))


def publish_terms(
    co: Coalition,
    conn: Conn,
    partner_id: str,
    terms: PartnerTerms,
    effective_from_us: int,
    ref_key: str,
) -> Recorded | Refusal:
    return _publish(
        co,
        conn,
        "partner_terms",
        "coalition_terms",
        "terms",
        partner_id,
        terms.to_json(),
        effective_from_us,
        ref_key,
    )


def publish_earning_rules(
    co: Coalition,
    conn: Conn,
    partner_id: str,
    rules: EarningRules,
    effective_from_us: int,
    ref_key: str,
) -> Recorded | Refusal:
    return _publish(
        co,
        conn,
        "earning_rules",
        "coalition_earning_rules",
        "rules",
        partner_id,
        rules.to_json(),
        effective_from_us,
        ref_key,
    )


def _publish(
    co: Coalition,
    conn: Conn,
    kind: str,
    table: str,
    field: str,
    partner_id: str,
    body: dict[str, Any],
    effective_from_us: int,
    ref_key: str,
) -> Recorded | Refusal:
    if get_partner(conn, partner_id) is None:
        return Refusal(RefusalCode.UNKNOWN_PARTNER, f"no partner {partner_id}")
    row = conn.execute(
        f"SELECT coalesce(max(version), 0) FROM {table} WHERE partner_id = %s", (partner_id,)
    ).fetchone()
    version = int(row[0]) + 1 if row else 1
    meta = {
        "partner": partner_id,
        "version": version,
        "effective_from": format_time_us(effective_from_us),
        field: body,
    }
    return _recorded(co.append(conn, EntryRequest(kind, OPERATOR_SCOPE, ref_key, meta=meta)))


def set_expiry_policy(
    co: Coalition, conn: Conn, months: int | None, ref_key: str
) -> Recorded | Refusal:
    if months is not None and not 1 <= months <= 120:
        return Refusal(RefusalCode.INVALID_REQUEST, "expiry is 1–120 months, or none")
    meta = {"name": "expiry", "policy": {"months": months}}
    return _recorded(
        co.append(conn, EntryRequest("coalition_policy", OPERATOR_SCOPE, ref_key, meta=meta))
    )


def set_tier_policy(
    co: Coalition, conn: Conn, policy: TierPolicy, ref_key: str
) -> Recorded | Refusal:
    meta = {"name": "tiers", "policy": policy.to_json()}
    return _recorded(
        co.append(conn, EntryRequest("coalition_policy", OPERATOR_SCOPE, ref_key, meta=meta))
    )


def _recorded(result: Any) -> Recorded | Refusal:
    if isinstance(result, Refusal):
        return result
    return Recorded(result.seq, result.replayed)
