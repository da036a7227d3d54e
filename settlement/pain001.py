"""ISO 20022 ``pain.001.001.09`` (customer credit transfer initiation) for the payments
the coalition makes from its clearing account — one payment information block per
currency, a unique EndToEndId per payment, NbOfTxs and CtrlSum that add up.

Built with the standard library's ElementTree in a fixed order. Each file is checked
before it is handed out:

- the requested execution date (``ReqdExctnDt``) is a real ``YYYY-MM-DD`` date, and not
  before the day the file is made in the coalition's time zone when one is given (today
  is allowed);
- the message id (``MsgId``) is new for every file made — banks refuse a message id they
  have seen — as the run id (up to 11 characters), the generation time in UTC to the
  microsecond (``YYMMDDHHMMSSffffff``) and 5 random characters, at most 35 characters
  of ``A–Z a–z 0–9 -``; the EndToEndIds stay those of the run's payments;
- the document is valid against the official ``pain.001.001.09`` XSD (shipped in
  ``settlement/schemas/``), or InvalidPaymentFile says where it is not.

So two files for the same run differ in MsgId (and CreDtTm) only.
"""

from __future__ import annotations

import re
import secrets
import string
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from ledger.timefmt import format_time_us
from settlement.journal_view import OPERATOR
from settlement.money import format_minor
from settlement.run import Run

NAMESPACE = "urn:iso:std:iso:20022:tech:xsd:pain.001.001.09"
XSD = Path(__file__).resolve().parent / "schemas" / "pain.001.001.09.xsd"
MESSAGE_ID_MAX = 35
_RUN_PART_MAX = 11
_RANDOM_CHARS = string.ascii_uppercase + string.digits
_RANDOM_LENGTH = 5
_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", re.ASCII)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class NothingToPay(ValueError):
    """The run has no payment for the coalition to make (a pain.001 needs at least one)."""


class MissingBankAccount(ValueError):
    """A party to be paid (or the clearing account) has no bank account on record."""


class InvalidPaymentFile(ValueError):
    """The payment file would not be one a bank accepts (says why); nothing is written."""


class InvalidExecutionDate(InvalidPaymentFile):
    """The requested execution date is not a date, or is in the past."""


@dataclass(frozen=True, slots=True)
class Clearing:
    name: str
    iban: str
    bic: str


def pain001(
    run: Run,
    clearing: Clearing,
    created_us: int,
    execution_date: str,
    *,
    timezone: str | None = None,
    message_id: str | None = None,
) -> bytes:
    """The payment file of ``run``, made at ``created_us``, to be executed on
    ``execution_date`` (``YYYY-MM-DD``; with ``timezone``, not before that day there).
    ``message_id`` is for tests; by default a new one is drawn (new_message_id)."""
    payments = [p for p in run.payments if p.payer == OPERATOR]
    if not payments:
        raise NothingToPay(f"the coalition makes no payment in run {run.run_id}")
    check_execution_date(execution_date, created_us, timezone)
    if message_id is None:
        message_id = new_message_id(run.run_id, created_us)
    ET.register_namespace("", NAMESPACE)
    root = ET.Element(f"{{{NAMESPACE}}}Document")
    initiation = _sub(root, "CstmrCdtTrfInitn")
    header = _sub(initiation, "GrpHdr")
    _sub(header, "MsgId", message_id)
    _sub(header, "CreDtTm", format_time_us(created_us)[:19])
    _sub(header, "NbOfTxs", str(len(payments)))
    _sub(header, "CtrlSum", _control_sum([(p.amount_minor, p.currency) for p in payments]))
    _sub(_sub(header, "InitgPty"), "Nm", clearing.name)
    for currency in sorted({p.currency for p in payments}):
        batch = [p for p in payments if p.currency == currency]
        info = _sub(initiation, "PmtInf")
        _sub(info, "PmtInfId", f"{run.run_id}-{currency}"[:35])
        _sub(info, "PmtMtd", "TRF")
        _sub(info, "NbOfTxs", str(len(batch)))
        _sub(info, "CtrlSum", _control_sum([(p.amount_minor, p.currency) for p in batch]))
        _sub(_sub(info, "ReqdExctnDt"), "Dt", execution_date)
        _sub(_sub(info, "Dbtr"), "Nm", clearing.name)
        account = _sub(info, "DbtrAcct")
        _sub(_sub(account, "Id"), "IBAN", clearing.iban)
        _sub(account, "Ccy", currency)
        _sub(_sub(_sub(info, "DbtrAgt"), "FinInstnId"), "BICFI", clearing.bic)
        for payment in batch:
            bank = run.bank_accounts.get(payment.payee)
            if bank is None:
                raise MissingBankAccount(f"no bank account on record for {payment.payee}")
            tx = _sub(info, "CdtTrfTxInf")
            _sub(_sub(tx, "PmtId"), "EndToEndId", payment.end_to_end_id)
            amount = _sub(_sub(tx, "Amt"), "InstdAmt", format_minor(payment.amount_minor, currency))
            amount.set("Ccy", currency)
            _sub(_sub(_sub(tx, "CdtrAgt"), "FinInstnId"), "BICFI", bank["bic"])
            _sub(_sub(tx, "Cdtr"), "Nm", bank["name"][:140])
            _sub(_sub(_sub(tx, "CdtrAcct"), "Id"), "IBAN", bank["iban"])
            _sub(_sub(tx, "RmtInf"), "Ustrd", f"Coalition settlement {run.run_id}"[:140])
    ET.indent(root)
    document: bytes = ET.tostring(root, encoding="UTF-8", xml_declaration=True) + b"\n"
    check_against_schema(document)
    return document


