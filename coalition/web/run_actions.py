"""What a settlement run's page may offer, from the run's state and who is looking — and,
for each action it does not offer, why, so the page can say so.

computed → a second finance key approves (not the one that computed it); approved → the
payment file and confirming each payment not yet confirmed; paid → nothing (the page
shows who confirmed each payment and when). A superseded run that was approved stays
payable (a correction pays only the difference: ``settle.is_payable``); one never
approved is replaced and offers nothing. The server judges every action again when it is
taken; this only keeps the page from offering what it would refuse.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from coalition.api_keys import Principal


@dataclass(frozen=True)
class RunActions:
    approve: bool
    approve_why_not: str  # empty when approve is offered, or when nothing is to approve
    pay: bool  # the payment file, and confirming the payments not yet confirmed
    pay_why_not: str


def run_actions(
    run: dict[str, Any], principal: Principal, confirmed: dict[str, Any], payments_count: int
) -> RunActions:
    status, approved = run["status"], run["approvedBy"] is not None
    if principal.role != "finance":
        why = f"Only finance keys approve and pay runs; this key is {principal.role}."
        return RunActions(False, why if status == "computed" else "", False, why)
    approve, approve_why = False, ""
    if status == "computed":
        if run["computedBy"] == f"key:{principal.key_id}":
            approve_why = "You computed this run: a second finance key must approve it."
        else:
            approve = True
    open_payments = payments_count - len(confirmed)
    if status == "paid":
        return RunActions(False, "", False, "Paid: every payment is confirmed (see below).")
    if status == "computed":
        return RunActions(approve, approve_why, False, "Payments are made once it is approved.")
    if not approved:  # superseded before anyone approved it
        return RunActions(False, "", False, "Superseded before approval: nothing to pay.")
    if payments_count == 0:
        return RunActions(False, "", False, "No payments are due in this run.")
    if open_payments <= 0:
        return RunActions(False, "", False, "Every payment of this run is confirmed.")
    return RunActions(False, "", True, "")
