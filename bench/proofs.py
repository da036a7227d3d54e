"""Merkle proofs and checkpoints on a large journal in PostgreSQL.

    .venv/bin/python -m bench.proofs [--quick]

Grows the journal (batches of 1000), then times: inclusion proofs from the database at
the latest size for random entries, their verification (hashlib only), consistency
proofs from random earlier sizes to the latest and their verification, the root hash at
the latest size, and checkpoint signing (ledger.checkpoint_log.sign_now, which proves the
new tree consistent with the previous checkpoint before it signs).
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import psycopg

from bench._common import (
    Progress,
    Report,
    SummaryRow,
    machine_facts,
    note,
    parse_args,
    percentile,
    print_facts,
    print_table,
    scratch_database,
)
from bench._workload import GROW_BATCH_SIZE, grow, open_accounts, transfers, tree_size
from ledger import checkpoint_log, proofs
from ledger.journal import Appended, Journal
from ledger.merkle_verify import verify_consistency, verify_inclusion
from ledger.signed_note import Signer

INCLUSION_TARGET_MS = 2.0
VERIFY_TARGET_US = 50.0
LOG_NAME = "bench.example/ledger"


def main() -> None:
    args = parse_args(__doc__ or "")
    size = 100_000 if args.quick else 1_000_000
    samples = 300 if args.quick else 2_000
    signing_rounds = 5 if args.quick else 20
    rng = random.Random(11)
    report = Report("proofs", args.quick)
    with scratch_database() as db:
        report.facts = machine_facts(db.url)
        print_facts(report.facts)
        journal = Journal()
        with psycopg.connect(db.url, autocommit=True) as conn:
            open_accounts(conn, journal)
            report.figures["growth"] = grow(conn, journal, size)
            latest = tree_size(conn)
            root_ms = _timed_ms(samples // 10, lambda: proofs.root_hash_at(conn, latest))
            root = proofs.root_hash_at(conn, latest)
            inclusion = _inclusion(conn, latest, root, rng, samples)
            consistency = _consistency(conn, latest, root, rng, samples)
            signing = _signing(conn, journal, signing_rounds)
    _print(report, latest, samples, root_ms, inclusion, consistency, signing)
    report.write()


def _timed_ms(times: int, call: Callable[[], object]) -> list[float]:
    out = []
    for _ in range(max(1, times)):
        started = time.perf_counter()
        call()
        out.append(1000 * (time.perf_counter() - started))
    return out


def _leaf_hashes(conn: psycopg.Connection[Any], seqs: list[int]) -> dict[int, bytes]:
    rows = conn.execute(
        "SELECT seq, leaf_hash FROM ledger_entry WHERE chain_id = 'main' AND seq = ANY(%s)",
        (seqs,),
    ).fetchall()
    return {seq: bytes(h) for seq, h in rows}


def _verify_us(checks: list[Callable[[], None]], rounds: int) -> list[float]:
    """Each check timed on its own, over several rounds (the first warms caches)."""
    out = []
    for _ in range(rounds):
        for check in checks:
            started = time.perf_counter()
            check()
            out.append(1e6 * (time.perf_counter() - started))
    return out


def _inclusion(
    conn: psycopg.Connection[Any], latest: int, root: bytes, rng: random.Random, samples: int
) -> dict[str, list[float]]:
    seqs = [rng.randrange(latest) for _ in range(samples)]
    leaves = _leaf_hashes(conn, seqs)
    progress = Progress("inclusion proofs", samples)
    generate_ms: list[float] = []
    checks: list[Callable[[], None]] = []
    proof_lengths = []
    for done, seq in enumerate(seqs, 1):
        started = time.perf_counter()
        proof = proofs.inclusion_proof(conn, seq, latest)
        generate_ms.append(1000 * (time.perf_counter() - started))
        proof_lengths.append(len(proof))
        verify_inclusion(leaves[seq], seq, latest, proof, root)  # must hold, untimed
        checks.append(partial(verify_inclusion, leaves[seq], seq, latest, proof, root))
        progress(done)
    progress.done()
    return {
        "generate_ms": generate_ms,
        "verify_us": _verify_us(checks, 5),
        "proof_hashes": [float(n) for n in proof_lengths],
    }


def _consistency(
    conn: psycopg.Connection[Any], latest: int, root: bytes, rng: random.Random, samples: int
) -> dict[str, list[float]]:
    sizes = [rng.randrange(1, latest) for _ in range(samples)]
    progress = Progress("consistency proofs", samples)
    generate_ms: list[float] = []
    checks: list[Callable[[], None]] = []
    for done, old_size in enumerate(sizes, 1):
        old_root = proofs.root_hash_at(conn, old_size)
        started = time.perf_counter()
        proof = proofs.consistency_proof(conn, old_size, latest)
        generate_ms.append(1000 * (time.perf_counter() - started))
        verify_consistency(old_size, latest, proof, old_root, root)  # must hold, untimed
        checks.append(partial(verify_consistency, old_size, latest, proof, old_root, root))
        progress(done)
    progress.done()
    return {"generate_ms": generate_ms, "verify_us": _verify_us(checks, 5)}


def _signing(conn: psycopg.Connection[Any], journal: Journal, rounds: int) -> dict[str, Any]:
    signer = Signer.from_seed(LOG_NAME, os.urandom(32))
    started = time.perf_counter()
    checkpoint_log.sign_now(conn, signer, time.time_ns() // 1000)
    first_ms = 1000 * (time.perf_counter() - started)
    requests = transfers("sign")
    extending_ms: list[float] = []
    unchanged_ms: list[float] = []
    note(f"signing {rounds} checkpoints, {GROW_BATCH_SIZE} new entries before each")
    for _ in range(rounds):
        results = journal.append(conn, [next(requests) for _ in range(GROW_BATCH_SIZE)])
        assert all(isinstance(r, Appended) for r in results)
        started = time.perf_counter()
        checkpoint_log.sign_now(conn, signer, time.time_ns() // 1000)
        extending_ms.append(1000 * (time.perf_counter() - started))
        started = time.perf_counter()
        checkpoint_log.sign_now(conn, signer, time.time_ns() // 1000)
        unchanged_ms.append(1000 * (time.perf_counter() - started))
    return {"first_ms": first_ms, "extending_ms": extending_ms, "unchanged_ms": unchanged_ms}


def _stats(values: list[float]) -> list[str]:
    return [
        f"{percentile(values, 0.5):.3f}",
        f"{percentile(values, 0.99):.3f}",
        f"{sum(values) / len(values):.3f}",
        f"{len(values):,}",
    ]


def _print(
    report: Report,
    latest: int,
    samples: int,
    root_ms: list[float],
    inclusion: dict[str, list[float]],
    consistency: dict[str, list[float]],
    signing: dict[str, Any],
) -> None:
    mean_hashes = sum(inclusion["proof_hashes"]) / len(inclusion["proof_hashes"])
    print(
        f"journal: {latest:,} entries; {samples:,} random samples;"
        f" inclusion proofs of {mean_hashes:.1f} hashes on average\n"
    )
    print_table(
        "proofs and checkpoints",
        ["operation", "p50", "p99", "mean", "n"],
        [
            ["inclusion proof from the database (ms)", *_stats(inclusion["generate_ms"])],
            ["inclusion proof verification (µs)", *_stats(inclusion["verify_us"])],
            ["consistency proof from the database (ms)", *_stats(consistency["generate_ms"])],
            ["consistency proof verification (µs)", *_stats(consistency["verify_us"])],
            ["root hash at the latest size (ms)", *_stats(root_ms)],
            ["sign_now after 1000 new entries (ms)", *_stats(signing["extending_ms"])],
            ["sign_now, nothing new (ms)", *_stats(signing["unchanged_ms"])],
            ["first sign_now, no previous checkpoint (ms)", *_stats([signing["first_ms"]])],
        ],
    )
    report.figures.update(
        {
            "tree_size": latest,
            "samples": samples,
            "inclusion": inclusion,
            "consistency": consistency,
            "root_hash_ms": root_ms,
            "signing": signing,
        }
    )
    inclusion_p50 = percentile(inclusion["generate_ms"], 0.5)
    inclusion_p99 = percentile(inclusion["generate_ms"], 0.99)
    verify_mean = sum(inclusion["verify_us"]) / len(inclusion["verify_us"])
    report.summary += [
        SummaryRow(
            f"Inclusion proof from PostgreSQL at {latest:,} entries, p50 / p99 (ms)",
            f"{inclusion_p50:.2f} / {inclusion_p99:.2f}",
            f"p99 ≤ {INCLUSION_TARGET_MS:g}",
            inclusion_p99 <= INCLUSION_TARGET_MS,
        ),
        SummaryRow(
            "Inclusion proof verification, mean (µs)",
            f"{verify_mean:.1f}",
            f"≤ {VERIFY_TARGET_US:g}",
            verify_mean <= VERIFY_TARGET_US,
        ),
        SummaryRow(
            "Consistency proof from PostgreSQL, p50 / p99 (ms)",
            f"{percentile(consistency['generate_ms'], 0.5):.2f}"
            f" / {percentile(consistency['generate_ms'], 0.99):.2f}",
        ),
        SummaryRow(
            "Checkpoint signing incl. consistency check, p50 / p99 (ms)",
            f"{percentile(signing['extending_ms'], 0.5):.2f}"
            f" / {percentile(signing['extending_ms'], 0.99):.2f}",
        ),
    ]
    print_table(
        "summary",
        ["metric", "result", "target", "met"],
        [
            [r.metric, r.value, r.target, "" if r.met is None else ("yes" if r.met else "NO")]
            for r in report.summary
        ],
    )


if __name__ == "__main__":
    main()