def new_message_id(run_id: str, created_us: int) -> str:
    """A message id of its own for each file: run id, time to the microsecond, random."""
    run_part = re.sub(r"[^A-Za-z0-9-]", "", run_id)[:_RUN_PART_MAX].strip("-") or "run"
    stamp = format_time_us(created_us)  # 2027-01-15T08:00:00.000000Z
    compact = stamp[2:4] + stamp[5:7] + stamp[8:10] + stamp[11:13] + stamp[14:16]
    compact += stamp[17:19] + stamp[20:26]
    suffix = "".join(secrets.choice(_RANDOM_CHARS) for _ in range(_RANDOM_LENGTH))
    message_id = f"{run_part}-{compact}{suffix}"
    assert len(message_id) <= MESSAGE_ID_MAX, message_id
    return message_id


def check_execution_date(execution_date: str, created_us: int, timezone: str | None) -> None:
    """A real ``YYYY-MM-DD`` date; with ``timezone``, not before the day of ``created_us``
    there (today allowed). Raises InvalidExecutionDate."""
    if not isinstance(execution_date, str) or not _ISO_DATE.fullmatch(execution_date):
        raise InvalidExecutionDate(
            f"execution date {execution_date!r} is not a date: give YYYY-MM-DD"
        )
    try:
        day = date.fromisoformat(execution_date)
    except ValueError:
        raise InvalidExecutionDate(
            f"execution date {execution_date!r} is not a date of the calendar"
        ) from None
    if timezone is not None:
        today = _day_at(created_us, timezone)
        if day < today:
            raise InvalidExecutionDate(
                f"execution date {execution_date} is in the past: today is {today} in {timezone}"
            )


def _day_at(time_us: int, timezone: str) -> date:
    moment = _EPOCH + timedelta(microseconds=time_us)
    return moment.astimezone(ZoneInfo(timezone)).date()


@cache
def _schema() -> Any:
    import xmlschema  # only when a file is made: it takes a moment to load

    return xmlschema.XMLSchema(str(XSD))


def check_against_schema(document: bytes) -> None:
    """Raise InvalidPaymentFile unless ``document`` is valid against the pain.001.001.09 XSD."""
    errors = list(_schema().iter_errors(document.decode("utf-8")))
    if errors:
        first = errors[0]
        where = getattr(first, "path", None) or "the document"
        reason = getattr(first, "reason", None) or str(first).splitlines()[0]
        raise InvalidPaymentFile(
            f"the payment file is not valid pain.001.001.09 at {where}: {reason}"
            + (f" (and {len(errors) - 1} more)" if len(errors) > 1 else "")
        )


def _sub(parent: ET.Element, tag: str, text: str | None = None) -> ET.Element:
    element = ET.SubElement(parent, f"{{{NAMESPACE}}}{tag}")
    if text is not None:
        element.text = text
    return element


def _control_sum(amounts: list[tuple[int, str]]) -> str:
    """The plain sum of the amounts in major units, as the standard defines CtrlSum (it
    adds across currencies without converting); exact, each in its own exponent."""
    total = sum((Decimal(format_minor(minor, currency)) for minor, currency in amounts), Decimal(0))
    return f"{total:f}"
