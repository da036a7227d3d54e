"""The console's finance and partner pages in a real Chromium: settlement runs paged by
cursor (newer / older), a run's page offering only what its state allows and saying why
the rest is absent, per-partner KPI charts (a partner sees its own series only), and the
list pages at scale (16 partners, 100,000+ journal entries) showing the totals SQL gives."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, Response
from starlette.applications import Starlette

from coalition.api.app import create_app
from coalition.settings import Settings
from tests.e2e._browser import Visit, browser  # noqa: F401  (the fixture)
from tests.e2e.conftest import Seeded

pytestmark = pytest.mark.postgres

SHOTS = Path("/tmp/shots-fin")


@pytest.fixture()
def app_url(seeded: Seeded, settings: Settings, serve: Callable[[Starlette], str]) -> str:
    return serve(create_app(settings, seeded.db_url))


class Shooting(Visit):
    """A visit that keeps its screenshots under /tmp/shots-fin and its page's errors."""

    def __init__(self, browser: Browser, base: str) -> None:  # noqa: F811
        super().__init__(browser, base)
        self.errors: list[str] = []
        self.errors_expected = False  # a test that asks for an error page says so
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("response", self._answered)

    def _answered(self, response: Response) -> None:
        # Chromium asks for /favicon.ico on its own; the console has none (a 404).
        if response.status >= 400 and not response.url.endswith("/favicon.ico"):
            self.errors.append(f"{response.status} {response.url}")

    def shot(self, name: str) -> None:
        SHOTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


@pytest.fixture()
def visit(browser: Browser, app_url: str) -> Iterator[Callable[[], Shooting]]:  # noqa: F811
    opened: list[Shooting] = []

    def new() -> Shooting:
        opened.append(Shooting(browser, app_url))
        return opened[-1]

    yield new
    for v in opened:
        assert v.outside() == [], f"requests outside the app's origin: {v.outside()}"
        assert v.errors_expected or v.errors == [], f"errors in the page: {v.errors}"
        v.close()


def _ink(page: Page, selector: str) -> int:
    """How many non-blank pixels a chart drew (0: an empty canvas)."""
    page.wait_for_selector(f"{selector}[data-drawn=yes]", timeout=10_000)
    return int(
        page.evaluate(
            """(sel) => { const c = document.querySelector(sel);
               const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
               let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++; return n; }""",
            selector,
        )
    )


def _number(text: str) -> int:
    return int(text.replace(",", "").strip())


def test_kpis_per_partner_charts_and_a_partner_sees_only_its_own(
    visit: Callable[[], Shooting], seeded: Seeded
) -> None:
    """Finance sees the coalition's chart and one chart per measure split by partner,
    with the rates and active members of a chosen partner; grocer's key gets grocer's
    row only (no coalition totals, no other partner) on the same page."""
    v = visit()
    page = v.sign_in(seeded.keys["finance"])
    page.goto("/console/kpis")
    for chart in ("#kpi-chart", "#partner-earned", "#partner-redeemed", "#rates-chart"):
        assert _ink(page, chart) > 1000, chart
    rows = page.locator("#partner-kpis tr td:first-child").all_inner_texts()
    assert {"grocer", "fuel", "airline"} <= set(rows)
    v.shot("kpis-finance")


def test_a_partner_sees_its_own_kpis_only(visit: Callable[[], Shooting], seeded: Seeded) -> None:
    """grocer's key: grocer's row and series, no coalition chart, no other partner, no
    flow (the resolver answers a partner its own row whatever it asks)."""
    v = visit()
    page = v.sign_in(seeded.keys["grocer"])
    page.goto("/console/kpis")
    assert page.locator("#kpi-chart").count() == 0 and page.locator("#kpi-table").count() == 0
    assert page.locator("#partner-kpis tr td:first-child").all_inner_texts() == ["grocer"]
    assert _ink(page, "#partner-earned") > 1000 and _ink(page, "#members-chart") > 1000
    assert "airline" not in page.locator("main").inner_text()
    v.shot("kpis-partner")


