"""What the coalition-level integration tests share: a clock the scenario steps, and the
one-line checks on a use case's outcome."""

from __future__ import annotations

import json
from typing import Any

from coalition.outcomes import Refusal, RefusalCode


class SteppingClock:
    """The coalition's clock in a test: a second further on every reading, set forward by
    the scenario where it needs a date."""

    def __init__(self, start_us: int) -> None:
        self.now_us = start_us

    def __call__(self) -> int:
        self.now_us += 1_000_000
        return self.now_us

    def at(self, time_us: int) -> None:
        assert time_us >= self.now_us, "the scenario's clock only goes forward"
        self.now_us = time_us


def ok(outcome: Any) -> Any:
    """The outcome, asserted not to be a refusal (the refusal is the failure message)."""
    assert not isinstance(outcome, Refusal), outcome
    return outcome


def refused(outcome: Any, code: RefusalCode) -> None:
    assert isinstance(outcome, Refusal), outcome
    assert outcome.code is code, outcome


def balance(conn: Any, account: str) -> int:
    """An account's balance as the journal's read model holds it (0 if never posted)."""
    row = conn.execute("SELECT balance FROM ledger_balance WHERE account = %s", (account,))
    found = row.fetchone()
    return 0 if found is None else int(found[0])


def pay_all(co: Any, conn: Any, run_id: str, by: str) -> None:
    """Confirm every payment of an approved run, as finance user ``by``."""
    from coalition import settle

    for payment in json.loads(settle.get_run(conn, run_id).run_bytes)["payments"]:
        ok(settle.confirm_payment(co, conn, run_id, payment["end_to_end_id"], by))
