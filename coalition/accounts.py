"""The coalition's account names in the ledger, and its identifiers' spelling."""

from __future__ import annotations

import re

from ledger.requests import AccountSpec
from ledger.units import POINTS_UNIT

OPERATOR = "coalition"  # issuer of operator bonuses; never a partner id
BREAKAGE = "coalition:breakage"
_ID = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
_MEMBER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


def is_partner_id(text: str) -> bool:
    return bool(_ID.fullmatch(text)) and text != OPERATOR


def is_member_id(text: str) -> bool:
    return bool(_MEMBER_ID.fullmatch(text))


def issued(issuer: str) -> str:
    """Points an issuer has promised: goes negative as it issues."""
    return "coalition:issued" if issuer == OPERATOR else f"partner:{issuer}:issued"


def redeemed(partner_id: str) -> str:
    """Points spent at a partner: the partner is owed for them by their issuers."""
    return f"partner:{partner_id}:redeemed"


def member(member_id: str) -> str:
    return f"member:{member_id}"


def partner_accounts(partner_id: str) -> tuple[AccountSpec, ...]:
    return (
        AccountSpec(issued(partner_id), POINTS_UNIT, overdraft=True),
        AccountSpec(redeemed(partner_id), POINTS_UNIT, overdraft=True),
    )


def member_account(member_id: str) -> AccountSpec:
    # Overdraft only so that a clawback of spent points can leave a debt (flagged debits);
    # ordinary spending is bounded by the member's unexpired lots and holds.
    return AccountSpec(member(member_id), POINTS_UNIT, overdraft=True, lot_tracked=True)


def coalition_accounts() -> tuple[AccountSpec, ...]:
    return (
        AccountSpec(BREAKAGE, POINTS_UNIT, overdraft=True),
        AccountSpec(issued(OPERATOR), POINTS_UNIT, overdraft=True),
    )
