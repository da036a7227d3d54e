"""The web console in a real Chromium: sign-in per role, the finance flow with four eyes,
downloads that parse, charts drawn with data, partners kept to their own objects on every
page (the cases generated from ``PAGES``), CSRF, and no request outside the app's origin."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import httpx
import pytest
from playwright.sync_api import Browser, Page
from pypdf import PdfReader
from starlette.applications import Starlette

from coalition.api.app import create_app
from coalition.settings import Settings
from coalition.web.routes import PAGES
from ledger.receipt_check import check_receipt
from ledger.signed_note import Verifier
from ledger.timefmt import now_us
from tests.e2e._browser import Visit, browser  # noqa: F401  (the fixture)
from tests.e2e.conftest import Seeded

pytestmark = pytest.mark.postgres

HOMES = {
    "finance": "/console/runs",
    "finance2": "/console/runs",
    "auditor": "/console/checkpoints",
    "operator": "/console/keys",
    "grocer": "/console/position",
}


@pytest.fixture()
def app_url(seeded: Seeded, settings: Settings, serve: Callable[[Starlette], str]) -> str:
    return serve(create_app(settings, seeded.db_url))


@pytest.fixture()
def visit(browser: Browser, app_url: str) -> Iterator[Callable[[], Visit]]:  # noqa: F811
    opened: list[Visit] = []

    def new() -> Visit:
        opened.append(Visit(browser, app_url))
        return opened[-1]

    yield new
    for v in opened:
        assert v.outside() == [], f"requests outside the app's origin: {v.outside()}"
        v.close()


def _canvas_has_ink(page: Page, selector: str) -> int:
    """How many non-blank pixels the chart drew (0: an empty canvas)."""
    page.wait_for_selector(f"{selector}[data-drawn=yes]")
    return int(
        page.evaluate(
            """(sel) => { const c = document.querySelector(sel);
               const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
               let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++; return n; }""",
            selector,
        )
    )


def test_sign_in_per_role_session_cookie_and_sign_out(
    visit: Callable[[], Visit], seeded: Seeded, app_url: str
) -> None:
    for name, home in HOMES.items():
        v = visit()
        page = v.sign_in(seeded.keys[name])
        assert page.url == app_url + home
        v.shot(f"home-{name}")
        [cookie] = [c for c in v.context.cookies() if c["name"] == "console_session"]
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        assert not cookie["secure"]  # development over plain HTTP; Secure otherwise
        stored = page.evaluate(
            "() => JSON.stringify([localStorage, sessionStorage, document.cookie])"
        )
        assert seeded.keys[name] not in stored and seeded.keys[name] not in cookie["value"]
        csp = page.request.get(home).headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp.split("style-src")[0]
        assert page.locator("script:not([src])").count() == 0  # no inline script
    # Sign out ends the session server-side: the old cookie no longer opens a page.
    page.click("header button[type=submit]")
    page.wait_for_url(re.compile(r".*/console/signin$"))
    refused = httpx.get(
        app_url + "/console/keys",
        cookies={"console_session": cookie["value"]},
        follow_redirects=False,
    )
    assert refused.status_code == 303 and refused.headers["location"].endswith("/signin")


def test_wrong_key_is_refused_with_a_message(visit: Callable[[], Visit]) -> None:
    v = visit()
    v.page.goto("/console/signin")
    v.page.fill("input[name=api_key]", "ck_000000000000_" + "x" * 43)
    v.page.click("button[type=submit]")
    assert "not valid" in v.page.locator("p.error").inner_text()


def test_finance_computes_second_approves_pays_and_downloads(
    visit: Callable[[], Visit], seeded: Seeded, period: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COALITION_CLEARING_NAME", "Coalition Clearing")
    monkeypatch.setenv("COALITION_CLEARING_IBAN", "DE89370400440532013000")
    monkeypatch.setenv("COALITION_CLEARING_BIC", "COBADEFFXXX")
    first = visit()
    page = first.sign_in(seeded.keys["finance"])
    page.fill("input[name=period]", period)
    page.click("form[action='/console/runs'] button")
    page.wait_for_url(re.compile(r".*/console/runs/[^/?]+\?notice=computed$"))
    run_url = page.url.split("?")[0]
    assert "a second finance key must approve" in page.content()
    assert page.locator("form[action$='/approve']").count() == 0  # not by the one who computed
    assert _canvas_has_ink(page, "canvas[data-chart]") > 1000
    first.shot("finance-run-computed")

    second = visit()
    page2 = second.sign_in(seeded.keys["finance2"])
    page2.goto(run_url)
    page2.click("form[action$='/approve'] button")
    page2.wait_for_url(re.compile(r".*\?notice=approved$"))
    assert "(approved)" in page2.locator("h1").inner_text()
    page2.locator("form[action$='/payments'] button").first.click()
    page2.wait_for_url(re.compile(r".*\?notice=paid$"))
    assert "Payment confirmed" in page2.locator("p.notice").inner_text()
    assert page2.locator("td span.ok", has_text="paid (entry").count() == 1
    second.shot("finance-run-paid")

    party = page2.locator("table").first.locator("td").first.inner_text()
    with page2.expect_download() as pdf:
        page2.click(f"a[href$='/statements/{party}/pdf']")
    text = "".join(p.extract_text() for p in PdfReader(pdf.value.path()).pages)
    assert party in text or party.title() in text
    with page2.expect_download() as got_csv:
        page2.click(f"a[href$='/statements/{party}/csv']")
    rows = list(csv.reader(io.StringIO(Path(got_csv.value.path()).read_text(encoding="utf-8"))))
    assert len(rows) > 1
    with page2.expect_download() as got_json:
        page2.click(f"a[href$='/statements/{party}/json']")
    statement = json.loads(Path(got_json.value.path()).read_text(encoding="utf-8"))
    assert statement
    with page2.expect_download() as xml:
        page2.click("form[action$='/payment-file'] button")
    root = ElementTree.parse(xml.value.path()).getroot()
    assert root.tag.endswith("Document") and "pain.001.001.09" in root.tag
    page2.goto("/console/runs")
    assert page2.locator("td.status-paid, td.status-approved").count() >= 1
    second.shot("finance-runs")


def test_kpi_chart_renders_with_data(visit: Callable[[], Visit], seeded: Seeded) -> None:
    v = visit()
    page = v.sign_in(seeded.keys["finance"])
    page.goto("/console/kpis")
    assert _canvas_has_ink(page, "#kpi-chart") > 1000
    earned = [
        int(t.replace(",", ""))
        for t in page.locator("#kpi-table tr td:nth-child(2)").all_inner_texts()
    ]
    assert sum(earned) > 0  # the seed's purchases are today's
    v.shot("finance-kpis")


def _foreign_values(seeded: Seeded, app_url: str) -> dict[str, str]:
    """An object of another partner (airline) for each kind of path parameter."""
    headers = {"Authorization": f"Bearer {seeded.keys['airline']}"}
    query = "{ journalEntries(first: 1) { edges { node { seq } } } }"
    answer = httpx.post(app_url + "/graphql", json={"query": query}, headers=headers).json()
    seq = answer["data"]["journalEntries"]["edges"][0]["node"]["seq"]
    return {
        "seq": seq,
        "party": "airline",
        "run_id": "2026-01-r1",
        "format": "json",
        "key_id": "000000000000",
    }


def test_partner_cannot_open_another_partners_objects_on_any_page(
    visit: Callable[[], Visit], seeded: Seeded, app_url: str
) -> None:
    """Every page in PAGES, as grocer: a page not for partners answers 403; a partner's
    page with a path parameter answers 404 for airline's object. The list is walked, so a
    new page is tested the day it is added."""
    v = visit()
    page = v.sign_in(seeded.keys["grocer"])
    token = next(c["value"] for c in v.context.cookies() if c["name"] == "console_session")
    csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page.content())
    assert csrf is not None
    foreign = _foreign_values(seeded, app_url)
    checked = 0
    for spec in PAGES:
        params = re.findall(r"{(\w+)}", spec.path)
        path = "/console" + spec.path
        for name in params:
            path = path.replace("{" + name + "}", str(foreign[name]))
        for method in spec.methods:
            answer = httpx.request(
                method,
                app_url + path,
                cookies={"console_session": token},
                data={"csrf": csrf[1]} if method == "POST" else None,
                follow_redirects=False,
            )
            if "partner" not in spec.roles:
                assert answer.status_code == 403, (method, path, answer.status_code)
            elif params:
                assert answer.status_code == 404, (method, path, answer.status_code)
                assert "airline" not in answer.text.replace("of airline in run", "")
            checked += 1
    assert checked == sum(len(p.methods) for p in PAGES)


def test_a_form_without_its_csrf_token_is_refused(
    visit: Callable[[], Visit], seeded: Seeded, app_url: str, period: str
) -> None:
    v = visit()
    page = v.sign_in(seeded.keys["finance"])
    token = next(c["value"] for c in v.context.cookies() if c["name"] == "console_session")
    for data in ({"period": period}, {"period": period, "csrf": "0" * 64}):
        answer = httpx.post(
            app_url + "/console/runs",
            cookies={"console_session": token},
            data=data,
            follow_redirects=False,
        )
        assert answer.status_code == 403 and "CSRF" in answer.text
    page.goto("/console/runs")
    assert "No settlement run yet" in page.content()  # nothing was computed
    v.shot("finance-runs-empty")


def test_partner_position_entries_receipt_and_reconciliation(
    visit: Callable[[], Visit], seeded: Seeded, verifier: Verifier, app_url: str
) -> None:
    v = visit()
    page = v.sign_in(seeded.keys["grocer"])
    assert "Points issued" in page.content()
    v.shot("partner-position")
    page.goto("/console/entries")
    seqs = page.locator("table tr td:first-child").all_inner_texts()
    assert seqs
    v.shot("partner-entries")
    refs = page.locator("table tr td:nth-child(4)").all_inner_texts()
    # Reconciliation: the partner's own records, one changed and one invented.
    ours = _grocer_records(seeded, app_url)
    assert ours, "the seed gives grocer purchases"
    theirs = [dict(r) for r in ours]
    theirs[0]["points"] = int(theirs[0]["points"]) + 1
    theirs.append({**theirs[-1], "ref": "invented-1"})
    page.goto("/console/reconciliation")
    page.set_input_files(
        "input[name=file]",
        files=[
            {
                "name": "ours.json",
                "mimeType": "application/json",
                "buffer": json.dumps(theirs).encode(),
            }
        ],
    )
    page.select_option("select[name=format]", "json")
    page.fill("input[name=from]", "2000-01-01")
    page.fill("input[name=to]", "2100-01-01")
    page.click("form[action='/console/reconciliation'] button")
    page.wait_for_selector("#reconciliation-summary")
    assert page.locator("#mismatched tr.bad").first.locator("td").nth(1).inner_text() == "points"
    assert "invented-1" in page.locator("#missing-ours").inner_text()
    v.shot("partner-reconciliation")
    assert refs


def _grocer_records(seeded: Seeded, app_url: str) -> list[dict[str, Any]]:
    """The journal's view of grocer's records, as the CLI's reconcile reads them."""
    import psycopg

    from coalition.settle import our_records

    with psycopg.connect(seeded.db_url, autocommit=True) as conn:
        records = our_records(conn, "grocer", 0, 2**62)
    return [r.to_json() for r in records]


