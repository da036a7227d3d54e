"""`coalition serve --workers 2` as deployed: a real server of two worker processes (each
with its own pool, group committer and cache of key checks) on the seeded database.

- tills earning and refunding at once, their requests spread over both workers: the
  chain head's row lock orders the two committers, so the journal verifies, a purchase
  is never refunded beyond its amount, a reference is written once, no balance goes below
  zero;
- a key revoked (over the API, or with the CLI) is refused by every worker within a
  second of the revocation, though each worker had it cached; the worker that revoked it
  over the API refuses it from its next request;
- SIGTERM stops the parent and every worker, and leaves no connection behind.

In development every answer carries ``X-Worker`` (the answering process), which is how
these tests know that both workers took part.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from coalition.settings import DEFAULT_LOG_ORIGIN
from ledger.signing_key import generate_signer_file
from tests.e2e._processes import stop
from tests.e2e._races import (
    STEP_MINOR,
    Answer,
    Tills,
    answer_of,
    lowest_balance,
    run,
    tag,
    tally,
    verify,
)
from tests.e2e.conftest import Seeded

WORKERS = 2
START_SECONDS_MAX = 120.0  # a deadline for the workers to boot (slow on a loaded machine)
REVOKED_WITHIN_SECONDS = 1.0
ROUNDS = 3
REFUNDS = 20  # of 10 % each: 200 % of the purchase
EARNS = 30
SAME_REFERENCE = 10

ROOT = Path(__file__).resolve().parents[2]


def _coalition() -> list[str]:
    script = Path(sys.executable).with_name("coalition")
    return [str(script)] if script.exists() else [sys.executable, "-m", "coalition.cli"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Served:
    def __init__(self, process: subprocess.Popen[bytes], base_url: str, env: dict[str, str]):
        self.process = process
        self.base_url = base_url
        self.env = env


def _workers_seen(base_url: str, deadline: float) -> set[str]:
    """Ask /healthz on fresh connections until every worker has answered."""
    seen: set[str] = set()
    while len(seen) < WORKERS and time.monotonic() < deadline:
        try:
            answer = httpx.get(f"{base_url}/healthz", timeout=2)
        except httpx.TransportError:
            time.sleep(0.1)
            continue
        if answer.status_code == 200 and "x-worker" in answer.headers:
            seen.add(answer.headers["x-worker"])
    return seen


@pytest.fixture()
def served(seeded: Seeded, tmp_path: Path) -> Iterator[Served]:
    generate_signer_file(tmp_path / "log.skey", DEFAULT_LOG_ORIGIN)
    port = _free_port()
    base_url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "DATABASE_URL": seeded.db_url,
        "COALITION_ENV": "development",
        "COALITION_SIGNING_KEY_FILE": str(tmp_path / "log.skey"),
    }
    env.pop("COALITION_SIGNING_KEY", None)
    log = (tmp_path / "serve.log").open("wb")
    process = subprocess.Popen(
        [*_coalition(), "serve", "--workers", str(WORKERS), "--port", str(port), "--no-seed"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        seen = _workers_seen(base_url, time.monotonic() + START_SECONDS_MAX)
        assert len(seen) == WORKERS, (seen, (tmp_path / "serve.log").read_text()[-3000:])
        yield Served(process, base_url, env)
    finally:
        stop(process)
        log.close()


def _written(db_url: str, reference: str) -> int:
    with psycopg.connect(db_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM ledger_entry WHERE ref_key = %s", (reference,)
        ).fetchone()
    assert row is not None
    return int(row[0])


def _connections(db_url: str) -> int:
    with psycopg.connect(db_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND pid <> pg_backend_pid()"
        ).fetchone()
    assert row is not None
    return int(row[0])


# -- writes from both workers at once ---------------------------------------------------------


def test_tills_on_two_workers_keep_the_money_rules_and_the_chain(
    served: Served, seeded: Seeded
) -> None:
    """Per round, at once: 20 refunds of 10 % of one purchase, 30 earns for another
    member and the same earn sent 10 times. Exactly 10 refunds pass and together claw
    back what the purchase earned; the repeated earn is written once; the journal
    verifies; both workers answered."""
    earned_points = 100
    workers: Counter[str] = Counter()

    async def send(tills: Tills, operation: str, field: str, **variables: Any) -> Answer:
        for attempt in range(20):
            response = await tills.send("grocer", operation, **variables)
            workers[response.headers.get("x-worker", "?")] += 1
            answer = answer_of(response, field)
            if answer.get("code") != "BUSY":
                return answer
            await asyncio.sleep(0.01 * (attempt + 1))
        return {"__typename": "ERROR", "detail": "still BUSY"}

    async def scenario(tills: Tills) -> list[tuple[str, str, str]]:
        rounds = []
        for n in range(ROUNDS):
            t = tag()
            refunded, earner = f"wr-{t}", f"we-{t}"
            await tills.enroll(refunded)
            await tills.enroll(earner)
            await tills.earn(refunded, earned_points, f"wr-earn-{t}")
            purchase = {"purchaseMinor": 7 * STEP_MINOR, "currency": "RUB"}
            answers = await asyncio.gather(
                *(
                    send(
                        tills,
                        "RefundPurchase",
                        "refundPurchase",
                        reference=f"wr-refund-{t}-{i}",
                        earnReference=f"wr-earn-{t}",
                        refundMinor=earned_points * STEP_MINOR // 10,
                    )
                    for i in range(REFUNDS)
                ),
                *(
                    send(
                        tills,
                        "PostPurchase",
                        "earn",
                        reference=f"we-{t}-{i}",
                        member={"memberId": earner},
                        **purchase,
                    )
                    for i in range(EARNS)
                ),
                *(
                    send(
                        tills,
                        "PostPurchase",
                        "earn",
                        reference=f"we-{t}-same",
                        member={"memberId": earner},
                        **purchase,
                    )
                    for _ in range(SAME_REFERENCE)
                ),
            )
            refunds = answers[:REFUNDS]
            earns = answers[REFUNDS:]
            same_seqs = {a.get("seq") for a in earns[EARNS:]}
            earned_points_each = {a.get("seq"): int(a.get("points", 0)) for a in earns}
            balance = await tills.balance(refunded)
            got = {
                "round": n,
                "refunds": tally(refunds),
                "clawed back": sum(int(a["points"]) for a in refunds if "points" in a),
                "refunded member's balance": balance["balancePoints"],
                "earns": tally(earns),
                "one entry for the repeated reference": len(same_seqs),
                "earner's balance": (await tills.balance(earner))["balancePoints"],
            }
            assert got == {
                "round": n,
                "refunds": {"Refunded": REFUNDS // 2, "RefundExceedsOriginal": REFUNDS // 2},
                "clawed back": earned_points,
                "refunded member's balance": 0,
                "earns": {"Earned": EARNS + SAME_REFERENCE},
                "one entry for the repeated reference": 1,
                "earner's balance": sum(earned_points_each.values()),
            }, answers
            rounds.append((refunded, earner, t))
        return rounds

    rounds = run(served.base_url, seeded.keys, scenario)
    assert len(workers) == WORKERS and "?" not in workers, workers
    for refunded, earner, t in rounds:
        assert _written(seeded.db_url, f"we-{t}-same") == 1
        assert lowest_balance(seeded.db_url, refunded) >= 0
        assert lowest_balance(seeded.db_url, earner) >= 0
    verify(seeded.db_url)


# -- revocation reaches every worker ----------------------------------------------------------


async def _who(base_url: str, key: str) -> tuple[float, str, bool]:
    """(when answered, which worker, whether the key was taken), on a fresh connection so
    that the kernel may hand it to either worker."""
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
        response = await client.post(
            "/graphql",
            json={"query": "{ me { keyId } }"},
            headers={"Authorization": f"Bearer {key}", "Connection": "close"},
        )
    body = response.json() if response.status_code in (200, 429) else {}
    me = (body.get("data") or {}).get("me") if isinstance(body, dict) else None
    accepted = response.status_code == 200 and isinstance(me, dict) and not body.get("errors")
    return time.monotonic(), response.headers.get("x-worker", "?"), accepted


async def _until_every_worker(base_url: str, key: str, accepted: bool) -> set[str]:
    """Ask until every worker has answered with ``accepted`` (a bounded number of times)."""
    seen: set[str] = set()
    for _ in range(400):
        _, worker, taken = await _who(base_url, key)
        if taken == accepted:
            seen.add(worker)
        if len(seen) == WORKERS:
            return seen
    return seen


@pytest.mark.parametrize("by", ["api", "cli"])
def test_a_revoked_key_is_refused_by_every_worker_within_a_second(
    served: Served, seeded: Seeded, by: str
) -> None:
    """Every worker has taken the key (and so cached its check); the key is revoked;
    from one second after the revocation every answer, from either worker, refuses it —
    and a worker that refused it once never takes it again. Revoked over the API, the
    worker that answered the revocation refuses the key from its very next request."""

    async def scenario(tills: Tills) -> None:
        key_id = await tills.create_key("doomed", "PARTNER", f"doomed {tag()}", "fuel")
        key = tills.keys["doomed"]
        taken_by = await _until_every_worker(served.base_url, key, accepted=True)
        assert len(taken_by) == WORKERS, taken_by
        revoker = None
        if by == "api":
            response = await tills.send("operator", "RevokeApiKey", keyId=key_id)
            assert response.json() == {"data": {"revokeApiKey": True}}, response.text
            revoker = response.headers.get("x-worker")
        else:
            done = await asyncio.to_thread(
                subprocess.run,
                [*_coalition(), "apikey", "revoke", key_id],
                cwd=ROOT,
                env=served.env,
                capture_output=True,
                text=True,
            )
            assert done.returncode == 0, done.stderr
        revoked_at = time.monotonic()
        answers: list[tuple[float, str, bool]] = []
        while time.monotonic() < revoked_at + 2 * REVOKED_WITHIN_SECONDS:
            answers += await asyncio.gather(*(_who(served.base_url, key) for _ in range(4)))
            await asyncio.sleep(0.02)
        # The kernel spreads connections but promises no balance: on a busy machine one
        # worker may take every connection for a while, so ask on (bounded) until every
        # worker has answered late.
        for _ in range(400):
            late_by = {w for at, w, _ in answers if at > revoked_at + REVOKED_WITHIN_SECONDS}
            if late_by >= taken_by:
                break
            answers.append(await _who(served.base_url, key))
        late = [(w, taken) for at, w, taken in answers if at > revoked_at + REVOKED_WITHIN_SECONDS]
        assert {w for w, _ in late} == set(taken_by), late  # both workers asked, late on
        assert not [a for a in late if a[1]], late  # … and neither took the key
        for worker in taken_by:  # once refused, never taken again
            mine = [taken for _, w, taken in answers if w == worker]
            first_refusal = mine.index(False) if False in mine else len(mine)
            assert not any(mine[first_refusal:]), (worker, mine)
        if revoker is not None:
            assert not [a for a in answers if a[1] == revoker and a[2]], answers

    run(served.base_url, seeded.keys, scenario)


def test_sigterm_stops_every_worker_and_leaves_no_connection(
    served: Served, seeded: Seeded
) -> None:
    assert _connections(seeded.db_url) > 0  # the workers' listeners, at least
    served.process.send_signal(signal.SIGTERM)
    assert served.process.wait(timeout=30) == 0
    deadline = time.monotonic() + 10
    while _connections(seeded.db_url) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _connections(seeded.db_url) == 0
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{served.base_url}/healthz", timeout=2)
