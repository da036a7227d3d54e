"""The KPI page: per day, the coalition's totals (readers) and each partner's earned,
redeemed and expired points, its redemption and breakage rates and its active members,
as charts (the vendored Chart.js) and tables. One GraphQL request, an aliased field per
day; a partner key's ``partnerKpis`` answers its own row only, so a partner sees its own
series and never the coalition's or another partner's. Partners come a keyset page at a
time (by id), so the page stays the same size with 15 partners or 1,500."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from starlette.responses import Response

from coalition.settle import timezone
from coalition.web.framework import PREFIX, Ctx
from coalition.web.gql import PageError

KPI_DAYS = 7  # a field per day in one request: the API allows 15 aliases
PARTNERS_PAGE = 20  # datasets in one chart: more would not be told apart
KPI_FIELDS = "pointsIssued pointsRedeemed pointsExpired redemptionRate breakageRate membersActive"
PARTNER_FIELDS = (
    "partnerId pointsIssued pointsRedeemedAt pointsRedeemedOfIssuance pointsExpired"
    " redemptionRate breakageRate membersActive"
)
MEASURES = (  # (field, chart id, title, what an empty chart would have shown)
    ("pointsIssued", "earned", "Earned per partner per day (points)", "earned at"),
    ("pointsRedeemedAt", "redeemed", "Redeemed at each partner per day (points)", "redeemed at"),
    ("pointsExpired", "expired", "Expired of each partner's points per day", "expired of"),
)


def _days() -> list[date]:
    today = datetime.now(ZoneInfo(timezone())).date()
    return [today - timedelta(days=n) for n in range(KPI_DAYS - 1, -1, -1)]


def _span(start: date, end: date) -> str:
    return f'fromTime: "{start.isoformat()}", toTime: "{end.isoformat()}"'


def _documents(days: list[date], readers: bool, after: str) -> list[str]:
    """The partners' request and, for readers, the coalition's: apart, each stays under
    the API's limit of aliases in one document (a field per day, and the whole span)."""
    one = timedelta(days=1)
    page = f"first: {PARTNERS_PAGE + 1}" + (f", after: {json.dumps(after)}" if after else "")
    parts = [
        f"p{i}: partnerKpis({_span(d, d + one)}, {page}) {{ {PARTNER_FIELDS} }}"
        for i, d in enumerate(days)
    ]
    parts.append(
        f"ptotal: partnerKpis({_span(days[0], days[-1] + one)}, {page}) {{ {PARTNER_FIELDS} }}"
    )
    documents = ["query { " + " ".join(parts) + " }"]
    if readers:
        parts = [f"d{i}: kpis({_span(d, d + one)}) {{ {KPI_FIELDS} }}" for i, d in enumerate(days)]
        parts.append(
            f"flow: kpis({_span(days[0], days[-1] + one)}) {{ {KPI_FIELDS}"
            " flow { issuer redeemedAt points } }"
        )
        documents.append("query { " + " ".join(parts) + " }")
    return documents


def percent(rate: str) -> str:
    """A rate as the API gives it (``"0.1234"``) for people: ``12.34 %``."""
    return f"{Decimal(rate) * 100:.2f} %"