def test_auditor_looks_up_a_proof_and_the_receipt_verifies_offline(
    visit: Callable[[], Visit], seeded: Seeded, verifier: Verifier, signer: Any
) -> None:
    import psycopg

    from ledger.checkpoint_log import sign_now

    with psycopg.connect(seeded.db_url, autocommit=True) as conn:
        sign_now(conn, signer, now_us())
    v = visit()
    page = v.sign_in(seeded.keys["auditor"])
    assert page.locator("td.ok").first.inner_text() == "verified"
    v.shot("auditor-checkpoints")
    page.goto("/console/proof?seq=1")
    assert page.locator("#proof").count() == 1
    v.shot("auditor-proof")
    with page.expect_download() as got:
        page.click("a[href$='/entries/1/receipt']")
    checked = check_receipt(Path(got.value.path()).read_bytes(), verifier)
    assert checked.leaf_index == 1
    with page.expect_download() as export:
        page.goto("/console/checkpoints")
        page.click("a[href='/console/export']")
    lines = Path(export.value.path()).read_bytes().splitlines()
    assert len(lines) >= 2 and json.loads(lines[1])["seq"] == 1


def test_operator_creates_a_key_shown_once_and_revokes_it(
    visit: Callable[[], Visit], seeded: Seeded, app_url: str
) -> None:
    v = visit()
    page = v.sign_in(seeded.keys["operator"])
    page.select_option("select[name=role]", "auditor")
    page.fill("input[name=label]", "console test auditor")
    page.click("form[action='/console/keys'] button")
    key = page.locator("#created-key").inner_text()
    assert key.startswith("ck_")
    v.shot("operator-keys-created")
    page.goto("/console/keys")
    assert key not in page.content()  # shown once
    key_id = key.split("_")[1]
    page.click(f"form[action='/console/keys/{key_id}/revoke'] button")
    page.wait_for_url(re.compile(r".*/console/keys$"))
    answer = httpx.post(
        app_url + "/graphql",
        json={"query": "{ me { role } }"},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert answer.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    page.goto("/console/partners")
    assert page.locator("table tr").count() >= 4
    assert page.locator("#terms tr").count() >= 2  # the seed's terms, a version each
    v.shot("operator-partners")


def test_graphiql_works_offline(visit: Callable[[], Visit]) -> None:
    v = visit()
    v.page.goto("/graphql")
    v.page.wait_for_selector(".graphiql-container", timeout=15_000)
    v.shot("graphiql")


def test_outside_development_the_session_cookie_is_secure(
    seeded: Seeded, settings: Settings, serve: Callable[[Starlette], str]
) -> None:
    import dataclasses

    url = serve(create_app(dataclasses.replace(settings, development=False), seeded.db_url))
    with httpx.Client(base_url=url) as client:
        form = client.get("/console/signin")
        assert "secure" in form.headers["set-cookie"].lower()
        csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', form.text)
        assert csrf is not None
        # The client keeps the pre-session cookie, but not a Secure one over plain HTTP:
        client.cookies.set("console_presession", form.cookies["console_presession"])
        signed_in = client.post(
            "/console/signin", data={"csrf": csrf[1], "api_key": seeded.keys["finance"]}
        )
        assert signed_in.status_code == 303
        [cookie] = [
            c for c in signed_in.headers.get_list("set-cookie") if c.startswith("console_session=")
        ]
        attributes = {a.strip().lower() for a in cookie.split(";")}
        assert {"secure", "httponly", "samesite=strict"} <= attributes
        assert client.get("/graphql", headers={"accept": "text/html"}).status_code != 200
