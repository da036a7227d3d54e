"""Playwright on the system Chromium (no browser download): the executable path is fixed,
and a missing Chromium fails the suite rather than skipping it (.ci/run installs it)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "var" / "screenshots"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} missing: apt-get install -y chromium"
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


class Visit:
    """One browser context on the app, recording every request it makes."""

    def __init__(self, browser: Browser, base: str) -> None:
        self.base = base
        self.context: BrowserContext = browser.new_context(
            base_url=base, accept_downloads=True, viewport={"width": 1280, "height": 900}
        )
        self.requested: list[str] = []
        self.context.on("request", lambda r: self.requested.append(r.url))
        self.page: Page = self.context.new_page()

    def sign_in(self, key: str) -> Page:
        self.page.goto("/console/signin")
        self.page.fill("input[name=api_key]", key)
        self.page.click("button[type=submit]")
        self.page.wait_for_load_state()
        assert "/signin" not in self.page.url, self.page.content()
        return self.page

    def shot(self, name: str) -> None:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)

    def outside(self) -> list[str]:
        return [u for u in self.requested if not u.startswith(self.base + "/")]

    def close(self) -> None:
        self.context.close()
