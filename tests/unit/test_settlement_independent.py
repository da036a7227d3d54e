"""A varied scenario settled by settlement/ and by tests/tools/independent_settlement.py
(written from docs/SETTLEMENT.md alone): three currencies (JPY without a minor unit),
both modes, back-dated terms, a correction of a paid run and of the correction,
refunds across periods, a clawback into debt, expiry and a partial capture. The two
must agree byte for byte, run_sha256 included."""

from __future__ import annotations

import hashlib
from pathlib import Path

from ledger.requests import EntryRequest
from settlement.run import PeriodBounds, Previous, Run, compute_run
from settlement.terms import PartnerTerms
from tests.tools.independent_settlement import merkle_root, recompute
from tests.unit._memory_journal import (
    DAY_US,
    JAN_1_US,
    CoalitionWriter,
    MemoryJournal,
)

ZONE = "Europe/Moscow"
FEB_US = JAN_1_US + 31 * DAY_US - 3 * 3_600_000_000  # 2027-02-01 00:00 Moscow


def _terms(iss: str, red: str, fee: int, brk: str, mode: str = "multilateral") -> PartnerTerms:
    return PartnerTerms.from_json(
        {
            "issuance_price_per_point": iss,
            "redemption_rate_per_point": red,
            "operator_fee_bps": fee,
            "breakage_share": brk,
            "cycle": "monthly",
            "mode": mode,
        }
    )


def _root(entries: list[bytes], size: int) -> str:
    from ledger.merkle_hash import leaf_hash

    return merkle_root([leaf_hash(e) for e in entries[:size]]).hex()


def _approve(j: MemoryJournal, run: Run, root: str) -> int:
    meta = {
        "run": run.run_id,
        "approved_by": "bob",
        "run_sha256": hashlib.sha256(run.to_bytes()).hexdigest(),
        "period": run.period,
        "revision": run.revision,
        "mode": run.mode,
        "start_seq": run.start_seq,
        "end_seq": run.end_seq,
        "cut": {"tree_size": run.cut_size, "root": root},
        "timezone": None if run.bounds is None else run.bounds.timezone,
        "supersedes": None if run.previous is None else run.previous.run_id,
    }
    return j.append(
        EntryRequest(
            "settlement_approved",
            "finance",
            f"approve:{run.run_id}",
            meta=meta,
            corrects_seq=None if run.previous is None else run.previous.approved_seq,
        )
    )


def test_a_varied_scenario_recomputes_byte_for_byte(tmp_path: Path) -> None:
    j = MemoryJournal(JAN_1_US - 10 * DAY_US)
    w = CoalitionWriter(j)
    for p, c in (("air", "EUR"), ("shop", "GBP"), ("sushi", "JPY")):
        w.onboard(p, c)
    w.publish_terms("air", _terms("0.5", "0.8", 150, "0.5"), 0)
    w.publish_terms("shop", _terms("0.3", "0.7", 100, "0.25"), 0)
    w.publish_terms("sushi", _terms("1", "1.7", 200, "0.4"), 0)
    for m in ("m1", "m2", "m3"):
        w.enroll(m)
    w.at(JAN_1_US - 2 * DAY_US)
    w.earn("air", "m1", 900, expires_us=JAN_1_US + 20 * DAY_US)
    start = j.size
    w.at(JAN_1_US + DAY_US)
    w.earn("shop", "m2", 700)
    e2 = w.earn("sushi", "m3", 800, purchase_minor=8000)
    r1 = w.redeem("shop", "m1", 333)
    w.redeem("sushi", "m2", 250)
    h = w.authorise("air", "m3", 300)
    w.capture(h, 123)  # partial capture
    w.redeem("air", "m3", 600)  # m3 keeps 77
    w.refund_purchase(e2, 8000)  # clawback of 800 into debt
    w.at(JAN_1_US + 21 * DAY_US)
    w.expire(JAN_1_US + 20 * DAY_US)  # e0's rest expires
    # Back-dated: sushi's v2 effective from the period's start, published late.
    w.publish_terms("sushi", _terms("1", "2.3", 200, "0.4"), JAN_1_US)
    w.at(FEB_US + 3_600_000)  # after the period: the next period's
    w.refund_redemption(r1, 100)
    for run, rate in (("2027-01", "0.0055"), ("2027-01-r2", "0.0056"), ("2027-01-r3", "0.0057")):
        w.record_fx_rate(run, "JPY", "EUR", rate)
        w.record_fx_rate(run, "JPY", "GBP", "0.0049")
        w.record_fx_rate(run, "GBP", "EUR", "1.17")
        w.record_fx_rate(run, "EUR", "GBP", "0.85")
        w.record_fx_rate(run, "EUR", "JPY", "180")
        w.record_fx_rate(run, "GBP", "JPY", "205")
    end = next(s for s in range(start, j.size) if j.entry(s)["time"] >= "2027-01-31T21")
    bounds = PeriodBounds(JAN_1_US - 3 * 3_600_000_000, FEB_US, ZONE)

    def run(run_id: str, mode: str, previous: Previous | None, revision: int) -> Run:
        return compute_run(
            j.entries,
            run_id=run_id,
            period="2027-01",
            start_seq=start,
            end_seq=end,
            cut_size=j.size,
            checkpoint={"tree_size": j.size, "root_hex": _root(j.entries, j.size)},
            mode=mode,
            bounds=bounds,
            previous=previous,
            revision=revision,
        )

    runs = []
    first = run("2027-01", "multilateral", None, 1)
    seq1 = _approve(j, first, _root(j.entries, first.cut_size))
    runs.append(first)
    second = run(
        "2027-01-r2", "bilateral", Previous(first.run_id, seq1, first.positions, first.flows), 2
    )
    seq2 = _approve(j, second, _root(j.entries, second.cut_size))
    runs.append(second)
    third = run(
        "2027-01-r3",
        "multilateral",
        Previous(second.run_id, seq2, second.positions, second.flows),
        3,
    )
    _approve(j, third, _root(j.entries, third.cut_size))
    runs.append(third)
    assert {c.to_currency for c in first.conversions} >= {"JPY", "EUR"}
    export = tmp_path / "journal.jsonl"
    export.write_bytes(b"".join(e + b"\n" for e in j.entries))
    for r in runs:
        assert recompute(str(export), r.run_id) == r.to_bytes()
