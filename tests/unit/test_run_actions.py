"""What a settlement run's page offers, by the run's state and who looks (coalition.web.
run_actions): each state offers only what the server would accept, and each action left
out comes with the reason the page shows."""

from __future__ import annotations

from typing import Any

from coalition.api_keys import Principal
from coalition.web.run_actions import run_actions

ME = Principal("aaaaaaaaaaaa", "finance", None)
OTHER = Principal("bbbbbbbbbbbb", "finance", None)
AUDITOR = Principal("cccccccccccc", "auditor", None)


def _run(status: str, approved: bool) -> dict[str, Any]:
    return {
        "status": status,
        "computedBy": f"key:{ME.key_id}",
        "approvedBy": f"key:{OTHER.key_id}" if approved else None,
    }


def test_computed_a_second_key_approves_and_nothing_is_paid() -> None:
    mine = run_actions(_run("computed", False), ME, {}, 2)
    assert (mine.approve, mine.pay) == (False, False)
    assert "second finance key" in mine.approve_why_not and "approved" in mine.pay_why_not
    theirs = run_actions(_run("computed", False), OTHER, {}, 2)
    assert (theirs.approve, theirs.approve_why_not, theirs.pay) == (True, "", False)


def test_approved_pays_until_every_payment_is_confirmed() -> None:
    run = _run("approved", True)
    assert run_actions(run, ME, {}, 2).pay
    assert run_actions(run, ME, {"e1": {}}, 2).pay
    done = run_actions(run, ME, {"e1": {}, "e2": {}}, 2)
    assert not done.pay and "confirmed" in done.pay_why_not
    none_due = run_actions(run, ME, {}, 0)
    assert not none_due.pay and "No payments" in none_due.pay_why_not
    assert not any(run_actions(run, k, {}, 2).approve for k in (ME, OTHER))


def test_paid_offers_nothing_and_says_so() -> None:
    paid = run_actions(_run("paid", True), OTHER, {"e1": {}}, 1)
    assert (paid.approve, paid.pay) == (False, False)
    assert paid.pay_why_not.startswith("Paid")


def test_superseded_pays_only_if_it_was_approved() -> None:
    assert run_actions(_run("superseded", True), ME, {}, 1).pay  # settle.is_payable
    never = run_actions(_run("superseded", False), ME, {}, 1)
    assert not never.pay and "before approval" in never.pay_why_not


def test_only_finance_acts() -> None:
    for status, approved in (("computed", False), ("approved", True), ("paid", True)):
        seen = run_actions(_run(status, approved), AUDITOR, {}, 1)
        assert (seen.approve, seen.pay) == (False, False)
        assert "Only finance" in seen.pay_why_not
