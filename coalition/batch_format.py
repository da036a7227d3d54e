"""The partner batch file (docs/BATCH.md): a header, record lines, a trailer with control
totals, in CSV or JSON Lines; read into records, and the per-line results written back.

What is wrong with the file as a whole (no header or trailer, another partner's batch,
control totals that do not add up) refuses the batch before anything is written; what is
wrong with one record line refuses that line alone.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from coalition.outcomes import Refusal, RefusalCode

FORMAT_VERSION = "coalition-batch/1"
FORMATS = ("csv", "jsonl")
KINDS = ("earn", "redeem", "refund_purchase", "refund_redemption")
RECORD_FIELDS = ("type", "ref", "member", "card", "amount", "currency", "category", "target_ref")
RECORDS_MAX = 1_000_000
TEXT_LENGTH_MAX = 128
# Lone surrogates too ("\ud800" in a JSON line): not UTF-8, so no statement can carry
# them — the line is refused, not the import broken off by the driver's encoding error.
_PRINTABLE = re.compile(
    r"[^\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff\ud800-\udfff]+"
)
_INTEGER = re.compile(r"-?[0-9]{1,19}", re.ASCII)
# The control total each record type adds its amount to.
TOTAL_OF = {
    "earn": "purchase_minor",
    "refund_purchase": "refund_minor",
    "redeem": "points",
    "refund_redemption": "points",
}
TOTALS = ("purchase_minor", "refund_minor", "points")


@dataclass(frozen=True, slots=True)
class Record:
    line: int  # 1-based line (JSON Lines) or row (CSV) of the file
    kind: str
    ref: str
    amount: int
    member: str | None = None
    card: str | None = None
    currency: str | None = None
    category: str | None = None
    target_ref: str | None = None


@dataclass(slots=True)
class Batch:
    batch_id: str
    partner_id: str
    records: list[Record] = field(default_factory=list)
    bad: list[tuple[int, str | None, Refusal]] = field(default_factory=list)  # line, ref, why

    @property
    def lines(self) -> int:
        return len(self.records) + len(self.bad)


@dataclass(frozen=True, slots=True)
class LineResult:
    line: int
    ref: str | None
    seq: int | None = None
    points: int | None = None
    replayed: bool = False
    refusal: Refusal | None = None


def parse_batch(data: bytes, fmt: str, partner_id: str) -> Batch | Refusal:
    """The batch, or why it is refused whole (nothing of it is then written)."""
    if fmt not in FORMATS:
        return _whole(f"format is one of {', '.join(FORMATS)}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return _whole("the file is not UTF-8")
    rows = _csv_rows(text) if fmt == "csv" else _jsonl_rows(text)
    if isinstance(rows, Refusal):
        return rows
    if len(rows) < 2 or rows[0][1].get("type") != "header" or rows[-1][1].get("type") != "trailer":
        return _whole("the first line is the header and the last the trailer")
    header, trailer = rows[0][1], rows[-1][1]
    if header.get("format") != FORMAT_VERSION:
        return _whole(f"the header's format is {FORMAT_VERSION}")
    batch_id = header.get("batch_id")
    if _text_problem(batch_id) is not None:
        return _whole("the header's batch_id: 1–128 printable characters")
    if header.get("partner", partner_id) != partner_id:  # optional; if given, the submitter
        return _whole(f"the header names partner {header.get('partner')!r}, not {partner_id}")
    body = rows[1:-1]
    if len(body) > RECORDS_MAX:
        return _whole(f"at most {RECORDS_MAX:,} records a batch")
    batch = Batch(str(batch_id), partner_id)
    totals = dict.fromkeys(TOTALS, 0)
    seen: set[str] = set()
    for line, row in body:
        record = _record(line, row, seen)
        amount = _integer(row.get("amount"))
        if row.get("type") in TOTAL_OF and amount is not None:
            totals[TOTAL_OF[str(row["type"])]] += amount
        if isinstance(record, Refusal):
            ref = row.get("ref")
            batch.bad.append((line, ref if isinstance(ref, str) else None, record))
        else:
            batch.records.append(record)
    declared = {name: _integer(trailer.get(name)) for name in ("record_count", *TOTALS)}
    if declared["record_count"] != len(body):
        return _mismatch(
            f"the trailer counts {declared['record_count']} records, the file has {len(body)}"
        )
    for name in TOTALS:
        if declared[name] != totals[name]:
            return _mismatch(
                f"the trailer's {name} is {declared[name]}, the records add up to {totals[name]}"
            )
    return batch


def _record(line: int, row: dict[str, Any], seen: set[str]) -> Record | Refusal:
    kind, ref = row.get("type"), row.get("ref")
    if kind not in KINDS:
        return _bad(f"type is one of {', '.join(KINDS)}")
    if _text_problem(ref) is not None:
        return _bad("ref: 1–128 printable characters")
    assert isinstance(ref, str) and isinstance(kind, str)
    if ref in seen:
        return Refusal(RefusalCode.DUPLICATE_REFERENCE, f"ref {ref} is on an earlier line")
    seen.add(ref)
    amount = _integer(row.get("amount"))
    if amount is None:
        return _bad("amount: an integer (minor units or points)")
    texts: dict[str, str | None] = {}
    for name in ("member", "card", "currency", "category", "target_ref"):
        value = row.get(name)
        if value in (None, ""):
            texts[name] = None
        elif _text_problem(value) is not None:
            return _bad(f"{name}: 1–128 printable characters")
        else:
            texts[name] = str(value)
    if kind in ("earn", "redeem") and (texts["member"] is None) == (texts["card"] is None):
        return _bad("give exactly one of member or card")
    if kind == "earn" and texts["currency"] is None:
        return _bad("an earn names its currency")
    if kind.startswith("refund_") and texts["target_ref"] is None:
        return _bad("a refund names the target_ref it refunds")
    return Record(line, kind, ref, amount, **texts)


def _csv_rows(text: str) -> list[tuple[int, dict[str, Any]]] | Refusal:
    rows: list[tuple[int, dict[str, Any]]] = []
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        for number, cells in enumerate(reader, start=1):
            if not cells:
                continue
            rows.append((number, _csv_row(cells)))
    except csv.Error as exc:
        return _whole(f"CSV row {reader.line_num}: {exc}")
    return rows


def _csv_row(cells: list[str]) -> dict[str, Any]:
    if cells[0] == "header":
        return dict(zip(("type", "format", "batch_id", "partner"), cells, strict=False))
    if cells[0] == "trailer":
        return dict(zip(("type", "record_count", *TOTALS), cells, strict=False))
    if len(cells) != len(RECORD_FIELDS):
        return {"type": None, "ref": cells[1] if len(cells) > 1 else None}
    return dict(zip(RECORD_FIELDS, cells, strict=True))


def _jsonl_rows(text: str) -> list[tuple[int, dict[str, Any]]] | Refusal:
    rows: list[tuple[int, dict[str, Any]]] = []
    for number, raw in enumerate(text.split("\n"), start=1):
        if not raw.strip():
            continue
        try:
            value = json.loads(raw)
        except (ValueError, RecursionError):
            value = None
        if not isinstance(value, dict):
            if not rows:
                return _whole(f"line {number} is not a JSON object")
            value = {"type": None}  # a bad record line; a bad trailer is caught as missing
        rows.append((number, value))
    return rows


def _integer(value: object) -> int | None:
    if type(value) is int:
        return value
    if isinstance(value, str) and _INTEGER.fullmatch(value):
        return int(value)
    return None


def _text_problem(value: object) -> str | None:
    if isinstance(value, str) and len(value) <= TEXT_LENGTH_MAX and _PRINTABLE.fullmatch(value):
        return None
    return "1–128 printable characters"


def _whole(detail: str) -> Refusal:
    return Refusal(RefusalCode.INVALID_REQUEST, f"batch refused: {detail}")


def _mismatch(detail: str) -> Refusal:
    return Refusal(RefusalCode.CONTROL_TOTALS_MISMATCH, f"batch refused: {detail}")


def _bad(detail: str) -> Refusal:
    return Refusal(RefusalCode.INVALID_REQUEST, detail)


def write_results(
    fmt: str, batch_id: str, results: Iterable[LineResult]
) -> tuple[str, dict[str, int]]:
    """The result file (same format as the batch) and its totals."""
    totals = {"lines": 0, "accepted": 0, "replayed": 0, "refused": 0}
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n") if fmt == "csv" else None
    if writer is not None:
        writer.writerow(("line", "ref", "status", "seq", "replayed", "points", "code", "message"))
    for r in sorted(results, key=lambda r: r.line):
        totals["lines"] += 1
        status = "refused" if r.refusal is not None else "accepted"
        totals[status] += 1
        totals["replayed"] += r.replayed
        code = None if r.refusal is None else r.refusal.code.value
        message = None if r.refusal is None else r.refusal.detail
        if writer is not None:
            writer.writerow(
                (
                    r.line,
                    r.ref or "",
                    status,
                    _cell(r.seq),
                    str(r.replayed).lower(),
                    _cell(r.points),
                    code or "",
                    message or "",
                )
            )
        else:
            row = {
                "line": r.line,
                "ref": r.ref,
                "status": status,
                "seq": r.seq,
                "replayed": r.replayed,
                "points": r.points,
                "code": code,
                "message": message,
            }
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
    if writer is not None:
        writer.writerow(
            (
                "totals",
                batch_id,
                totals["lines"],
                totals["accepted"],
                totals["replayed"],
                totals["refused"],
                "",
                "",
            )
        )
    else:
        out.write(json.dumps({"type": "totals", "batch_id": batch_id, **totals}) + "\n")
    return out.getvalue(), totals


def _cell(value: int | None) -> str:
    return "" if value is None else str(value)


def format_batch(fmt: str, batch_id: str, partner_id: str, rows: Iterable[dict[str, Any]]) -> str:
    """A batch file of ``rows`` (dicts of ``RECORD_FIELDS``), trailer totals computed: what a
    partner's system writes (the bench and the tests write theirs with it)."""
    rows = list(rows)
    totals = dict.fromkeys(TOTALS, 0)
    for row in rows:
        totals[TOTAL_OF[row["type"]]] += int(row["amount"])
    header = {
        "type": "header",
        "format": FORMAT_VERSION,
        "batch_id": batch_id,
        "partner": partner_id,
    }
    trailer = {"type": "trailer", "record_count": len(rows), **totals}
    if fmt == "jsonl":
        lines = [header, *({k: v for k, v in r.items() if v is not None} for r in rows), trailer]
        return "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines)
    assert fmt == "csv", fmt
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header.values())
    for row in rows:
        writer.writerow("" if row.get(f) is None else row[f] for f in RECORD_FIELDS)
    writer.writerow(trailer.values())
    return out.getvalue()
