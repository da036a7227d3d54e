"""ISO 20022 ``pain.001.001.09`` (customer credit transfer initiation) for the payments
the coalition makes from its clearing account — one payment information block per
currency, a unique EndToEndId per payment, NbOfTxs and CtrlSum that add up.

Built with the standard library's ElementTree in a fixed order, so the same run gives
the same bytes; the tests validate it against the official XSD.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from decimal import Decimal

from ledger.timefmt import format_time_us
from settlement.journal_view import OPERATOR
from settlement.money import format_minor
from settlement.run import Run

NAMESPACE = "urn:iso:std:iso:20022:tech:xsd:pain.001.001.09"


class NothingToPay(ValueError):
    """The run has no payment for the coalition to make (a pain.001 needs at least one)."""


class MissingBankAccount(ValueError):
    """A party to be paid (or the clearing account) has no bank account on record."""


@dataclass(frozen=True, slots=True)
class Clearing:
    name: str
    iban: str
    bic: str


def pain001(run: Run, clearing: Clearing, created_us: int, execution_date: str) -> bytes:
    payments = [p for p in run.payments if p.payer == OPERATOR]
    if not payments:
        raise NothingToPay(f"the coalition makes no payment in run {run.run_id}")
    ET.register_namespace("", NAMESPACE)
    root = ET.Element(f"{{{NAMESPACE}}}Document")
    initiation = _sub(root, "CstmrCdtTrfInitn")
    header = _sub(initiation, "GrpHdr")
    _sub(header, "MsgId", run.run_id[:35])
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
    document: bytes = ET.tostring(root, encoding="UTF-8", xml_declaration=True)
    return document + b"\n"


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
