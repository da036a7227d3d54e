"""The console's finance and partner pages in a real Chromium: settlement runs paged by
cursor (newer / older), a run's page offering only what its state allows and saying why
the rest is absent, per-partner KPI charts (a partner sees its own series only), and the
list pages at scale (55 partners, 100,000+ journal entries) showing the totals SQL gives."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import datetime
from decimal import Decimal
from itertools import islice
from pathlib import Path
from typing import Any

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
    page.select_option("#partner-choice select[name=partner]", "grocer")
    page.click("#partner-choice button")
    page.wait_for_url(re.compile(r".*/console/kpis\?partner=grocer$"))
    assert page.locator("#partner-kpis tr.chosen td").first.inner_text() == "grocer"
    assert _ink(page, "#rates-chart") > 1000 and _ink(page, "#members-chart") > 1000
    assert "grocer" in page.locator("#rates-chart").get_attribute("data-chart")


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
    v.errors_expected = True  # the 404 below
    answer = page.goto("/console/kpis?partner=airline")
    assert answer is not None and answer.status == 404
    assert not re.search(r"\d", page.locator("main").inner_text())  # no figure of airline's
    page.goto("/console/position")
    assert "statements appear here once finance computes one" in page.content()
    assert page.locator("#older-runs, #newest-runs").count() == 0
    v.shot("position-no-runs")


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


# --- At scale: 55 partners (16+ in the brief; more than a partners page holds), 100,000+
# journal entries (the ledger's pipelined batched append, as bench/ fills a journal),
# today's earns and redemptions at every partner, six settlement runs.

SCALE_PARTNERS = 52  # besides the seed's three
SCALE_ENTRIES = 100_000
SCALE_RUNS_PAGE = 2
SCALE_EMPTY_MONTHS = 5  # runs computed before the fill: quick, and pages to walk
GROCER_EVERY = 200


def _fill(db_url: str) -> None:
    """The partners (terms, rules, bank account each), a few earns at each and
    redemptions at the seed's partners, then SCALE_ENTRIES transfers between overdraft
    accounts written under the partners' reference scopes, a batch of 1,000 a
    transaction, pipelined (the entries a partner's Entries page lists)."""
    import psycopg

    from bench._workload import open_accounts, transfer
    from coalition.banking import make_iban
    from coalition.context import Coalition
    from coalition.earn import earn_points
    from coalition.earning import EarningRules
    from coalition.outcomes import Refusal
    from coalition.partners import onboard_partner, publish_earning_rules, publish_terms
    from coalition.redeem import redeem_points
    from coalition.settle import set_bank_account
    from ledger.journal import Appended, Journal
    from settlement.terms import PartnerTerms

    def ok(outcome: object) -> None:
        assert not isinstance(outcome, Refusal), outcome

    co = Coalition()
    terms = PartnerTerms(Decimal(50), Decimal(95), 150, Decimal("0.5"), "monthly", "multilateral")
    rules = EarningRules("RUB", 1, 10_000)
    ids = [f"shop{n:02d}" for n in range(SCALE_PARTNERS)]
    with psycopg.connect(db_url, autocommit=True) as conn:
        for n, p in enumerate(ids):
            ok(onboard_partner(co, conn, p, f"Shop {n} LLC", "RUB"))
            ok(publish_terms(co, conn, p, terms, 0, f"terms:{p}:1"))
            ok(publish_earning_rules(co, conn, p, rules, 0, f"rules:{p}:1"))
            iban = make_iban("DE", f"{37050000 + n}0532013000")
            ok(set_bank_account(co, conn, p, iban=iban, bic="COBADEFFXXX", name=p, ref_key=p))
        for n, p in enumerate(ids):
            for k in range(1 + n % 4):
                member = f"M{1 + (n + k) % 5:03d}"
                purchase = 10_000 * (1 + (n * 7 + k) % 50)
                ok(
                    earn_points(
                        co,
                        conn,
                        partner_id=p,
                        ref_key=f"e{k}",
                        purchase_minor=purchase,
                        currency="RUB",
                        member_id=member,
                    )
                )
        for k, at in enumerate(("grocer", "fuel", "airline") * 4):
            ok(
                redeem_points(
                    co,
                    conn,
                    partner_id=at,
                    ref_key=f"scale-r{k}",
                    points=3 + k,
                    member_id=f"M{1 + k % 5:03d}",
                )
            )
        journal = Journal()
        open_accounts(conn, journal)
        numbers = iter(range(SCALE_ENTRIES))

        def scope(k: int) -> str:  # grocer's share: a dozen pages of Entries to walk
            return "partner:grocer" if k % GROCER_EVERY == 0 else f"partner:{ids[k % len(ids)]}"

        def take(wait: bool) -> list[Any] | None:
            batch = [transfer(scope(k), k) for k in islice(numbers, 1000)]
            return batch or None

        def done(batch: Any, outcome: Any) -> None:
            assert not isinstance(outcome, BaseException), outcome
            assert all(isinstance(r, Appended) for r in outcome)

        assert journal.append_stream(conn, take, done) == []


@pytest.fixture()
def big(seeded: Seeded, signer: Any, period: str) -> Seeded:
    """The seeded coalition with settlement runs of months before it (computed first, by
    the use case computeSettlement runs: quick on the seed's few entries), then filled."""
    import psycopg

    from coalition import settle
    from coalition.context import Coalition

    today = datetime.fromisoformat(period + "-01").date()
    key_id = seeded.keys["finance"].split("_")[1]
    with psycopg.connect(seeded.db_url, autocommit=True) as conn:
        for m in range(1, 1 + SCALE_EMPTY_MONTHS):
            month = f"{today.year - 1:04d}-{m:02d}"
            done = settle.compute(
                Coalition(), conn, signer, period=month, computed_by=f"key:{key_id}"
            )
            assert isinstance(done, settle.RunRecord), done
    _fill(seeded.db_url)
    return seeded


def _sql(db_url: str, query: str, *args: Any) -> list[tuple[Any, ...]]:
    import psycopg

    with psycopg.connect(db_url, autocommit=True) as conn:
        return conn.execute(query, args).fetchall()


def _gql(url: str, key: str, query: str) -> dict[str, Any]:
    answer = httpx.post(
        url + "/graphql",
        json={"query": query},
        headers={"Authorization": f"Bearer {key}"},
        timeout=120,
    ).json()
    assert "errors" not in answer, answer
    data: dict[str, Any] = answer["data"]
    return data


def _walk(
    page: Page, start: str, link: str, rows: str, cells: str = "td:first-child"
) -> list[list[str]]:
    """Every page from ``start`` following ``link`` to its end: each page's first column."""
    page.goto(start)
    pages = []
    while True:
        pages.append(page.locator(f"{rows} tr {cells}").all_inner_texts())
        assert len(pages) < 100, "the pager does not end"
        if page.locator(link).count() == 0:
            return pages
        page.click(link)
        page.wait_for_load_state()


def test_at_scale_the_lists_page_by_cursor_and_show_the_totals_sql_gives(
    big: Seeded,
    settings: Settings,
    serve: Callable[[Starlette], str],
    browser: Browser,  # noqa: F811
    period: str,
) -> None:
    """55 partners, 100,000+ entries, 6 runs (one over all of the entries). The runs
    list walked older then newer with its cursors gives every run once in SQL's order;
    the partners list the same; grocer's Entries pages are exactly SQL's entries of its
    scope in seq order; the KPI page's per-partner earned, redeemed and active members,
    over its three pages of partners, and the coalition's earned, equal SQL's sums and
    counts. (The run over the whole journal is computed while the other pages are
    walked: its reading of 100,000 entries is most of the test's time.)"""
    from concurrent.futures import ThreadPoolExecutor

    url = serve(create_app(settings, big.db_url))
    (entries,) = _sql(big.db_url, "SELECT count(*) FROM ledger_entry")[0]
    assert entries > SCALE_ENTRIES
    finance = big.keys["finance"]
    compute = 'mutation {{ computeSettlement(period: "{}") {{ runId }} }}'
    opened: list[Shooting] = []

    def as_(name: str) -> tuple[Shooting, Page]:
        opened.append(Shooting(browser, url))
        return opened[-1], opened[-1].sign_in(big.keys[name])

    pool = ThreadPoolExecutor(1)
    try:
        big_run = pool.submit(_gql, url, finance, compute.format(period))
        v, page = as_("grocer")
        shown = _walk(page, "/console/entries", "text=Next page →", "table")
        seqs = _sql(
            big.db_url,
            "SELECT seq FROM ledger_entry WHERE ref_scope = 'partner:grocer' ORDER BY seq",
        )
        assert [_number(t) for p in shown for t in p] == [r[0] for r in seqs]
        assert len(shown) > 10
        v.shot("entries-at-scale")

        v, page = as_("operator")
        partners = _walk(page, "/console/partners", "#next-partners", "#partners")
        ids = _sql(big.db_url, "SELECT partner_id FROM coalition_partner ORDER BY 1")
        assert [p for ps in partners for p in ps] == [r[0] for r in ids] and len(partners) == 2
        v.shot("partners-at-scale")

        v, page = as_("finance")
        _check_kpis(page, big.db_url)
        v.shot("kpis-at-scale")

        big_run.result()
        runs = _sql(
            big.db_url,
            "SELECT run_id FROM coalition_settlement_run ORDER BY computed_at_us DESC, run_id DESC",
        )
        assert len(runs) == SCALE_EMPTY_MONTHS + 1
        run_ids = [r[0] for r in runs]
        older = _walk(page, f"/console/runs?size={SCALE_RUNS_PAGE}", "#older", "#runs")
        assert [r for p in older for r in p] == run_ids
        assert [len(p) for p in older] == [2, 2, 2]
        v.shot("runs-last-page")
        newer = _walk(page, page.url, "#newer", "#runs")
        assert [r for p in reversed(newer) for r in p] == run_ids
        assert page.locator("#newest").count() == 0 and page.locator("#older").count() == 1
        v.shot("runs-first-page")
        page.goto(f"/console/runs/{run_ids[0]}")
        assert re.search(r"entries 0–100,\d{3}", page.locator("main").inner_text())
        v.shot("run-at-scale")
    finally:
        pool.shutdown()
        for v in opened:
            assert v.outside() == [] and v.errors == [], (v.outside(), v.errors)
            v.close()


def _check_kpis(page: Page, db_url: str) -> None:
    """Every page of partners on the KPI page against SQL over the projections (all of
    the fill is of today, inside the page's seven days)."""
    pages = _walk(page, "/console/kpis", "#next-partners", "#partner-kpis", "td")
    shown = {}
    for cells in pages:
        for row in [cells[i : i + 8] for i in range(0, len(cells), 8)]:
            shown[row[0]] = (_number(row[1]), _number(row[2]), _number(row[7]))
    assert len(pages) == 3  # 55 partners, 20 a page
    earned = dict(_sql(db_url, "SELECT partner_id, sum(points) FROM coalition_earn GROUP BY 1"))
    redeemed = dict(
        _sql(
            db_url,
            "SELECT partner_id, sum(points) FROM coalition_lot_use"
            " WHERE kind IN ('redeem', 'capture', 'refund_redemption') GROUP BY 1",
        )
    )
    active = dict(
        _sql(
            db_url,
            "SELECT partner_id, count(DISTINCT member_id) FROM ("
            " SELECT partner_id, member_id FROM coalition_earn UNION ALL"
            " SELECT partner_id, member_id FROM coalition_redemption) m GROUP BY 1",
        )
    )
    ids = [r[0] for r in _sql(db_url, "SELECT partner_id FROM coalition_partner ORDER BY 1")]
    expected = {
        p: (int(earned.get(p, 0)), int(redeemed.get(p, 0)), int(active.get(p, 0))) for p in ids
    }
    assert shown == expected
    days = page.locator("#kpi-table tr td:nth-child(2)").all_inner_texts()
    assert sum(_number(t) for t in days) == sum(e for e, _, _ in expected.values())
    assert _ink(page, "#partner-earned") > 1000


def test_settlement_runs_and_my_runs_page_by_cursor_over_http(
    seeded: Seeded, app_url: str, period: str, signer: Any
) -> None:
    """A run of last year's January (empty) then this month's: settlementRuns one a page
    gives this month's, then with its cursor January's, then nothing, and before
    January's cursor this month's again; grocer's myRuns (it is a party to this month's
    only) gives that one, then nothing; a cursor the API did not give is BAD_USER_INPUT.
    (Several runs a party is in: tests/integration/test_runs_paging.py.)"""
    import psycopg

    from ledger.checkpoint_log import sign_now
    from ledger.timefmt import now_us

    finance, grocer = seeded.keys["finance"], seeded.keys["grocer"]
    with psycopg.connect(seeded.db_url, autocommit=True) as conn:  # the runs' cut
        sign_now(conn, signer, now_us())
    january = f"{int(period[:4]) - 1:04d}-01"
    ids = []
    for month in (january, period):
        done = _gql(
            app_url, finance, f'mutation {{ computeSettlement(period: "{month}") {{ runId }} }}'
        )
        ids.insert(0, done["computeSettlement"]["runId"])

    def runs(key: str, field: str, args: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = _gql(
            app_url, key, f"{{ {field}({args}) {{ runId cursor }} }}"
        )[field]
        return found

    page1 = runs(finance, "settlementRuns", "first: 1")
    page2 = runs(finance, "settlementRuns", f'first: 1, after: "{page1[0]["cursor"]}"')
    assert [r["runId"] for r in page1 + page2] == ids
    assert runs(finance, "settlementRuns", f'first: 1, after: "{page2[0]["cursor"]}"') == []
    back = runs(finance, "settlementRuns", f'first: 5, before: "{page2[0]["cursor"]}"')
    assert [r["runId"] for r in back] == ids[:1]
    mine = runs(grocer, "myRuns", "first: 1")
    assert [r["runId"] for r in mine] == ids[:1]
    assert runs(grocer, "myRuns", f'first: 1, after: "{mine[0]["cursor"]}"') == []
    refused = httpx.post(
        app_url + "/graphql",
        json={"query": '{ myRuns(after: "e30=") { runId } }'},
        headers={"Authorization": f"Bearer {grocer}"},
    ).json()
    assert refused["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


def test_api_keys_page_by_keyset(visit: Callable[[], Shooting], seeded: Seeded) -> None:
    """With 60 keys more than a page holds, the keys pages walked by Next are every key
    once, in SQL's creation order."""
    import psycopg

    from coalition.api_keys import create_key
    from ledger.timefmt import now_us

    with psycopg.connect(seeded.db_url, autocommit=True) as conn:
        for n in range(60):
            create_key(conn, "auditor", None, f"auditor {n:02d}", now_us())
    v = visit()
    page = v.sign_in(seeded.keys["operator"])
    pages = _walk(page, "/console/keys", "#next-keys", "#keys", "td:first-child code")
    expected = _sql(
        seeded.db_url, "SELECT key_id FROM coalition_api_key ORDER BY created_at_us, key_id"
    )
    assert [k for p in pages for k in p] == [r[0] for r in expected] and len(pages) == 2
    v.shot("keys-second-page")
