"""A settlement run recomputed from journal.jsonl and docs/SETTLEMENT.md alone.

Standard library only; it shares no code with settlement/ or ledger/ (written from the
document, section numbers in the comments). Usage:

    python tests/tools/independent_settlement.py journal.jsonl RUN_ID > run.json

RUN_ID must be approved in the export (§11 gives everything else).
"""

from __future__ import annotations

import hashlib
import json
import sys
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_FLOOR, ROUND_HALF_EVEN, Decimal
from zoneinfo import ZoneInfo

OP = "coalition"
EXP = {"BHD": 3, "IQD": 3, "JOD": 3, "KWD": 3, "LYD": 3, "OMR": 3, "TND": 3}
EXP |= {
    c: 0
    for c in [
        "BIF",
        "CLP",
        "DJF",
        "GNF",
        "ISK",
        "JPY",
        "KMF",
        "KRW",
        "PYG",
        "RWF",
        "UGX",
        "UYI",
        "VND",
        "VUV",
        "XAF",
        "XOF",
        "XPF",
    ]
}


def us(text: str) -> int:
    t = datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    return (t - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


def fmt(micros: int) -> str:
    t = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=micros)
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def dtext(d: Decimal) -> str:  # §6.4
    return f"{d.normalize():f}"


def half_even(d: Decimal) -> int:
    return int(d.to_integral_value(rounding=ROUND_HALF_EVEN))


