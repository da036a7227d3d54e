"""``coalition serve`` killed with ``-9`` in the middle of a webhook delivery (its
delivery worker runs inside it), then started again: every event reaches its
subscriber exactly once after de-duplication by id, in seq order — the one in flight
at the kill twice, nothing lost, nothing after it sent early.

The server is the real command, as a subprocess against the test's database (no
embedded PostgreSQL, no scheduler), the partner calls go over HTTP to it, and the
receiver is a real HTTP server on a loopback port that holds the seventh delivery
unanswered while the server is killed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from tests.e2e._receiver import Received, Receiver
from tests.e2e.test_payable import Api
from tests.e2e.test_start_stop import START_SECONDS_MAX, STOP_SECONDS_MAX, _coalition, _free_port
from tests.e2e.test_webhooks import (
    WAIT_SECONDS_MAX,
    WEBHOOK_KEY,
    earn,
    first_seen,
    outbox_ids,
    subscribe,
    wait_for,
)

if TYPE_CHECKING:
    from tests.e2e.conftest import Seeded

ROOT = Path(__file__).resolve().parents[2]
TYPES = ["earn.recorded"]


def _serve(db_url: str, var: Path) -> tuple[subprocess.Popen[bytes], str]:
    """``coalition serve`` in a session of its own (so nothing it started can outlive
    the test), ready to answer."""
    port = _free_port()
    env = os.environ | {
        "DATABASE_URL": db_url,
        "COALITION_WEBHOOK_KEY": WEBHOOK_KEY,
        "COALITION_VAR_DIR": str(var),
        "COALITION_SCHEDULER": "off",
    }
    process = subprocess.Popen(
        [*_coalition(), "serve", "--port", str(port), "--workers", "1", "--no-seed"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_SECONDS_MAX
    while True:
        assert process.poll() is None, f"serve exited with {process.returncode}"
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return process, base
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "serve did not become ready"
        time.sleep(0.2)


def _end(process: subprocess.Popen[bytes]) -> None:
    """Whatever of a server's session is left, gone (after a kill -9 of its parent)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(10)


def test_serve_killed_mid_delivery_and_restarted_delivers_the_rest_once(
    seeded: Seeded, tmp_path: Path
) -> None:
    hook = Receiver()
    held, release = threading.Event(), threading.Event()

    def hold_the_seventh(r: Received) -> int:
        if r.event["data"]["ref"] == "crash-earn-6" and not held.is_set():
            held.set()  # serve's worker posted it; no answer before serve is killed
            release.wait(WAIT_SECONDS_MAX)
        return 200

    hook.answer = hold_the_seventh
    first, base = _serve(seeded.db_url, tmp_path / "var")
    second = None
    try:
        call = Api(base, seeded.keys)
        sub = subscribe(call, "grocer", hook.url, TYPES)
        for i in range(12):
            earn(call, "grocer", f"crash-earn-{i}", f"M00{i % 5 + 1}")
        call.client.close()
        expected = outbox_ids(seeded.db_url, "grocer", TYPES, sub["subscription"]["afterSeq"])
        assert len(expected) == 12
        assert held.wait(WAIT_SECONDS_MAX), "serve's worker never reached the seventh event"
        first.send_signal(signal.SIGKILL)  # serve itself: its delivery threads with it
        assert first.wait(10) == -signal.SIGKILL
        release.set()
        _end(first)
        assert first_seen(hook.received) == expected[:7]  # nothing after the held one
        second, _ = _serve(seeded.db_url, tmp_path / "var")
        wait_for(
            "every event, after the restart",
            lambda: len(first_seen(hook.received)) == 12,
            lambda: [r.event["seq"] for r in hook.received],
        )
        second.send_signal(signal.SIGTERM)
        assert second.wait(STOP_SECONDS_MAX) == 0
    finally:
        release.set()
        _end(first)
        if second is not None:
            _end(second)
        hook.close()
    # Exactly once after de-duplication, in seq order; only the event in flight at the
    # kill came twice (its cursor had not moved: at least once).
    assert first_seen(hook.received) == expected
    ids = [r.event["id"] for r in hook.received]
    assert [i for i in set(ids) if ids.count(i) > 1] == [expected[6]]
    assert len(ids) == 13
    seqs = [r.event["seq"] for r in hook.received]
    assert seqs == sorted(seqs)
    assert {r.event["partner"] for r in hook.received} == {"grocer"}
