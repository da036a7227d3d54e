"""Reconciliation: a partner's own records of a period against the journal's.

Both sides are lists of records keyed by the partner's transaction reference. The answer
is matched, missing on our side, missing on theirs, and mismatched field by field (times
within a configurable tolerance count as equal), with totals per side. Times in the
answer are RFC 3339 (``2027-01-15T08:00:05.000000Z``), never raw microseconds.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ledger.timefmt import format_time_us, parse_time_us

FIELDS = ("kind", "member", "points", "amount_minor")
RECORDS_MAX = 1_000_000


class InvalidRecords(ValueError):
    """The partner's file cannot be read as records (says which line and why)."""


@dataclass(frozen=True, slots=True)
class Record:
    ref: str
    kind: str
    member: str
    points: int
    amount_minor: int | None
    time_us: int

    def to_json(self) -> dict[str, Any]:
        return {
            "ref": self.ref,
            "kind": self.kind,
            "member": self.member,
            "points": self.points,
            "amount_minor": self.amount_minor,
            "time": format_time_us(self.time_us),
        }


@dataclass(frozen=True, slots=True)
class Mismatch:
    ref: str
    field: str
    ours: Any
    theirs: Any


@dataclass(slots=True)
class Reconciliation:
    matched: list[str] = field(default_factory=list)
    missing_ours: list[str] = field(default_factory=list)  # they have it, the journal does not
    missing_theirs: list[str] = field(default_factory=list)  # the journal has it, they do not
    mismatched: list[Mismatch] = field(default_factory=list)
    totals: dict[str, dict[str, int]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "matched": self.matched,
            "missing_ours": self.missing_ours,
            "missing_theirs": self.missing_theirs,
            "mismatched": [
                {"ref": m.ref, "field": m.field, "ours": m.ours, "theirs": m.theirs}
                for m in self.mismatched
            ],
            "totals": self.totals,
        }


def reconcile(ours: list[Record], theirs: list[Record], time_tolerance_us: int) -> Reconciliation:
    by_ref_ours = {r.ref: r for r in ours}
    by_ref_theirs = {r.ref: r for r in theirs}
    result = Reconciliation()
    for ref in sorted(by_ref_ours.keys() | by_ref_theirs.keys()):
        mine, yours = by_ref_ours.get(ref), by_ref_theirs.get(ref)
        if mine is None:
            result.missing_ours.append(ref)
        elif yours is None:
            result.missing_theirs.append(ref)
        else:
            differences = [
                Mismatch(ref, f, getattr(mine, f), getattr(yours, f))
                for f in FIELDS
                if getattr(mine, f) != getattr(yours, f)
            ]
            if abs(mine.time_us - yours.time_us) > time_tolerance_us:
                ours_time, theirs_time = format_time_us(mine.time_us), format_time_us(yours.time_us)
                differences.append(Mismatch(ref, "time", ours_time, theirs_time))
            if differences:
                result.mismatched.extend(differences)
            else:
                result.matched.append(ref)
    result.totals = {
        "ours": {"records": len(ours), "points": sum(r.points for r in ours)},
        "theirs": {"records": len(theirs), "points": sum(r.points for r in theirs)},
    }
    return result


def parse_records(
    data: bytes, fmt: str, parse_time: Callable[[str], int] = parse_time_us
) -> list[Record]:
    """Read a partner's file: JSON (a list of objects) or CSV with a header row, fields
    ref, kind, member, points, amount_minor (may be empty), time (read by ``parse_time``:
    by default the journal's form ``…SS.ffffffZ``; a caller may pass a laxer reader)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidRecords("the file is not UTF-8 text") from None
    if fmt == "json":
        try:
            rows = json.loads(text, parse_float=_no_float)
        except ValueError as exc:
            raise InvalidRecords(f"not JSON: {exc}") from None
        if not isinstance(rows, list):
            raise InvalidRecords("JSON records must be a list of objects")
    elif fmt == "csv":
        rows = list(csv.DictReader(io.StringIO(text)))
    else:
        raise InvalidRecords("format is json or csv")
    if len(rows) > RECORDS_MAX:
        raise InvalidRecords(f"at most {RECORDS_MAX:,} records per file")
    return [_record(i + 1, row, parse_time) for i, row in enumerate(rows)]


def _no_float(text: str) -> None:
    raise ValueError(f"{text} is not an integer")


def _record(number: int, row: Any, parse_time: Callable[[str], int]) -> Record:
    if not isinstance(row, dict):
        raise InvalidRecords(f"record {number}: not an object")
    try:
        amount = row.get("amount_minor")
        return Record(
            ref=_text(row["ref"]),
            kind=_text(row["kind"]),
            member=_text(row["member"]),
            points=_integer(row["points"]),
            amount_minor=None if amount in (None, "") else _integer(amount),
            time_us=parse_time(str(row["time"])),
        )
    except KeyError as exc:
        raise InvalidRecords(f"record {number}: missing field {exc}") from None
    except ValueError as exc:
        raise InvalidRecords(f"record {number}: {exc}") from None


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value or len(value) > 128:
        raise ValueError("text fields are 1–128 characters")
    return value


def _integer(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"{value!r} is not an integer")
    if isinstance(value, str) and not value.lstrip("-").isdigit():
        raise ValueError(f"{value!r} is not an integer")
    return int(value)
