"""The console's pure parts: formatting for people, CSRF tokens, the page table, and the
vendored assets against their manifest."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

from coalition.web import format as fmt
from coalition.web.framework import CSP
from coalition.web.routes import PAGES
from coalition.web.sessions import csrf_ok, csrf_token

ROOT = Path(__file__).resolve().parents[2]


def test_points_and_money_for_people() -> None:
    assert fmt.points("1234567") == "1,234,567"
    assert fmt.points(None) == "—"
    assert fmt.money(-123456, "EUR") == "-1,234.56 EUR"
    assert fmt.money(5, "EUR") == "0.05 EUR"
    assert fmt.money(1234567, "JPY") == "1,234,567 JPY"
    assert fmt.money("100000000", "RUB") == "1,000,000.00 RUB"


def test_times_are_rfc3339_in_the_zone() -> None:
    assert fmt.local_time("2026-12-01T21:00:00.500000Z", "Europe/Moscow") == (
        "2026-12-02T00:00:00+03:00"
    )
    assert fmt.local_time("2026-06-01T12:00:00.000000Z", "UTC") == "2026-06-01T12:00:00+00:00"


def test_csrf_token_belongs_to_its_session() -> None:
    token = csrf_token("session-a" * 4)
    assert csrf_ok("session-a" * 4, token)
    assert not csrf_ok("session-b" * 4, token)
    assert not csrf_ok("session-a" * 4, None)
    assert not csrf_ok(None, token)


def test_csp_allows_no_inline_script_and_no_other_origin() -> None:
    assert "script-src 'self';" in CSP and "unsafe" not in CSP and "http" not in CSP


def test_every_page_names_roles_and_an_example_for_each_parameter() -> None:
    for page in PAGES:
        assert page.roles, page.path
        params = set(re.findall(r"{(\w+)}", page.path))
        assert params == set(page.examples), page.path
        assert page.nav == bool(page.title) or not page.nav, page.path


def test_vendored_assets_match_their_manifest() -> None:
    script = ROOT / "scripts" / "vendor_assets.py"
    spec = importlib.util.spec_from_file_location("vendor_assets", script)
    assert spec is not None and spec.loader is not None
    vendor = importlib.util.module_from_spec(spec)
    sys.modules["vendor_assets"] = vendor  # dataclasses look their module up there
    spec.loader.exec_module(vendor)
    assert vendor.check() == []


def test_templates_have_no_inline_script_nor_remote_url() -> None:
    web = ROOT / "coalition" / "web"
    for path in [*web.glob("templates/*.html"), web / "static" / "graphiql.html"]:
        text = path.read_text()
        assert re.search(r"<script(?![^>]*\bsrc=)[^>]*>", text) is None, path.name
        assert re.search(r"(src|href)=\"(https?:)?//", text) is None, path.name
        assert re.search(r"\son[a-z]+=", text) is None, path.name  # no inline handlers
