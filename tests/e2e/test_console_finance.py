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
        assert v.errors == [], f"errors in the page: {v.errors}"
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
