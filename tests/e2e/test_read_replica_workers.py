"""Read-your-writes across the worker processes of one ``coalition serve --workers 2``,
against a real primary + hot standby pair whose replay is paused: a till's write lands on
one worker, its reads (no ``Coalition-Read-After`` header) on both, and every read shows
the write — the workers share where each caller last wrote (api.write_positions) — while
a caller that did not write reads the lagging standby on both workers."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from coalition.migrate import upgrade_to_head
from coalition.seed import seed_if_empty
from coalition.settings import DEFAULT_LOG_ORIGIN
from ledger.signing_key import generate_signer_file
from tests._replica_pair import ReplicaPair, start_pair
from tests.e2e._processes import stop
from tests.e2e.test_workers import START_SECONDS_MAX, WORKERS, _coalition, _free_port, _workers_seen

ROOT = Path(__file__).resolve().parents[2]
OPERATIONS = ROOT / "graphql" / "operations"
READS = 40  # on fresh connections, so both workers answer some


@pytest.fixture()
def served(tmp_path: Path) -> Iterator[tuple[ReplicaPair, str, dict[str, str]]]:
    pair = start_pair(tmp_path / "pg")
    process = None
    log = (tmp_path / "serve.log").open("wb")
    try:
        upgrade_to_head(pair.primary_url)
        keys = seed_if_empty(pair.primary_url)
        generate_signer_file(tmp_path / "log.skey", DEFAULT_LOG_ORIGIN)
        port = _free_port()
        env = {
            **os.environ,
            "DATABASE_URL": pair.primary_url,
            "DATABASE_REPLICA_URL": pair.standby_url,
            "COALITION_ENV": "development",
            "COALITION_SIGNING_KEY_FILE": str(tmp_path / "log.skey"),
        }
        env.pop("COALITION_SIGNING_KEY", None)
        process = subprocess.Popen(
            [*_coalition(), "serve", "--workers", str(WORKERS), "--port", str(port), "--no-seed"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        base_url = f"http://127.0.0.1:{port}"
        seen = _workers_seen(base_url, time.monotonic() + START_SECONDS_MAX)
        assert len(seen) == WORKERS, (seen, (tmp_path / "serve.log").read_text()[-3000:])
        pair.wait_replayed()
        yield pair, base_url, keys
    finally:
        if process is not None:
            stop(process)
        log.close()
        pair.stop()


def _post(base_url: str, key: str, operation: str, **variables: object) -> httpx.Response:
    """On a fresh connection each time, so the kernel spreads them over the workers."""
    document = (OPERATIONS / f"{operation}.graphql").read_text()
    answer = httpx.post(
        f"{base_url}/graphql",
        json={"query": document, "variables": variables},
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )
    assert answer.status_code == 200 and "errors" not in answer.json(), answer.text
    return answer


def _balances(base_url: str, key: str) -> dict[str, set[int]]:
    """The member's balance as each worker answered it."""
    by_worker: dict[str, set[int]] = {}
    for _ in range(READS):
        answer = _post(base_url, key, "partner/MemberBalance", memberId="M001")
        points = int(answer.json()["data"]["member"]["balancePoints"])
        by_worker.setdefault(answer.headers["x-worker"], set()).add(points)
    return by_worker


def test_a_write_on_one_worker_is_read_on_every_worker(
    served: tuple[ReplicaPair, str, dict[str, str]],
) -> None:
    pair, base_url, keys = served
    grocer, airline = keys["partner grocer"], keys["partner airline"]
    [before] = {p for seen in _balances(base_url, grocer).values() for p in seen}
    pair.pause_replay()
    try:
        wrote = _post(
            base_url,
            grocer,
            "partner/PostPurchase",
            reference="workers-ryw-1",
            member={"memberId": "M001"},
            purchaseMinor="150000",
            currency="RUB",
        )
        assert "coalition-wal-lsn" in wrote.headers
        after = before + int(wrote.json()["data"]["earn"]["points"])
        assert after > before
        writer_reads = _balances(base_url, grocer)
        other_reads = _balances(base_url, airline)
    finally:
        pair.resume_replay()
    assert len(writer_reads) == WORKERS, writer_reads  # both workers answered the writer
    assert all(seen == {after} for seen in writer_reads.values()), writer_reads
    # The standby really was behind, and the others read it, on each worker.
    assert len(other_reads) == WORKERS, other_reads
    assert all(seen == {before} for seen in other_reads.values()), other_reads
