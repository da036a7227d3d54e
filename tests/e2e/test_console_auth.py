"""The console's sign-in limit and its auditor's record of online verification, over
HTTP against real servers and in a real Chromium.

- failed sign-ins are limited per client address (other loopback addresses stand for
  other clients: 127.0.0.2 is a different address to the server) and overall, in
  PostgreSQL, so the limit holds across ``coalition serve --workers 2``'s processes and
  under a concurrent burst; the 429 page says when to retry; a good key from another
  address signs in meanwhile;
- the auditor's checkpoints page shows the last online verification: never run (with
  what to do), ok, and failed with the reason after the journal is tampered with.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from playwright.sync_api import Browser
from starlette.applications import Starlette

from coalition.api.app import create_app
from coalition.api_keys import create_key
from coalition.cli.main import main
from coalition.jobs import scheduled_jobs
from coalition.scheduler import Scheduler
from coalition.settings import DEFAULT_LOG_ORIGIN, Settings
from ledger import checkpoint_log, compact_range, reads
from ledger.signed_note import Signer
from ledger.signing_key import generate_signer_file
from ledger.timefmt import now_us
from tests.e2e._browser import Visit, browser  # noqa: F401  (the fixture)
from tests.e2e._processes import stop
from tests.e2e.conftest import Seeded

pytestmark = pytest.mark.postgres

ROOT = Path(__file__).resolve().parents[2]
WRONG_KEY = "ck_000000000000_" + "x" * 43
START_SECONDS_MAX = 60.0


class Client:
    """A browser-less sign-in from one loopback address: the form's CSRF token and
    pre-session cookie first, as a browser would, then the POST."""

    def __init__(self, base_url: str, address: str = "127.0.0.1") -> None:
        self.http = httpx.Client(
            base_url=base_url,
            transport=httpx.HTTPTransport(local_address=address),
            follow_redirects=False,
            timeout=30,
        )

    def sign_in(self, key: str) -> httpx.Response:
        form = self.http.get("/console/signin")
        csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', form.text)
        assert form.status_code == 200 and csrf is not None, form.text
        return self.http.post("/console/signin", data={"csrf": csrf[1], "api_key": key})

    def close(self) -> None:
        self.http.close()


def _sign_in_once(base_url: str, address: str, key: str) -> httpx.Response:
    """On a connection of its own (so a multi-process server may hand it to any worker)."""
    client = Client(base_url, address)
    try:
        return client.sign_in(key)
    finally:
        client.close()


@pytest.fixture()
def limited_app(
    seeded: Seeded,
    settings: Settings,
    serve: Callable[[Starlette], str],
    monkeypatch: pytest.MonkeyPatch,
) -> str:
    monkeypatch.setenv("COALITION_SIGNIN_FAILURES_PER_ADDRESS", "3")
    monkeypatch.setenv("COALITION_SIGNIN_FAILURES_TOTAL", "5")
    monkeypatch.setenv("COALITION_SIGNIN_WINDOW_SECONDS", "600")
    return serve(create_app(settings, seeded.db_url))


def test_failed_sign_ins_are_limited_per_address_and_say_when_to_retry(
    limited_app: str, seeded: Seeded
) -> None:
    """Three wrong keys from 127.0.0.2 are answered 401; the fourth attempt is 429 with a
    Retry-After within the window and a page naming the wait — even with a good key, so
    the limit is not an oracle. Meanwhile the same good key from 127.0.0.3 signs in, and
    good sign-ins leave no failure behind (127.0.0.3 signs in five times)."""
    guesser, person = Client(limited_app, "127.0.0.2"), Client(limited_app, "127.0.0.3")
    try:
        assert [guesser.sign_in(WRONG_KEY).status_code for _ in range(3)] == [401] * 3
        refused = guesser.sign_in(WRONG_KEY)
        assert refused.status_code == 429
        assert 1 <= int(refused.headers["retry-after"]) <= 600
        assert "Too many failed sign-ins from your address" in refused.text
        assert re.search(r"Try again in (\d+ seconds|\d+ minutes)", refused.text)
        assert "You may sign in again from" in refused.text
        assert guesser.sign_in(seeded.keys["auditor"]).status_code == 429
        for _ in range(5):
            answer = person.sign_in(seeded.keys["auditor"])
            assert answer.status_code == 303, answer.text
            assert answer.headers["location"] == "/console/checkpoints"
    finally:
        guesser.close()
        person.close()
    with psycopg.connect(seeded.db_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT client, count(*) FROM coalition_signin_attempt GROUP BY client"
        ).fetchall()
    assert rows == [("127.0.0.2", 3)]


def test_failures_from_many_addresses_close_the_overall_breaker(
    limited_app: str, seeded: Seeded
) -> None:
    """Two wrong keys each from 127.0.0.4, .5 and .6 — under the per-address limit (3) —
    pass the overall limit (5) at the sixth: from then on every address, a new one too,
    is told to wait, and the page says the failures are everyone's."""
    codes = [
        _sign_in_once(limited_app, f"127.0.0.{n}", WRONG_KEY).status_code
        for n in (4, 5, 6)
        for _ in range(2)
    ]
    assert codes == [401] * 5 + [429]
    fresh = _sign_in_once(limited_app, "127.0.0.7", seeded.keys["auditor"])
    assert fresh.status_code == 429 and "from everyone" in fresh.text


