"""Over HTTP against the real app: ``/metrics`` only for a metrics or operator key (an
anonymous request is refused), the scheduler's jobs in it as the database records them,
and keys that expire — refused with ``API_KEY_EXPIRED`` from the moment they expire,
though the process had the key cached and no notification was sent."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import httpx
import psycopg
from starlette.applications import Starlette

from coalition.api.app import create_app
from coalition.api_keys import create_key
from coalition.job_record import record_run
from coalition.settings import Settings
from ledger.timefmt import format_time_us, now_us, parse_time_us
from tests.e2e.test_api_errors_and_limits import ME, bearer, data, error_codes, post

if TYPE_CHECKING:
    from tests.e2e.conftest import Seeded

TIMEOUT_SECONDS = 30
EXPIRES_IN_SECONDS = 4.0
USED_UNTIL_SECONDS_BEFORE = 1.5  # a request on a loaded machine may take most of that


def _metrics(api: str, key: str | None) -> httpx.Response:
    return httpx.get(f"{api}/metrics", headers=bearer(key) if key else {}, timeout=TIMEOUT_SECONDS)


def test_metrics_need_a_metrics_or_operator_key(
    seeded: Seeded, settings: Settings, serve: Callable[[Starlette], str]
) -> None:
    api = serve(create_app(settings, seeded.db_url))
    with psycopg.connect(seeded.db_url, autocommit=True) as conn:
        record_run(
            conn, "expiry", started_us=now_us(), duration_us=1_250_000, outcome="ok", detail=""
        )
        record_run(
            conn, "settle", started_us=now_us(), duration_us=0, outcome="refused", detail="rate"
        )
    anonymous = _metrics(api, None)
    assert anonymous.status_code == 401
    assert anonymous.headers["WWW-Authenticate"] == "Bearer"
    assert error_codes(anonymous) == ["UNAUTHENTICATED"]
    assert "journal_entries" not in anonymous.text
    assert error_codes(_metrics(api, "ck_000000000000_" + "A" * 43)) == ["UNAUTHENTICATED"]
    for role in ("auditor", "finance", "grocer"):
        refused = _metrics(api, seeded.keys[role])
        assert (refused.status_code, error_codes(refused)) == (403, ["FORBIDDEN"]), role
    for role in ("metrics", "operator"):
        assert _metrics(api, seeded.keys[role]).status_code == 200, role
    text = _metrics(api, seeded.keys["metrics"]).text
    assert re.search(r'^coalition_job_last_duration_seconds\{job="expiry"\} 1\.25$', text, re.M)
    assert re.search(
        r'^coalition_job_runs_total\{job="settle",outcome="refused"\} 1\.0$', text, re.M
    )
    assert re.search(
        r'^coalition_job_last_outcome\{job="settle",outcome="refused"\} 1\.0$', text, re.M
    )
    assert re.search(r'^coalition_job_last_outcome\{job="settle",outcome="ok"\} 0\.0$', text, re.M)
    # The metrics key reads the metrics and nothing else.
    runs = post(api, "{ settlementRuns { runId } }", key=seeded.keys["metrics"])
    assert error_codes(runs) == ["FORBIDDEN"], runs.text
    assert data(post(api, ME, key=seeded.keys["metrics"]))["me"]["role"] == "METRICS"


def test_an_expired_key_is_refused_though_cached(
    seeded: Seeded, settings: Settings, serve: Callable[[Starlette], str]
) -> None:
    api = serve(create_app(settings, seeded.db_url))
    expires_at = format_time_us(now_us() + int(EXPIRES_IN_SECONDS * 1e6))
    created = data(
        post(
            api,
            'mutation ($at: String) { createApiKey(role: AUDITOR, label: "brief",'
            " expiresAt: $at) { key info { keyId expiresAt revoked } } }",
            {"at": expires_at},
            key=seeded.keys["operator"],
        )
    )["createApiKey"]
    assert created["info"]["expiresAt"] == expires_at and not created["info"]["revoked"]
    key = created["key"]
    metrics_key = _metrics_key(seeded.db_url, expires_at)
    # Used, and so cached, until shortly before it expires (each request well inside).
    while time.time() < _seconds(expires_at) - USED_UNTIL_SECONDS_BEFORE:
        assert data(post(api, ME, key=key))["me"]["role"] == "AUDITOR"
        assert _metrics(api, metrics_key).status_code == 200
        time.sleep(0.05)
    while time.time() < _seconds(expires_at) + 0.05:
        time.sleep(0.05)
    refused = post(api, ME, key=key)
    assert refused.status_code == 401
    assert error_codes(refused) == ["API_KEY_EXPIRED"]
    assert expires_at in refused.json()["errors"][0]["message"]
    assert "data" not in refused.json()
    assert error_codes(_metrics(api, metrics_key)) == ["API_KEY_EXPIRED"]
    # A wrong secret for the same key id is not told the key expired.
    key_id = key.split("_")[1]
    wrong = post(api, ME, key=f"ck_{key_id}_" + "B" * 43)
    assert wrong.status_code == 200 and error_codes(wrong) == ["UNAUTHENTICATED"]


def test_a_key_cannot_be_made_already_expired(
    seeded: Seeded, settings: Settings, serve: Callable[[Starlette], str]
) -> None:
    api = serve(create_app(settings, seeded.db_url))
    with psycopg.connect(seeded.db_url, autocommit=True) as conn:
        (before,) = conn.execute("SELECT count(*) FROM coalition_api_key").fetchone() or (0,)
    for at in ("2020-01-01T00:00:00Z", "not a time"):
        answer = post(
            api,
            'mutation ($at: String) { createApiKey(role: AUDITOR, label: "old", expiresAt: $at)'
            " { key } }",
            {"at": at},
            key=seeded.keys["operator"],
        )
        assert error_codes(answer) == ["BAD_USER_INPUT"], answer.text
    with psycopg.connect(seeded.db_url, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM coalition_api_key").fetchone() == (before,)


def _metrics_key(db_url: str, expires_at: str) -> str:
    with psycopg.connect(db_url, autocommit=True) as conn:
        key, _ = create_key(conn, "metrics", None, "scraper", now_us(), parse_time_us(expires_at))
    return key


def _seconds(rfc3339: str) -> float:
    return parse_time_us(rfc3339) / 1e6
