"""Settlement speed: compute one period holding 1,000,000 redemptions.

The journal is generated in memory as canonical entries of the kinds settlement reads
(partners and terms, earns opening lots, redemptions taking them, across 5 partners),
then ``settlement.run.compute_run`` streams it — the same function the database path and
``coalition settle from-export`` use. Target: ≤ 5 s on a 2-core machine (issue 12).

    .venv/bin/python -m bench.settlement [--redemptions N]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from decimal import Decimal
from pathlib import Path

from ledger.canonical import canonical_bytes
from ledger.timefmt import format_time_us
from settlement.run import compute_run
from settlement.terms import PartnerTerms

PARTNERS = ("grocer", "fuel", "airline", "bank", "pharmacy")
T0 = 1_800_000_000_000_000
REDEMPTIONS_PER_MEMBER = 10


def generate(redemptions: int) -> list[bytes]:
    """Entries without hashes or links: settlement reads kinds, metadata and lots only."""
    entries: list[bytes] = []
    terms = PartnerTerms(
        Decimal(50), Decimal(95), 150, Decimal("0.5"), "monthly", "multilateral"
    ).to_json()

    def add(kind: str, meta: dict[str, object], postings: list[dict[str, object]]) -> int:
        seq = len(entries)
        entry = {
            "v": 1,
            "seq": seq,
            "prev": "0" * 64,
            "time": format_time_us(T0 + seq),
            "kind": kind,
            "ref": {"scope": "bench", "key": str(seq)},
            "meta": meta,
            "postings": postings,
        }
        entries.append(canonical_bytes(entry))
        return seq

    for partner in PARTNERS:
        add(
            "partner_onboarded",
            {"partner": partner, "legal_name": partner, "settlement_currency": "EUR"},
            [],
        )
        add(
            "partner_terms",
            {"partner": partner, "version": 1, "effective_from": format_time_us(0), "terms": terms},
            [],
        )
    members = redemptions // REDEMPTIONS_PER_MEMBER
    for member in range(members):
        issuer = PARTNERS[member % len(PARTNERS)]
        seq = add(
            "earn",
            {"partner": issuer, "member": f"m{member}", "points": 1000},
            [
                {"account": f"partner:{issuer}:issued", "unit": "PTS", "amount": -1000},
                {
                    "account": f"member:m{member}",
                    "unit": "PTS",
                    "amount": 1000,
                    "lot": {"origin": issuer, "expires": None, "amount": 1000},
                },
            ],
        )
        lot_id = f"{seq}:1"
        for n in range(REDEMPTIONS_PER_MEMBER):
            shop = PARTNERS[(member + n + 1) % len(PARTNERS)]
            add(
                "redeem",
                {"partner": shop, "member": f"m{member}", "points": 37},
                [
                    {
                        "account": f"member:m{member}",
                        "unit": "PTS",
                        "amount": -37,
                        "lots": [{"lot": lot_id, "amount": 37}],
                    },
                    {"account": f"partner:{shop}:redeemed", "unit": "PTS", "amount": 37},
                ],
            )
        if member % 10_000 == 0:
            sys.stderr.write(f"\rgenerating: {member * REDEMPTIONS_PER_MEMBER:,} redemptions")
    sys.stderr.write("\n")
    return entries


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--redemptions", type=int, default=1_000_000)
    args = parser.parse_args()
    entries = generate(args.redemptions)
    started = time.perf_counter()
    run = compute_run(
        iter(entries), run_id="bench", period="bench", start_seq=0, end_seq=len(entries)
    )
    seconds = time.perf_counter() - started
    result = {
        "redemptions": args.redemptions,
        "entries": len(entries),
        "seconds": round(seconds, 2),
        "entries_per_second": round(len(entries) / seconds),
        "lines": len(run.lines),
        "target_seconds": 5,
    }
    print(
        f"| settlement of {args.redemptions:,} redemptions ({len(entries):,} entries) "
        f"| {seconds:.1f} s | {len(entries) / seconds:,.0f} entries/s | target ≤ 5 s |"
    )
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "settlement.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