def test_a_concurrent_burst_is_counted_in_full(limited_app: str) -> None:
    """Twelve wrong keys at once from one address, each on its own connection: exactly
    three are checked (401), nine are refused (429) — the count and the write are one
    step under the address's lock, so no guess slips through between them."""
    answers: list[int] = []
    lock = threading.Lock()

    def attempt() -> None:
        code = _sign_in_once(limited_app, "127.0.0.8", WRONG_KEY).status_code
        with lock:
            answers.append(code)

    threads = [threading.Thread(target=attempt) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert Counter(answers) == {401: 3, 429: 9}


def test_an_expired_key_or_a_metrics_key_is_told_what_is_wrong(
    limited_app: str, seeded: Seeded
) -> None:
    """The right secret of an expired key is answered "expired", of a metrics key (a role
    with no pages) 403 — neither a server error nor a counted failure: four such
    sign-ins from one address (past its limit of three) are all answered."""
    with psycopg.connect(seeded.db_url, autocommit=True) as conn:
        expired, _ = create_key(
            conn, "auditor", None, "expired", now_us() - 10_000_000, now_us() - 5_000_000
        )
    client = Client(limited_app, "127.0.0.11")
    try:
        for _ in range(2):
            answer = client.sign_in(expired)
            assert answer.status_code == 401 and "expired at" in answer.text
            answer = client.sign_in(seeded.keys["metrics"])
            assert answer.status_code == 403 and "role metrics has no pages" in answer.text
    finally:
        client.close()


# -- across the worker processes of `coalition serve` -----------------------------------------


def _coalition() -> list[str]:
    script = Path(sys.executable).with_name("coalition")
    return [str(script)] if script.exists() else [sys.executable, "-m", "coalition.cli"]


@pytest.fixture()
def two_workers(seeded: Seeded, tmp_path: Path) -> Iterator[str]:
    import socket

    generate_signer_file(tmp_path / "log.skey", DEFAULT_LOG_ORIGIN)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {
        **os.environ,
        "DATABASE_URL": seeded.db_url,
        "COALITION_ENV": "development",
        "COALITION_SIGNING_KEY_FILE": str(tmp_path / "log.skey"),
        "COALITION_SIGNIN_FAILURES_PER_ADDRESS": "4",
        "COALITION_SCHEDULER": "off",
    }
    env.pop("COALITION_SIGNING_KEY", None)
    log = (tmp_path / "serve.log").open("wb")
    process = subprocess.Popen(
        [*_coalition(), "serve", "--workers", "2", "--port", str(port), "--no-seed"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_SECONDS_MAX
        while time.monotonic() < deadline:
            try:
                if httpx.get(base_url + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            pytest.fail((tmp_path / "serve.log").read_text()[-3000:])
        yield base_url
    finally:
        stop(process)
        log.close()


def test_the_limit_holds_across_the_worker_processes(two_workers: str, seeded: Seeded) -> None:
    """`coalition serve --workers 2`, four failures allowed per address: wrong keys from
    127.0.0.9 on fresh connections until both workers have refused one with 429. Exactly
    four were ever checked (401), whichever worker took them — a limit kept in each
    process would have let each worker check four. A good key from 127.0.0.10 still
    signs in."""
    codes: Counter[int] = Counter()
    refused_by: set[str] = set()
    answered_by: set[str] = set()
    for _ in range(60):
        answer = _sign_in_once(two_workers, "127.0.0.9", WRONG_KEY)
        codes[answer.status_code] += 1
        answered_by.add(answer.headers["x-worker"])
        if answer.status_code == 429:
            refused_by.add(answer.headers["x-worker"])
        if len(refused_by) == 2:
            break
    assert len(refused_by) == 2, (codes, answered_by)
    assert codes[401] == 4, codes
    assert set(codes) == {401, 429}
    good = _sign_in_once(two_workers, "127.0.0.10", seeded.keys["operator"])
    assert good.status_code == 303 and good.headers["location"] == "/console/keys"


def test_the_retry_page_in_the_browser(
    browser: Browser,  # noqa: F811
    limited_app: str,
) -> None:
    """What a person sees after too many failures: the sign-in form, and above it when
    they may try again (a time in the coalition's zone)."""
    v = Visit(browser, limited_app)
    try:
        for _ in range(4):
            v.page.goto("/console/signin")
            v.page.fill("input[name=api_key]", WRONG_KEY)
            v.page.click("button[type=submit]")
        message = v.page.locator("p.error").inner_text()
        assert "Too many failed sign-ins" in message and "You may sign in again from" in message
        assert v.page.locator("p.error time").get_attribute("datetime")
        v.shot("signin-rate-limited")
        assert v.outside() == []
    finally:
        v.close()


# -- the auditor's record of online verification ----------------------------------------------


@pytest.fixture()
def app_url(seeded: Seeded, settings: Settings, serve: Callable[[Starlette], str]) -> str:
    return serve(create_app(settings, seeded.db_url))


def test_the_checkpoints_page_shows_the_last_online_verification(
    browser: Browser,  # noqa: F811
    app_url: str,
    seeded: Seeded,
    settings: Settings,
    signer: Signer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Never run (and what to do); after the scheduler's verify job, ok with the journal's
    size and root, the root of the checkpoint signed at that size; after a superuser
    rewrites an entry's kind and `coalition verify` runs, failed with the reason (the
    entry and the check) and what to do."""
    v = Visit(browser, app_url)
    try:
        page = v.sign_in(seeded.keys["auditor"])
        assert page.url.endswith("/console/checkpoints")
        never = page.locator("[data-verification]")
        assert never.get_attribute("data-verification") == "never"
        assert "coalition verify" in never.inner_text()
        v.shot("checkpoints-verification-never")

        with psycopg.connect(seeded.db_url, autocommit=True) as conn:
            checkpoint_log.sign_now(conn, signer, now_us())
        [job] = [
            j for j in scheduled_jobs(seeded.db_url, settings, signer, env={}) if j.name == "verify"
        ]
        assert Scheduler(seeded.db_url, [job]).attempt(job) == "ok"
        with psycopg.connect(seeded.db_url, autocommit=True) as conn:
            head = reads.head(conn)
            root = compact_range.root_hash(head.frontier_hashes, head.tree_size)
        page.reload()
        ok = page.locator("[data-verification]")
        assert ok.get_attribute("data-verification") == "ok"
        text = ok.inner_text()
        assert f"full verification of {head.tree_size:,} entries" in text
        assert root.hex() in text and "by scheduler" in text
        assert "the root signed in checkpoint #1" in text
        v.shot("checkpoints-verification-ok")

        with psycopg.connect(seeded.db_url, autocommit=True) as conn:
            conn.execute("SET session_replication_role = replica")
            conn.execute("UPDATE ledger_entry SET kind = 'forged' WHERE seq = 2")
        monkeypatch.setenv("DATABASE_URL", seeded.db_url)
        assert main(["verify"]) == 1
        page.reload()
        failed = page.locator("[data-verification]")
        assert failed.get_attribute("data-verification") == "failed"
        reason = page.locator("#verification .failure").inner_text()
        assert reason.startswith("seq 2: entry_columns failed"), reason
        assert "by cli" in failed.inner_text()
        assert "What to do" in page.locator("#verification").inner_text()
        v.shot("checkpoints-verification-failed")
        assert v.outside() == []
    finally:
        v.close()


def test_operator_pages_read_as_a_person_reads_them(
    browser: Browser,  # noqa: F811
    app_url: str,
    seeded: Seeded,
) -> None:
    """What the screenshots showed wrong, fixed: the keys page marks the operator's own
    key (revoking it ends the session) and says when a revoked key was revoked; the
    partners page's tab title is its name (it held the terms table's markup), terms read
    as names and values, and terms in force from the start say so (not 1970)."""
    with psycopg.connect(seeded.db_url, autocommit=True) as conn:
        _, gone = create_key(conn, "auditor", None, "gone", now_us())
        conn.execute(
            "UPDATE coalition_api_key SET revoked_at_us = %s WHERE key_id = %s",
            (now_us(), gone.key_id),
        )
    v = Visit(browser, app_url)
    try:
        page = v.sign_in(seeded.keys["operator"])
        own = seeded.keys["operator"].split("_")[1]
        mine = page.locator("#keys tr", has_text=own)
        assert "(yours)" in mine.inner_text() and "ends this session" in mine.inner_text()
        revoked = page.locator("#keys tr", has_text=gone.key_id)
        assert "revoked 20" in revoked.inner_text() and revoked.locator("button").count() == 0
        assert page.locator("#keys tr.key-active").count() >= 7
        page.goto("/console/partners")
        assert page.title() == "Partners — coalition ledger"
        terms = page.locator("#terms").inner_text()
        assert "operator fee bps" in terms and '"mode"' not in terms
        assert "1970" not in terms and "always (before any entry)" in terms
        assert v.outside() == []
    finally:
        v.close()