async def kpis(ctx: Ctx) -> Response:
    days = _days()
    readers = ctx.principal.role != "partner"
    params = ctx.request.query_params
    after = params.get("partners_after", "")
    if len(after) > 200:
        raise PageError(400, "partners_after is a partner id.")
    data: dict[str, Any] = {}
    for document in _documents(days, readers, after):
        data.update(await ctx.gql(document))
    more = len(data["ptotal"]) > PARTNERS_PAGE
    totals = data["ptotal"][:PARTNERS_PAGE]
    ids = [t["partnerId"] for t in totals]
    daily = [{p["partnerId"]: p for p in data[f"p{i}"]} for i in range(len(days))]
    chosen = params.get("partner", "")
    if chosen and chosen not in ids:
        if not readers:
            raise PageError(404, "A partner's key shows its own figures only: open KPIs.")
        raise PageError(404, f"No partner {chosen} on this page of partners. Pick one below.")
    if not readers:
        chosen = ids[0] if ids else ""
    if chosen:
        scope = [daily[i].get(chosen) or _zero(chosen) for i in range(len(days))]
        scope_name = chosen
    else:
        scope = [data[f"d{i}"] for i in range(len(days))] if readers else []
        scope_name = "the coalition"
    labels = [d.isoformat() for d in days]
    charts = []  # (id, chart or "" when every figure is 0, what that would have shown)
    for field, chart_id, title, what in MEASURES:
        title = title if readers else title.replace(" per partner", "").replace("each ", "")
        spec = _by_partner(labels, ids, daily, field, title)
        drawn = any(v for d in spec["data"]["datasets"] for v in d["data"])
        charts.append((chart_id, json.dumps(spec) if drawn else "", what))
    for t in totals:
        t["redemptionPercent"], t["breakagePercent"] = (
            percent(t["redemptionRate"]),
            percent(t["breakageRate"]),
        )
    series = [data[f"d{i}"] for i in range(len(days))] if readers else []
    for s in [*series, *scope]:
        s["redemptionPercent"], s["breakagePercent"] = (
            percent(s["redemptionRate"]),
            percent(s["breakageRate"]),
        )
    return ctx.render(
        "kpis.html",
        days=days,
        readers=readers,
        series=series,
        total=data.get("flow"),
        chart=json.dumps(_coalition_chart(labels, series)) if readers else "",
        partner_charts=charts,
        rates_chart=json.dumps(_rates_chart(labels, scope, scope_name)) if scope else "",
        members_chart=json.dumps(_members_chart(labels, scope, scope_name)) if scope else "",
        totals=totals,
        page_size=PARTNERS_PAGE,
        chosen=chosen,
        scope_name=scope_name,
        next_partners=("?" + urlencode({"partners_after": ids[-1]}) if more and ids else None),
        first_partners=f"{PREFIX}/kpis" if after else None,
    )


def _zero(partner_id: str) -> dict[str, Any]:
    return {
        "partnerId": partner_id,
        "pointsIssued": "0",
        "pointsRedeemedAt": "0",
        "pointsExpired": "0",
        "redemptionRate": "0",
        "breakageRate": "0",
        "membersActive": 0,
    }


def _by_partner(
    labels: list[str], ids: list[str], daily: list[dict[str, Any]], field: str, title: str
) -> dict[str, Any]:
    """One chart: a stacked bar per day, one dataset (colour) per partner."""
    datasets = [
        {"label": p, "data": [int((day.get(p) or {}).get(field) or 0) for day in daily]}
        for p in ids
    ]
    return {
        "type": "bar",
        "data": {"labels": labels, "datasets": datasets},
        "options": {"stacked": True, "title": title},
    }


def _coalition_chart(labels: list[str], series: list[dict[str, Any]]) -> dict[str, Any]:
    def column(name: str) -> list[int]:
        return [int(s[name]) for s in series]

    return {
        "type": "bar",
        "data": {
            "labels": labels,
            "datasets": [
                {"label": "earned", "data": column("pointsIssued")},
                {"label": "redeemed", "data": column("pointsRedeemed")},
                {"label": "expired", "data": column("pointsExpired")},
            ],
        },
        "options": {"stacked": False, "title": "Coalition points per day"},
    }


def _rates_chart(labels: list[str], scope: list[dict[str, Any]], name: str) -> dict[str, Any]:
    # Percentages for the chart's axis only; the table shows the API's exact decimals.
    def column(field: str) -> list[float]:
        return [float(Decimal(s[field]) * 100) for s in scope]

    return {
        "type": "line",
        "data": {
            "labels": labels,
            "datasets": [
                {"label": "redemption rate %", "data": column("redemptionRate")},
                {"label": "breakage rate %", "data": column("breakageRate")},
            ],
        },
        "options": {"stacked": False, "title": f"Redemption and breakage rates, {name} (%)"},
    }


def _members_chart(labels: list[str], scope: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return {
        "type": "bar",
        "data": {
            "labels": labels,
            "datasets": [
                {"label": "active members", "data": [int(s["membersActive"]) for s in scope]}
            ],
        },
        "options": {"stacked": False, "title": f"Active members per day, {name}"},
    }
