"""Check a receipt (C2SP tlog-proof) offline: the checkpoint's signature against a key
the holder pinned, and the entry's inclusion in that checkpoint's tree.

Our receipts carry the entry's canonical bytes as the proof's extra data, so a receipt
alone says what was recorded and proves that the log committed to it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from ledger.checkpoint import Checkpoint, open_checkpoint
from ledger.merkle_verify import verify_inclusion
from ledger.receipt import Receipt, ReceiptError, parse_receipt
from ledger.signed_note import Verifier


@dataclass(frozen=True, slots=True)
class CheckedReceipt:
    checkpoint: Checkpoint
    leaf_index: int
    entry_bytes: bytes


def check_receipt(data: bytes, verifier: Verifier) -> CheckedReceipt:
    """Raise (NoteError, ProofError or ReceiptError) unless every part holds."""
    receipt: Receipt = parse_receipt(data)
    checkpoint = open_checkpoint(receipt.checkpoint, verifier)
    if receipt.extra_data is None:
        raise ReceiptError("malformed", "receipt carries no entry (extra data)")
    try:
        seq = json.loads(receipt.extra_data).get("seq")
    except (ValueError, AttributeError):
        seq = None
    if seq != receipt.leaf_index:
        raise ReceiptError("malformed", f"entry says seq {seq}, proof is for {receipt.leaf_index}")
    leaf_hash = hashlib.sha256(b"\x00" + receipt.extra_data).digest()
    verify_inclusion(
        leaf_hash,
        receipt.leaf_index,
        checkpoint.tree_size,
        list(receipt.audit_path),
        checkpoint.root_hash,
    )
    return CheckedReceipt(checkpoint, receipt.leaf_index, receipt.extra_data)
