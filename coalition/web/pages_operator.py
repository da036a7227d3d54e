"""Operator pages: partners, and API keys (a new key is shown once, on the page that
created it; revoke). Listing partners and keys has no GraphQL field yet, so those two
reads are the use-case modules' own, behind the same role check the API would make."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from starlette.responses import Response

from coalition.api_keys import list_keys
from coalition.context import Conn
from coalition.web.framework import Ctx, see_other
from coalition.web.gql import PageError
from ledger.timefmt import format_time_us, now_us

CREATE_KEY = """mutation($role: Role!, $label: String!, $partner: String) {
  createApiKey(role: $role, label: $label, partnerId: $partner) { key info { keyId } } }"""
REVOKE_KEY = """mutation($keyId: String!) { revokeApiKey(keyId: $keyId) }"""
ROLES = ("partner", "auditor", "finance", "operator")


def list_partners(conn: Conn) -> list[dict[str, Any]]:
    rows = conn.execute(
        "SELECT partner_id, legal_name, settlement_currency, status FROM coalition_partner"
        " ORDER BY partner_id"
    ).fetchall()
    return [
        dict(zip(("partner_id", "legal_name", "currency", "status"), r, strict=True)) for r in rows
    ]


def list_terms(conn: Conn) -> list[dict[str, Any]]:
    """Every partner's terms versions, newest first (the projection of ``partner_terms``)."""
    rows = conn.execute(
        "SELECT partner_id, version, effective_from_us, terms::text, seq FROM coalition_terms"
        " ORDER BY partner_id, version DESC"
    ).fetchall()
    return [
        {
            "partner_id": r[0],
            "version": r[1],
            # 0 is the terms' own "from the start" (the seed's), not a date to show
            "effective_from": format_time_us(r[2]) if r[2] else None,
            "terms": _readable_terms(r[3]),
            "seq": r[4],
        }
        for r in rows
    ]


def _readable_terms(text: str) -> list[tuple[str, str]]:
    """The terms document as (name, value) pairs for a person: ``operator_fee_bps`` →
    ``operator fee bps``; a nested value stays JSON."""
    terms = json.loads(text)
    if not isinstance(terms, dict):
        return [("terms", text)]
    return [
        (name.replace("_", " "), value if isinstance(value, str) else json.dumps(value))
        for name, value in terms.items()
    ]


async def partners(ctx: Ctx) -> Response:
    return ctx.render(
        "partners.html", partners=await ctx.db(list_partners), terms=await ctx.db(list_terms)
    )


async def _keys_page(ctx: Ctx, status: int = 200, created: str = "", error: str = "") -> Response:
    now = now_us()
    keys = []
    for info in await ctx.db(list_keys):
        k = asdict(info)
        k["created_at"] = format_time_us(info.created_at_us)
        k["state"] = info.state(now)
        k["revoked_at"] = format_time_us(info.revoked_at_us) if info.revoked_at_us else None
        k["expires_at"] = format_time_us(info.expires_at_us) if info.expires_at_us else None
        k["yours"] = info.key_id == ctx.principal.key_id
        keys.append(k)
    found = await ctx.db(list_partners)
    return ctx.render(
        "keys.html", status, keys=keys, partners=found, roles=ROLES, created=created, error=error
    )


async def keys(ctx: Ctx) -> Response:
    return await _keys_page(ctx)


async def create_key(ctx: Ctx) -> Response:
    form = await ctx.request.form()
    role = str(form.get("role", ""))
    if role not in ROLES:
        return await _keys_page(ctx, 400, error="Choose a role.")
    partner = str(form.get("partner_id", "")) or None
    try:
        done = await ctx.gql(
            CREATE_KEY, role=role.upper(), label=str(form.get("label", "")), partner=partner
        )
    except PageError as exc:
        if exc.status != 400:
            raise
        return await _keys_page(ctx, 400, error=exc.message)
    return await _keys_page(ctx, created=done["createApiKey"]["key"])


async def revoke_key(ctx: Ctx) -> Response:
    await ctx.gql(REVOKE_KEY, keyId=ctx.request.path_params["key_id"])
    return see_other("/keys")
