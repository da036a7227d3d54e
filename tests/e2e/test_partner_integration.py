"""Partner integration over HTTP with the published documents: a batch file imported with
its result file and re-submitted without a write, a batch whose totals are wrong refused
whole, a quote equal to the redemption that follows, and a balance as of a seq whose
proof verifies against a signed checkpoint (opened with the server's key)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import psycopg

from coalition.batch_format import format_batch
from ledger import checkpoint_log, reads
from ledger.checkpoint import open_checkpoint
from ledger.merkle_verify import verify_consistency
from ledger.signed_note import Signer, Verifier
from ledger.timefmt import now_us

if TYPE_CHECKING:
    from tests.e2e.conftest import Seeded

OPERATIONS = Path(__file__).resolve().parents[2] / "graphql" / "operations" / "partner"


def ask(api: str, key: str, operation: str, **variables: Any) -> dict[str, Any]:
    response = httpx.post(
        f"{api}/graphql",
        json={"query": (OPERATIONS / f"{operation}.graphql").read_text(), "variables": variables},
        headers={"Authorization": f"Bearer {key}"},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert "errors" not in body, body
    data: dict[str, Any] = body["data"]
    return data


def tree_size(db_url: str) -> int:
    with psycopg.connect(db_url, autocommit=True) as conn:
        return reads.head(conn).tree_size


def test_a_batch_by_graphql_answers_per_line_and_replays(api: str, seeded: Seeded) -> None:
    key = seeded.keys["grocer"]
    rows: list[dict[str, Any]] = [
        {
            "type": "earn",
            "ref": f"b-{i}",
            "card": f"GROCER-000{i}",
            "amount": 100_000,
            "currency": "RUB",
        }
        for i in range(1, 4)
    ]
    rows.append(
        {"type": "earn", "ref": "b-4", "card": "NO-SUCH-CARD", "amount": 1, "currency": "RUB"}
    )
    rows.append({"type": "redeem", "ref": "b-5", "card": "GROCER-0001", "amount": 5})
    text = format_batch("jsonl", "EOD-1", "grocer", rows)
    size = tree_size(seeded.db_url)
    first = ask(api, key, "ImportBatch", batch=text, format="jsonl")["importBatch"]
    assert first["__typename"] == "BatchImported", first
    assert (first["lines"], first["accepted"], first["replayed"], first["refused"]) == (5, 4, 0, 1)
    results = [json.loads(line) for line in first["resultFile"].splitlines()]
    assert [r.get("code") for r in results[:-1]] == [None, None, None, "unknown_member", None]
    assert tree_size(seeded.db_url) == size + 4
    again = ask(api, key, "ImportBatch", batch=text, format="jsonl")["importBatch"]
    assert (again["accepted"], again["replayed"], again["refused"]) == (4, 4, 1)
    assert tree_size(seeded.db_url) == size + 4
    wrong = text.replace('"purchase_minor": 300001', '"purchase_minor": 300002')
    assert wrong != text
    refused = ask(api, key, "ImportBatch", batch=wrong, format="jsonl")["importBatch"]
    assert refused["__typename"] == "ControlTotalsMismatch", refused
    assert tree_size(seeded.db_url) == size + 4


def test_a_quote_is_what_the_redemption_then_does(api: str, seeded: Seeded) -> None:
    key = seeded.keys["airline"]  # M001's points are grocer's: the issuer is told
    member = {"memberId": "M001"}
    size = tree_size(seeded.db_url)
    quote = ask(api, key, "RedeemQuote", member=member, points="7")["redeemQuote"]
    assert quote["__typename"] == "RedemptionQuote", quote
    assert tree_size(seeded.db_url) == size
    assert [lot["lotId"] for lot in quote["lots"]] == [None]  # grocer's lot, not airline's
    done = ask(api, key, "RedeemAtTill", reference="q-1", member=member, points="7")["redeem"]
    assert done["__typename"] == "Redeemed", done
    assert done["byIssuer"] == quote["byIssuer"] == [{"issuer": "grocer", "points": "7"}]
    assert done["seq"] == quote["treeSize"]
    short = ask(api, key, "RedeemQuote", member=member, points="100000000")["redeemQuote"]
    assert short["__typename"] == "InsufficientPoints", short


def test_a_balance_as_of_proves_against_a_signed_checkpoint(
    api: str, seeded: Seeded, signer: Signer, verifier: Verifier
) -> None:
    key = seeded.keys["grocer"]
    size = tree_size(seeded.db_url)
    with psycopg.connect(seeded.db_url, autocommit=True) as conn:
        checkpoint_log.sign_now(conn, signer, now_us())
    seq = size // 2
    answer = ask(api, key, "MemberBalanceAsOf", memberId="M002", atSeq=str(seq))["memberAsOf"]
    proof = answer["proof"]
    assert int(proof["treeSize"]) == seq + 1
    signed = open_checkpoint(proof["checkpoint"]["signedNote"].encode(), verifier)
    verify_consistency(
        seq + 1,
        signed.tree_size,
        [base64.b64decode(h) for h in proof["consistencyPathBase64"]],
        bytes.fromhex(proof["rootHashHex"]),
        signed.root_hash,
    )
    assert {lot["origin"] for lot in answer["account"]["lots"]} <= {"grocer"}
    mine = ask(api, key, "MyPositionAsOf", partnerId="grocer", atSeq=str(seq))["partnerAsOf"]
    assert mine["proof"]["rootHashHex"] == proof["rootHashHex"]
    assert ask(api, key, "MyPositionAsOf", partnerId="airline", atSeq=str(seq)) == {
        "partnerAsOf": None
    }
