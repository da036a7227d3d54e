"""Rotating the log's signing key so that holders of the old key can follow.

The rotation is a journal entry naming both verifier keys; a checkpoint covering it is
signed with the OLD key (so whoever pinned the old key learns the new one from a note
they can verify), then a checkpoint of the same tree with the NEW key. Checkpoints
signed before stay verifiable with the old key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg

from coalition.keys import _named, load_signer
from coalition.settings import Settings
from ledger import checkpoint_log
from ledger.journal import Appended, Journal
from ledger.requests import EntryRequest
from ledger.signed_note import format_vkey
from ledger.signing_key import load_signer_file
from ledger.timefmt import now_us


def rotate(conn: psycopg.Connection[Any], settings: Settings, new_key_file: Path) -> str:
    old = load_signer(settings)
    new = _named(load_signer_file(new_key_file), settings)
    if new.key_id == old.key_id:
        raise ValueError("the new key is the key in use")
    old_vkey, new_vkey = format_vkey(old.verifier()), format_vkey(new.verifier())
    request = EntryRequest(
        "log_key_rotation",
        "log",
        f"key-rotation:{new.key_id:08x}",
        meta={"old_vkey": old_vkey, "new_vkey": new_vkey},
    )
    [result] = Journal().append(conn, [request])
    if not isinstance(result, Appended):
        raise RuntimeError(f"rotation entry refused: {result}")
    by_old = checkpoint_log.sign_now(conn, old, now_us())
    by_new = checkpoint_log.sign_now(conn, new, now_us())
    return (
        f"rotation recorded as entry {result.seq}; checkpoint {by_old.checkpoint_id} "
        f"(old key) and {by_new.checkpoint_id} (new key) cover it\nnew vkey: {new_vkey}"
    )
