"""An account as of a journal position: its balance and its lots after the first
``tree_size`` entries, folded from the entries that post to it (FORMAT.md §4: a credit
with ``lot`` opens one, ``lots`` on a debit takes from them and on a credit restores)."""

from __future__ import annotations

import json
from typing import Any

import psycopg

from ledger.journal import DEFAULT_CHAIN_ID
from ledger.state import Lot
from ledger.timefmt import parse_time_us

Conn = psycopg.Connection[Any]


def lots_as_of_size(
    conn: Conn, account: str, tree_size: int, chain_id: str = DEFAULT_CHAIN_ID
) -> list[Lot]:
    """The account's lots holding points after the first ``tree_size`` entries, oldest
    first (expired ones too, until an expiry entry takes them: they still hold points)."""
    rows = conn.execute(
        "SELECT e.seq, e.canonical FROM ledger_entry e WHERE e.chain_id = %s AND e.seq IN"
        " (SELECT DISTINCT p.seq FROM ledger_posting p"
        "  WHERE p.chain_id = %s AND p.account = %s AND p.seq < %s) ORDER BY e.seq",
        (chain_id, chain_id, account, tree_size),
    ).fetchall()
    lots: dict[str, Lot] = {}
    for seq, canonical in rows:
        for index, posting in enumerate(json.loads(bytes(canonical))["postings"]):
            if posting["account"] == account:
                _fold(lots, account, seq, index, posting)
    return [lot for lot in lots.values() if lot.remaining > 0]


def _fold(lots: dict[str, Lot], account: str, seq: int, index: int, posting: Any) -> None:
    opened = posting.get("lot")
    if opened is not None and opened["amount"] > 0:
        expires = opened.get("expires")
        lot_id = f"{seq}:{index}"
        lots[lot_id] = Lot(
            lot_id,
            account,
            opened["origin"],
            None if expires is None else parse_time_us(expires),
            seq,
            index,
            opened["amount"],
            opened["amount"],
        )
    sign = 1 if posting["amount"] > 0 else -1
    for take in posting.get("lots", ()):
        lot = lots[take["lot"]]
        lot.remaining += sign * take["amount"]