def _pay_all(page: Page) -> None:
    while page.locator("form[action$='/payments'] button").count():
        page.locator("form[action$='/payments'] button").first.click()
        page.wait_for_url(re.compile(r".*\?notice=paid$"))


def test_a_run_offers_only_what_its_state_allows(
    visit: Callable[[], Shooting], seeded: Seeded, period: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """computed: no approval for the key that computed it (and it says why), approval
    for a second key, no payment action; approved: payment file and confirmations;
    paid: no action at all, each payment showing who confirmed it and when, and the
    page says why. An auditor is told only finance acts."""
    monkeypatch.setenv("COALITION_CLEARING_NAME", "Coalition Clearing")
    monkeypatch.setenv("COALITION_CLEARING_IBAN", "DE89370400440532013000")
    monkeypatch.setenv("COALITION_CLEARING_BIC", "COBADEFFXXX")
    first = visit()
    page = first.sign_in(seeded.keys["finance"])
    page.fill("input[name=period]", period)
    page.click("form[action='/console/runs'] button")
    page.wait_for_url(re.compile(r".*/console/runs/[^/?]+\?notice=computed$"))
    run_url = page.url.split("?")[0]
    assert page.locator("form[action$='/approve']").count() == 0
    assert "second finance key" in page.locator("#why-no-approve").inner_text()
    assert page.locator("form[action$='/payments'], form[action$='/payment-file']").count() == 0
    assert "once it is approved" in page.locator("#why-no-pay").inner_text()
    first.shot("run-computed")

    second = visit()
    page2 = second.sign_in(seeded.keys["finance2"])
    page2.goto(run_url)
    assert page2.locator("#why-no-approve").count() == 0
    page2.click("form[action$='/approve'] button")
    page2.wait_for_url(re.compile(r".*\?notice=approved$"))
    assert page2.locator("form[action$='/approve']").count() == 0
    assert page2.locator("form[action$='/payment-file']").count() == 1
    payments = page2.locator("#payments tr").count() - 1
    assert payments >= 1 and page2.locator("form[action$='/payments']").count() == payments
    second.shot("run-approved")
    _pay_all(page2)
    assert "(paid)" in page2.locator("h1").inner_text()
    assert page2.locator("form[action$='/payments'], form[action$='/payment-file']").count() == 0
    assert "every payment is confirmed" in page2.locator("#why-no-pay").inner_text()
    finance2 = next(k for k in page2.locator("header .who").inner_text().split() if len(k) == 12)
    paid = page2.locator("#payments td span.ok").all_inner_texts()
    assert len(paid) == payments
    time_re = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d"
    assert all(re.search(rf"by key:{finance2} at {time_re}", t) for t in paid), paid
    second.shot("run-paid")

    auditor = visit()
    page3 = auditor.sign_in(seeded.keys["auditor"])
    page3.goto(run_url)
    assert "Only finance keys" in page3.locator("#why-no-pay").inner_text()
    assert page3.locator("#actions form").count() == 0


def test_runs_list_cursor_and_bad_cursor(
    visit: Callable[[], Shooting], seeded: Seeded, app_url: str
) -> None:
    """A cursor the API did not give is a typed BAD_USER_INPUT (and a 400 page saying
    so), never a traceback; so is giving both after and before."""
    headers = {"Authorization": f"Bearer {seeded.keys['finance']}"}
    for args in ('after: "bm90IGEgY3Vyc29y"', 'after: "e30="', 'after: "x", before: "y"'):
        answer = httpx.post(
            app_url + "/graphql",
            json={"query": f"{{ settlementRuns(first: 5, {args}) {{ runId }} }}"},
            headers=headers,
        ).json()
        assert answer["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT", answer
        assert answer.get("data") is None
    v = visit()
    page = v.sign_in(seeded.keys["finance"])
    v.errors_expected = True
    answer = page.goto("/console/runs?after=bm90IGEgY3Vyc29y")
    assert answer is not None and answer.status == 400
    assert "cursor" in page.locator("main").inner_text()
    v.shot("runs-bad-cursor")
