"""The batch file format (docs/BATCH.md): reading both encodings the same, what refuses a
batch whole and what refuses one line, and the result file."""

from __future__ import annotations

import json

import pytest

from coalition.batch_format import Batch, LineResult, format_batch, parse_batch, write_results
from coalition.outcomes import Refusal, RefusalCode

ROWS = [
    {"type": "earn", "ref": "a", "member": "M1", "amount": 1000, "currency": "RUB"},
    {"type": "redeem", "ref": "b", "card": "C-1", "amount": 30},
    {"type": "refund_purchase", "ref": "c", "target_ref": "a", "amount": 500},
    {"type": "refund_redemption", "ref": "d", "target_ref": "b", "amount": 10},
]


def parsed(text: str, fmt: str) -> Batch:
    batch = parse_batch(text.encode(), fmt, "grocer")
    assert isinstance(batch, Batch), batch
    return batch


def refused(text: str, fmt: str) -> Refusal:
    outcome = parse_batch(text.encode(), fmt, "grocer")
    assert isinstance(outcome, Refusal), outcome
    return outcome


def test_both_encodings_read_the_same_records() -> None:
    csv_batch = parsed(format_batch("csv", "B", "grocer", ROWS), "csv")
    jsonl_batch = parsed(format_batch("jsonl", "B", "grocer", ROWS), "jsonl")
    assert csv_batch.records == jsonl_batch.records
    assert [r.kind for r in csv_batch.records] == [r["type"] for r in ROWS]
    assert csv_batch.records[1].card == "C-1" and csv_batch.records[1].member is None
    assert [r.line for r in csv_batch.records] == [2, 3, 4, 5]


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_totals_and_counts_that_differ_refuse_the_batch(fmt: str) -> None:
    text = format_batch(fmt, "B", "grocer", ROWS)
    last = text.splitlines()[-1]
    wrong = text.replace(last, last.replace("1000", "1001"))
    assert refused(wrong, fmt).code is RefusalCode.CONTROL_TOTALS_MISMATCH
    cut = "".join(text.splitlines(keepends=True)[:-2])  # a record and the trailer lost
    assert refused(cut, fmt).code is RefusalCode.INVALID_REQUEST
    assert "partner" in refused(format_batch(fmt, "B", "fuel", ROWS), fmt).detail


def test_a_bad_line_is_kept_as_a_refusal_and_still_counted() -> None:
    both = {"type": "earn", "ref": "e", "member": "M1", "card": "C-1", "amount": 1}
    lines = format_batch("jsonl", "B", "grocer", [*ROWS, {**both, "currency": "RUB"}])
    header, *records, trailer = lines.splitlines()
    records[3] = records[3].replace('"ref": "d"', '"ref": "a"')  # the reference of line 2
    records.append("not json")
    trailer = trailer.replace('"record_count": 5', '"record_count": 6')
    batch = parsed("\n".join([header, *records, trailer]), "jsonl")
    assert [(line, why.code) for line, _, why in batch.bad] == [
        (5, RefusalCode.DUPLICATE_REFERENCE),
        (6, RefusalCode.INVALID_REQUEST),  # member and card both
        (7, RefusalCode.INVALID_REQUEST),  # not JSON
    ]
    assert [r.ref for r in batch.records] == ["a", "b", "c"] and batch.lines == 6


def test_the_result_file_has_a_line_per_record_and_the_totals() -> None:
    results = [
        LineResult(3, "b", refusal=Refusal(RefusalCode.INSUFFICIENT_POINTS, "short")),
        LineResult(2, "a", seq=7, points=10, replayed=True),
    ]
    text, totals = write_results("jsonl", "B", results)
    lines = [json.loads(line) for line in text.splitlines()]
    assert [line.get("line") for line in lines] == [2, 3, None]
    assert lines[0]["status"] == "accepted" and lines[1]["code"] == "insufficient_points"
    assert totals == {"lines": 2, "accepted": 1, "replayed": 1, "refused": 1}
    csv_text, _ = write_results("csv", "B", results)
    assert csv_text.splitlines()[-1] == "totals,B,2,1,1,1,,"


def test_a_lone_surrogate_refuses_its_line_alone() -> None:
    """JSON may spell a lone surrogate (not UTF-8: no statement can carry it); that line
    is refused like any unprintable text, and the line after it is read."""
    earn = '{"type": "earn", "ref": "%s", "member": "%s", "amount": 100, "currency": "RUB"}'
    text = "\n".join(
        [
            '{"type": "header", "format": "coalition-batch/1", "batch_id": "S"}',
            earn % ("a", "\\ud800"),
            earn % ("b", "M1"),
            '{"type": "trailer", "record_count": 2, "purchase_minor": 200, "refund_minor": 0,'
            ' "points": 0}',
        ]
    )
    batch = parsed(text, "jsonl")
    assert [(line, ref, why.code) for line, ref, why in batch.bad] == [
        (2, "a", RefusalCode.INVALID_REQUEST)
    ]
    assert [r.ref for r in batch.records] == ["b"]