def bounds(label: str, zone: str) -> tuple[int, int]:  # §3
    parts = label.split("-")
    if len(parts) == 3:
        first = date(int(parts[0]), int(parts[1]), int(parts[2]))
        after = first + timedelta(days=1)
    elif parts[1].startswith("W"):
        first = date.fromisocalendar(int(parts[0]), int(parts[1][1:]), 1)
        after = first + timedelta(days=7)
    else:
        first = date(int(parts[0]), int(parts[1]), 1)
        after = date(first.year + first.month // 12, first.month % 12 + 1, 1)
    tz = ZoneInfo(zone)
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    start = datetime(first.year, first.month, first.day, tzinfo=tz)
    end = datetime(after.year, after.month, after.day, tzinfo=tz)
    return (start - epoch) // timedelta(microseconds=1), (end - epoch) // timedelta(microseconds=1)


def jcs(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def merkle_root(leaves: list[bytes]) -> bytes:
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaves[0]
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return hashlib.sha256(b"\x01" + merkle_root(leaves[:k]) + merkle_root(leaves[k:])).digest()


def compute(entries: list[dict], run_id: str, approvals: dict, leaves: list[bytes]) -> dict:
    _seq, meta = approvals[run_id]
    cut = meta["cut"]["tree_size"]
    root = merkle_root(leaves[:cut]).hex()
    assert root == meta["cut"]["root"], "the root at the cut is not the approval's"
    full = _full(entries, run_id, meta, root)
    prev = None
    if meta["supersedes"] is not None:
        p_id = meta["supersedes"]
        p_seq, p_meta = approvals[p_id]
        pf = _full(entries, p_id, p_meta, merkle_root(leaves[: p_meta["cut"]["tree_size"]]).hex())
        prev = {
            "run": p_id,
            "approved_seq": p_seq,
            "positions": pf["positions"],
            "flows": pf["flows"],
        }
    doc = full
    doc["revision"] = meta["revision"]
    doc["supersedes"] = prev

    def pos_map(rows: list[dict]) -> dict:
        return {(r["party"], r["currency"]): r["net_minor"] for r in rows}

    def flow_map(rows: list[dict]) -> dict:
        out = {}
        for r in rows:
            lo, hi = sorted((r["payer"], r["payee"]))
            out[(lo, hi, r["currency"])] = r["amount_minor"] * (1 if r["payer"] == lo else -1)
        return out

    now_p, before_p = pos_map(doc["positions"]), pos_map(prev["positions"]) if prev else {}
    doc["position_changes"] = [
        {"party": k[0], "currency": k[1], "net_minor": now_p.get(k, 0) - before_p.get(k, 0)}
        for k in sorted(set(now_p) | set(before_p))
        if now_p.get(k, 0) != before_p.get(k, 0)
    ]
    now_f, before_f = flow_map(doc["flows"]), flow_map(prev["flows"]) if prev else {}
    diff = {k: now_f.get(k, 0) - before_f.get(k, 0) for k in set(now_f) | set(before_f)}
    directed = sorted(
        ((lo, hi, c) if v > 0 else (hi, lo, c), abs(v)) for (lo, hi, c), v in diff.items() if v
    )
    doc["payments"] = [
        {
            "end_to_end_id": f"{run_id}-{n:05d}",
            "payer": a,
            "payee": b,
            "currency": c,
            "amount_minor": v,
        }
        for n, ((a, b, c), v) in enumerate(directed, start=1)
    ]
    net: dict[str, int] = {}
    for p in doc["payments"]:
        net[p["currency"]] = net.get(p["currency"], 0) + p["amount_minor"]
    doc["net_minor"] = dict(sorted(net.items()))
    assert hashlib.sha256(jcs(doc)).hexdigest() == meta["run_sha256"], "run_sha256 differs"
    return doc


def _full(entries: list[dict], run_id: str, meta: dict, root: str) -> dict:
    start, end, cut, zone = (
        meta["start_seq"],
        meta["end_seq"],
        meta["cut"]["tree_size"],
        meta["timezone"],
    )
    cur, terms, fx, origin, times = {}, {}, {}, {}, []
    for e in entries[:cut]:  # §2
        k, m = e["kind"], e["meta"]
        times.append(us(e["time"]))
        for i, p in enumerate(e["postings"]):
            if "lot" in p and p["lot"]["amount"]:
                origin[f"{e['seq']}:{i}"] = p["lot"]["origin"]
        if k == "partner_onboarded":
            cur[m["partner"]] = m["settlement_currency"]
        elif k == "partner_terms":
            terms.setdefault(m["partner"], []).append(
                (us(m["effective_from"]), m["version"], m["terms"])
            )
        elif k == "fx_rate":
            fx[(m["run"], m["base"], m["quote"])] = Decimal(m["rate"])

    def in_force(partner: str, t: int):  # §4
        found = [v for v in terms.get(partner, []) if v[0] <= t]
        return max(found, key=lambda v: (v[0], v[1])) if found else None

    keys: dict = {}

    def add(payer, payee, reason, rate, c, seq, pts, ver):
        if rate == 0:
            return
        b = keys.setdefault((payer, payee, reason, rate.normalize(), c), [0, set(), set()])
        b[0] += pts
        b[1].add(seq)
        b[2].add(ver)

    def lot_points(e):
        out: dict[str, int] = {}
        for p in e["postings"]:
            sign = 1 if p["amount"] < 0 else -1
            for take in p.get("lots", []):
                o = origin[take["lot"]]
                out[o] = out.get(o, 0) + sign * take["amount"]
        return {o: v for o, v in out.items() if v}

    for e in entries[start:end]:  # §5
        k, m, seq = e["kind"], e["meta"], e["seq"]
        t = times[seq]
        if k in ("refund_redemption", "refund_earn") and isinstance(e.get("corrects"), int):
            t = times[e["corrects"]]
        events = []
        if k in ("redeem", "capture", "refund_redemption"):
            events = [("redemption", m["partner"], o, v) for o, v in lot_points(e).items()]
        elif k in ("earn", "bonus") and m.get("points"):
            events = [("issuance", m["partner"], m["partner"], m["points"])]
        elif k == "refund_earn":
            for p in e["postings"]:
                a = p["account"].split(":")
                issuer = (
                    OP
                    if p["account"] == "coalition:issued"
                    else (a[1] if len(a) == 3 and a[0] == "partner" and a[2] == "issued" else None)
                )
                if issuer and p["amount"] > 0:
                    events.append(("issuance", issuer, issuer, -p["amount"]))
        elif k == "expire":
            events = [("expiry", o, o, v) for o, v in lot_points(e).items()]
        for kind, party, org, pts in events:
            if kind != "redemption" and org == OP:
                continue
            _eff, ver, tm = in_force(party, t)
            c = cur[party]
            red = Decimal(tm["redemption_rate_per_point"])
            iss = Decimal(tm["issuance_price_per_point"])
            if kind == "redemption":
                if org != party:
                    add(org, party, "redemption", red, c, seq, pts, (party, ver))
                fee = red * tm["operator_fee_bps"] / Decimal(10000)
                add(party, OP, "operator_fee", fee, c, seq, pts, (party, ver))
            elif kind == "issuance":
                add(party, OP, "issuance", iss, c, seq, pts, (party, ver))
            else:
                add(
                    OP,
                    party,
                    "breakage",
                    iss * Decimal(tm["breakage_share"]),
                    c,
                    seq,
                    pts,
                    (party, ver),
                )

    merged: dict = {}  # §6.1
    for (a, b, r, rate, c), (pts, seqs, vers) in keys.items():
        key, sign = (a, b, r, rate, c), 1
        if (b, a) < (a, b):
            key, sign = (b, a, r, rate, c), -1
        m = merged.setdefault(key, [0, set(), set()])
        m[0] += sign * pts
        m[1] |= seqs
        m[2] |= vers
    lines = []
    for (a, b, r, rate, c), (pts, seqs, vers) in merged.items():
        if pts < 0:
            a, b, pts = b, a, -pts
        if pts:
            lines.append([a, b, r, rate, c, pts, seqs, vers])
    lines.sort(key=lambda x: (x[2], x[4], x[0], x[1], x[3]))  # §6.2
    amounts = [0] * len(lines)
    for group in {(x[2], x[4]) for x in lines}:  # §6.3
        idx = [i for i, x in enumerate(lines) if (x[2], x[4]) == group]
        exact = [lines[i][5] * lines[i][3] for i in idx]
        floors = [int(v.to_integral_value(rounding=ROUND_FLOOR)) for v in exact]
        left = half_even(sum(exact, Decimal(0))) - sum(floors)
        order = sorted(range(len(idx)), key=lambda j: (-(exact[j] - floors[j]), j))
        for j in order[:left]:
            floors[j] += 1
        for j, i in enumerate(idx):
            amounts[i] = floors[j]

    positions: dict = {}
    conversions = []

    def move(p, c, v):
        positions[(p, c)] = positions.get((p, c), 0) + v

    for i, (a, b, _r, _rate, c, _pts, _, _) in enumerate(lines):  # §7
        for party, sign in ((b, 1), (a, -1)):
            own = cur.get(party, c) if party != OP else None
            if own is None or own == c:
                move(party, c, sign * amounts[i])
                continue
            fxr = fx[(run_id, c, own)]
            conv = half_even((amounts[i] * fxr).scaleb(EXP.get(own, 2) - EXP.get(c, 2)))
            conversions.append((party, i, c, own, fxr, amounts[i], conv))
            move(party, own, sign * conv)
            move(OP, own, -sign * conv)
            move(OP, c, sign * amounts[i])
    positions = {k: v for k, v in positions.items() if v}

    mode = meta["mode"]  # §8
    flows: dict = {}

    def owe(payer, payee, c, v):
        lo, hi = sorted((payer, payee))
        flows[(lo, hi, c)] = flows.get((lo, hi, c), 0) + (v if payer == lo else -v)

    if mode == "multilateral":
        for (p, c), v in sorted(positions.items()):
            if p != OP:
                owe(p, OP, c, -v)
    else:
        by_line = {cv[1]: cv for cv in conversions}
        for i, (a, b, _r, _rate, c, *_rest) in enumerate(lines):
            cv = by_line.get(i)
            if cv is None:
                owe(a, b, c, amounts[i])
                continue
            if cv[0] == a:
                owe(a, OP, cv[3], cv[6])
                owe(OP, b, c, amounts[i])
            else:
                owe(a, OP, c, amounts[i])
                owe(OP, b, cv[3], cv[6])
    directed = sorted(
        ((lo, hi, c) if v > 0 else (hi, lo, c), abs(v)) for (lo, hi, c), v in flows.items() if v
    )
    gross: dict[str, int] = {}
    for i, x in enumerate(lines):
        gross[x[4]] = gross.get(x[4], 0) + amounts[i]
    pb = None
    if zone is not None:
        s_us, e_us = bounds(meta["period"], zone)
        pb = {
            "start": fmt(s_us),
            "end": fmt(e_us),
            "timezone": zone,
            "entries_before_start": sum(1 for t in times[start:end] if t < s_us),
        }
    return {
        "run": run_id,
        "period": meta["period"],
        "cut": {
            "start_seq": start,
            "end_seq": end,
            "checkpoint": {"tree_size": cut, "root_hex": root},
        },
        "period_bounds": pb,
        "mode": mode,
        "lines": [
            {
                "line": i,
                "payer": x[0],
                "payee": x[1],
                "reason": x[2],
                "rate_per_point": dtext(x[3]),
                "currency": x[4],
                "points": x[5],
                "amount_minor": amounts[i],
                "entries": len(x[6]),
                "first_seq": min(x[6]),
                "last_seq": max(x[6]),
                "terms_versions": [list(v) for v in sorted(x[7])],
            }
            for i, x in enumerate(lines)
        ],
        "conversions": [
            {
                "party": p,
                "line": i,
                "from": f,
                "to": t,
                "rate": dtext(r),
                "from_minor": a,
                "to_minor": b,
            }
            for p, i, f, t, r, a, b in conversions
        ],
        "positions": [
            {"party": p, "currency": c, "net_minor": v} for (p, c), v in sorted(positions.items())
        ],
        "flows": [
            {"payer": a, "payee": b, "currency": c, "amount_minor": v} for (a, b, c), v in directed
        ],
        "gross_minor": dict(sorted(gross.items())),
    }


def recompute(export: str, run_id: str) -> bytes:
    with open(export, "rb") as f:
        raw = f.read().split(b"\n")[:-1]
    entries = [json.loads(line) for line in raw]
    leaves = [hashlib.sha256(b"\x00" + line).digest() for line in raw]
    approvals = {
        e["meta"]["run"]: (e["seq"], e["meta"])
        for e in entries
        if e["kind"] == "settlement_approved"
    }
    return jcs(compute(entries, run_id, approvals, leaves))


if __name__ == "__main__":
    sys.stdout.buffer.write(recompute(sys.argv[1], sys.argv[2]))
