"""Operator pages: partners, and API keys (a new key is shown once, on the page that
created it; revoke). Listing partners and keys has no GraphQL field yet, so those two
reads are the use-case modules' own, behind the same role check the API would make;
both are keyset pages of a bounded size (partners by id, keys by creation)."""

from __future__ import annotations

import json
import re
from dataclasses import asdict
from typing import Any

from starlette.responses import Response

from coalition.api_keys import keys_page
from coalition.context import Conn
from coalition.web.framework import Ctx, see_other
from coalition.web.gql import PageError
from ledger.timefmt import format_time_us, now_us

CREATE_KEY = """mutation($role: Role!, $label: String!, $partner: String) {
  createApiKey(role: $role, label: $label, partnerId: $partner) { key info { keyId } } }"""
REVOKE_KEY = """mutation($keyId: String!) { revokeApiKey(keyId: $keyId) }"""
ROLES = ("partner", "auditor", "finance", "operator")


PARTNERS_PAGE = 50
KEYS_PAGE = 50
TERMS_PER_PARTNER = 5  # the newest versions; older ones are in the journal
PARTNER_CHOICES = 200  # suggested in the key form; any other id can be typed
_KEY_CURSOR = re.compile(r"^([0-9]{1,19}):([0-9a-f]{1,64})$")


def list_partners(
    conn: Conn, after: str = "", limit: int = PARTNERS_PAGE
) -> tuple[list[dict[str, Any]], bool]:
    """Partners by id after ``after``, at most ``limit``, and whether more follow."""
    rows = conn.execute(
        "SELECT partner_id, legal_name, settlement_currency, status FROM coalition_partner"
        " WHERE partner_id > %s ORDER BY partner_id LIMIT %s",
        (after, limit + 1),
    ).fetchall()
    found = [
        dict(zip(("partner_id", "legal_name", "currency", "status"), r, strict=True))
        for r in rows[:limit]
    ]
    return found, len(rows) > limit


def list_terms(conn: Conn, partner_ids: list[str]) -> list[dict[str, Any]]:
    """The newest terms versions of these partners (the projection of ``partner_terms``)."""
    rows = conn.execute(
        "SELECT partner_id, version, effective_from_us, terms::text, seq FROM ("
        " SELECT t.*, row_number() OVER (PARTITION BY partner_id ORDER BY version DESC) n"
        " FROM coalition_terms t WHERE partner_id = ANY(%s)) v WHERE n <= %s"
        " ORDER BY partner_id, version DESC",
        (partner_ids, TERMS_PER_PARTNER),
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
    after = ctx.request.query_params.get("after", "")
    if len(after) > 128:
        raise PageError(400, "after is a partner id.")
    found, more = await ctx.db(list_partners, after)
    ids = [p["partner_id"] for p in found]
    return ctx.render(
        "partners.html",
        partners=found,
        terms=await ctx.db(list_terms, ids),
        terms_per_partner=TERMS_PER_PARTNER,
        next_after=ids[-1] if more and ids else None,
        paged=bool(after),
    )


def _key_cursor(text: str) -> tuple[int, str] | None:
    if not text:
        return None
    found = _KEY_CURSOR.match(text)
    if found is None:
        raise PageError(400, "after is a key's place in the list, from the Next link.")
    return int(found[1]), found[2]


async def _keys_page(ctx: Ctx, status: int = 200, created: str = "", error: str = "") -> Response:
    after = _key_cursor(ctx.request.query_params.get("after", ""))
    infos, more = await ctx.db(keys_page, after, KEYS_PAGE)
    now = now_us()
    keys = []
    for info in infos:
        k = asdict(info)
        k["created_at"] = format_time_us(info.created_at_us)
        k["state"] = info.state(now)
        k["revoked_at"] = format_time_us(info.revoked_at_us) if info.revoked_at_us else None
        k["expires_at"] = format_time_us(info.expires_at_us) if info.expires_at_us else None
        k["yours"] = info.key_id == ctx.principal.key_id
        keys.append(k)
    choices, _ = await ctx.db(list_partners, "", PARTNER_CHOICES)
    last = keys[-1] if keys else None
    return ctx.render(
        "keys.html",
        status,
        keys=keys,
        partners=choices,
        roles=ROLES,
        created=created,
        error=error,
        next_after=f"{last['created_at_us']}:{last['key_id']}" if more and last else None,
        paged=after is not None,
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
