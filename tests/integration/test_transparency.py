"""Checkpoints, proofs, receipts, key rotation and the witness, against PostgreSQL and
(for the witness) over real HTTP."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import uvicorn

from coalition.api.app import create_app
from coalition.checkpointer import Checkpointer
from coalition.settings import Settings
from coalition.witness import HistoryRewritten, witness
from ledger import checkpoint_log, proofs
from ledger.checkpoint import Checkpoint, open_checkpoint, parse_checkpoint, sign_checkpoint
from ledger.checkpoint_log import CheckpointPolicy, InconsistentCheckpoint
from ledger.export import export_journal
from ledger.journal import Appended, Journal
from ledger.merkle_verify import ProofError, verify_consistency, verify_inclusion
from ledger.receipt import format_receipt
from ledger.receipt_check import check_receipt
from ledger.requests import AccountSpec, EntryRequest, PostingRequest
from ledger.signed_note import NoteError, Signer, format_signer_key, format_vkey
from ledger.verify import verify_export

ORIGIN = "ledger.test.example"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def conn(db_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(db_url, autocommit=True) as c:
        yield c


@pytest.fixture()
def signer() -> Signer:
    return Signer.from_seed(ORIGIN, bytes(range(32)))


def append_entries(conn: psycopg.Connection[Any], count: int, tag: str = "e") -> None:
    journal = Journal()
    journal.append(
        conn,
        [
            EntryRequest(
                "open",
                "t",
                f"open-{tag}",
                open_accounts=(
                    AccountSpec("src", "EUR", overdraft=True),
                    AccountSpec("dst", "EUR"),
                ),
            )
        ],
    )
    requests = [
        EntryRequest(
            "move",
            "t",
            f"{tag}-{i}",
            postings=(
                PostingRequest("src", "EUR", -(i + 1)),
                PostingRequest("dst", "EUR", i + 1),
            ),
        )
        for i in range(count)
    ]
    results = journal.append(conn, requests)
    assert all(isinstance(r, Appended) for r in results)


def test_signed_checkpoint_matches_the_replayed_root(conn, signer, tmp_path):
    append_entries(conn, 40)
    stored = checkpoint_log.sign_now(conn, signer, 1)
    cp = open_checkpoint(stored.signed_note, signer.verifier())
    export = tmp_path / "journal.jsonl"
    export_journal(conn, export)
    verified = verify_export(str(export), sizes_wanted=[cp.tree_size])
    assert (cp.origin, cp.tree_size) == (ORIGIN, 41)
    assert verified.roots_at[cp.tree_size] == cp.root_hash == stored.root_hash
    again = checkpoint_log.sign_now(conn, signer, 2)
    assert again.checkpoint_id == stored.checkpoint_id  # nothing new: no second signature
    append_entries(conn, 3, tag="more")
    newer = checkpoint_log.sign_now(conn, signer, 3)
    listed = checkpoint_log.list_checkpoints(conn)
    assert [c.tree_size for c in listed] == [41, newer.tree_size]


def test_proofs_from_the_database_verify_for_every_entry_and_size(conn):
    append_entries(conn, 37)
    sizes = [1, 2, 5, 8, 17, 38]
    for size in sizes:
        root = proofs.root_hash_at(conn, size)
        for seq in range(size):
            leaf = conn.execute("SELECT leaf_hash FROM ledger_entry WHERE seq = %s", (seq,))
            leaf_hash = bytes(leaf.fetchone()[0])
            verify_inclusion(leaf_hash, seq, size, proofs.inclusion_proof(conn, seq, size), root)
        for old in range(1, size + 1):
            proof = proofs.consistency_proof(conn, old, size)
            verify_consistency(old, size, proof, proofs.root_hash_at(conn, old), root)
    with pytest.raises(proofs.ProofUnavailable):
        proofs.inclusion_proof(conn, 38, 38)
    with pytest.raises(proofs.ProofUnavailable):
        proofs.consistency_proof(conn, 0, 5)
    with pytest.raises(proofs.ProofUnavailable):
        proofs.root_hash_at(conn, 39)


def _tamper(conn: psycopg.Connection[Any], sql: str, *params: Any) -> None:
    with conn.transaction():
        conn.execute("SET LOCAL session_replication_role = replica")
        conn.execute(sql, params)


def test_log_refuses_to_sign_a_rewritten_history(conn, signer):
    append_entries(conn, 20)
    checkpoint_log.sign_now(conn, signer, 1)
    append_entries(conn, 5, tag="later")
    # Rewrite the first 16 entries' subtree, as a forger recomputing hashes would.
    _tamper(
        conn,
        "UPDATE ledger_merkle_node SET node_hash = %s WHERE level = 4 AND node_index = 0",
        b"\x11" * 32,
    )
    with pytest.raises(InconsistentCheckpoint, match="does not extend"):
        checkpoint_log.sign_now(conn, signer, 2)


def test_log_refuses_to_sign_a_shrunk_tree(conn, signer):
    append_entries(conn, 10)
    checkpoint_log.sign_now(conn, signer, 1)
    _tamper(conn, "UPDATE ledger_chain SET tree_size = 5")
    with pytest.raises(InconsistentCheckpoint, match="removed"):
        checkpoint_log.sign_now(conn, signer, 2)


def _receipt(conn: psycopg.Connection[Any], signer: Signer, seq: int) -> bytes:
    stored = checkpoint_log.sign_now(conn, signer, 1)
    path = proofs.inclusion_proof(conn, seq, stored.tree_size)
    canonical = conn.execute("SELECT canonical FROM ledger_entry WHERE seq = %s", (seq,))
    return format_receipt(seq, path, stored.signed_note, bytes(canonical.fetchone()[0]))


def test_receipt_checks_offline_and_every_alteration_is_caught(conn, signer):
    append_entries(conn, 12)
    receipt = _receipt(conn, signer, 7)
    checked = check_receipt(receipt, signer.verifier())
    assert checked.leaf_index == 7 and b'"seq":7' in checked.entry_bytes
    other = Signer.from_seed(ORIGIN, bytes(32))
    with pytest.raises(NoteError):
        check_receipt(receipt, other.verifier())
    lines = receipt.split(b"\n")
    proof_line = lines.index(b"index 7") + 1
    flipped = bytearray(lines[proof_line])
    flipped[3] = ord("A") if flipped[3] != ord("A") else ord("B")
    bad_proof = b"\n".join([*lines[:proof_line], bytes(flipped), *lines[proof_line + 1 :]])
    with pytest.raises((ProofError, ValueError)):
        check_receipt(bad_proof, signer.verifier())


def test_forged_and_altered_checkpoints_are_refused(conn, signer):
    append_entries(conn, 4)
    stored = checkpoint_log.sign_now(conn, signer, 1)
    forger = Signer.from_seed(ORIGIN, b"\x07" * 32)
    body = parse_checkpoint(stored.signed_note.split(b"\n\n")[0].decode() + "\n")
    forged = sign_checkpoint(body, forger)
    with pytest.raises(NoteError):
        open_checkpoint(forged, signer.verifier())
    for altered in (
        stored.signed_note.replace(f"\n{body.tree_size}\n".encode(), b"\n999\n", 1),
        stored.signed_note.replace(stored.signed_note.split(b"\n")[2], b"A" * 43 + b"=", 1),
    ):
        with pytest.raises(NoteError):
            open_checkpoint(altered, signer.verifier())


def test_checkpointer_signs_by_policy(conn, signer, db_url):
    checkpointer = Checkpointer(db_url, signer, CheckpointPolicy(entries_max=10, seconds_max=None))
    assert checkpointer.tick(conn) is None  # empty journal: nothing to sign
    append_entries(conn, 4)
    first = checkpointer.tick(conn)
    assert first is not None and first.tree_size == 5
    append_entries(conn, 3, tag="b")
    assert checkpointer.tick(conn) is None  # 4 new entries < 10
    append_entries(conn, 9, tag="c")
    assert checkpointer.tick(conn) is not None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture()
def server(db_url: str) -> Iterator[str]:
    port = _free_port()
    config = uvicorn.Config(
        create_app(Settings.from_env(), db_url), host="127.0.0.1", port=port, log_level="warning"
    )
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not srv.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(timeout=10)


def test_witness_follows_an_honest_log_and_catches_a_fork(conn, signer, server, tmp_path):
    state = tmp_path / "witness.state"
    append_entries(conn, 6)
    checkpoint_log.sign_now(conn, signer, 1)
    first = witness(server, signer.verifier(), state)
    assert first.previous is None and first.current.tree_size == 7
    append_entries(conn, 9, tag="b")
    checkpoint_log.sign_now(conn, signer, 2)
    second = witness(server, signer.verifier(), state)
    assert (second.previous.tree_size, second.current.tree_size) == (7, 17)
    # A compromised log signs a different history of the same length: a fork.
    kept = state.read_bytes()
    fork = sign_checkpoint(Checkpoint(ORIGIN, 17, b"\x42" * 32), signer)
    conn.execute(
        "INSERT INTO ledger_checkpoint (chain_id, tree_size, root_hash, key_name, key_id,"
        " signed_note, signed_at_us) VALUES ('main', 17, %s, %s, %s, %s, 3)",
        (b"\x42" * 32, ORIGIN, signer.key_id, fork),
    )
    with pytest.raises(HistoryRewritten, match="two different roots"):
        witness(server, signer.verifier(), state)
    assert state.read_bytes() == kept  # the witness keeps the last good checkpoint


def test_witness_cli_reports_a_rewritten_history_loudly(conn, signer, server, tmp_path):
    state = tmp_path / "witness.state"
    append_entries(conn, 6)
    checkpoint_log.sign_now(conn, signer, 1)
    vkey = format_vkey(signer.verifier())
    cli = [
        sys.executable,
        "-m",
        "coalition.cli",
        "witness",
        "--url",
        server,
        "--vkey",
        vkey,
        "--state",
        str(state),
    ]
    ok = subprocess.run(cli, capture_output=True, text=True, cwd=ROOT)
    assert ok.returncode == 0, ok.stderr
    # History rewritten: a longer tree whose prefix differs from what the witness saw.
    rewritten = sign_checkpoint(Checkpoint(ORIGIN, 9, b"\x24" * 32), signer)
    conn.execute(
        "INSERT INTO ledger_checkpoint (chain_id, tree_size, root_hash, key_name, key_id,"
        " signed_note, signed_at_us) VALUES ('main', 9, %s, %s, %s, %s, 3)",
        (b"\x24" * 32, ORIGIN, signer.key_id, rewritten),
    )
    append_entries(conn, 2, tag="b")  # so that a consistency proof 7 → 9 exists
    bad = subprocess.run(cli, capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode == 1
    assert "ALERT history rewritten" in bad.stderr


def test_key_rotation_keeps_old_checkpoints_verifiable(conn, tmp_path, monkeypatch):
    from coalition.key_rotation import rotate

    old = Signer.from_seed(ORIGIN, b"\x01" * 32)
    new = Signer.from_seed(ORIGIN, b"\x02" * 32)
    new_file = tmp_path / "new.skey"
    new_file.write_text(format_signer_key(new))
    monkeypatch.setenv("COALITION_LOG_ORIGIN", ORIGIN)
    monkeypatch.setenv("COALITION_SIGNING_KEY", format_signer_key(old))
    append_entries(conn, 3)
    before = checkpoint_log.sign_now(conn, old, 1)
    rotate(conn, Settings.from_env(), new_file)
    listed = checkpoint_log.list_checkpoints(conn)
    assert [c.key_id for c in listed] == [old.key_id, old.key_id, new.key_id]
    open_checkpoint(before.signed_note, old.verifier())
    by_old, by_new = listed[1], listed[2]
    assert by_old.tree_size == by_new.tree_size == before.tree_size + 1
    open_checkpoint(by_old.signed_note, old.verifier())
    open_checkpoint(by_new.signed_note, new.verifier())
    with pytest.raises(NoteError):
        open_checkpoint(by_new.signed_note, old.verifier())
    entry = conn.execute("SELECT kind, canonical FROM ledger_entry ORDER BY seq DESC LIMIT 1")
    kind, canonical = entry.fetchone()
    assert kind == "log_key_rotation" and format_vkey(new.verifier()).encode() in bytes(canonical)
